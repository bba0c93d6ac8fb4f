"""Requests gunicorn refuses before the app runs get the gateway's JSON error shape.

Raw bytes over a socket (no client library would send them) to the session gateway, which runs
the default worker class (gevent), and to one gateway per other worker class (gthread, sync).
The worker classes themselves, gunicorn.conf.py's mapping and its gevent hook are checked
in-process.
"""

from __future__ import annotations

import gc
import http.client
import runpy
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from gunicorn.config import Config
from gunicorn.workers.ggevent import GeventWorker as StockGeventWorker
from gunicorn.workers.gthread import ThreadWorker as StockThreadWorker
from gunicorn.workers.sync import SyncWorker as StockSyncWorker

from serving.gateway import workers
from tests.helpers.gateway_process import GUNICORN_CONF, GatewayProcess, running_gateway
from tests.helpers.modelserver_process import ModelServerProcess

LONG_LINE = b"GET /healthz?q=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
MANY_HEADERS = (
    b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
    + b"".join(b"X-Field-%d: v\r\n" % i for i in range(120))
    + b"\r\n"
)
LONG_HEADER = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n"
# No spaces: not a request line at all; long, so the quoted copy in the message is cut short.
MALFORMED_LINE = b"X" * 3000 + b"\r\nHost: t\r\n\r\n"
BAD_HEADER_NAME = b"GET /healthz HTTP/1.1\r\nHost: t\r\nBad Name: v\r\n\r\n"
BAD_VERSION = b"GET /healthz HTTP/9.9\r\nHost: t\r\n\r\n"
LENGTH_AND_CHUNKED = (
    b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
)
# Decoded by gunicorn only when the app reads the body: errors.py answers it.
BAD_CHUNK = (
    b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nZZZ\r\n{}\r\n0\r\n\r\n"
)


@dataclass
class RawReply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def send_raw(port: int, data: bytes) -> RawReply:
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return RawReply(response.status, response.headers, response.read())


def assert_json_error(reply: RawReply, status: int, code: str, *fragments: str) -> str:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"] == "application/json", reply.body
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    body = orjson.loads(reply.body)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    message = body["error"]["message"]
    for fragment in fragments:
        assert fragment in message
    return message


# (request, status, code, fragments the message must contain), as gunicorn's limits default.
CASES = {
    "request line too long": (LONG_LINE, 400, "request_line_too_long", ["request line", "4094"]),
    "too many headers": (MANY_HEADERS, 431, "headers_too_large", ["header fields", "100"]),
    "header too long": (LONG_HEADER, 431, "headers_too_large", ["header field", "8190 bytes"]),
    "malformed request line": (MALFORMED_LINE, 400, "invalid_request_line", ["request line"]),
    "invalid header name": (BAD_HEADER_NAME, 400, "invalid_header", ["header name", "Bad Name"]),
    "unsupported HTTP version": (BAD_VERSION, 400, "invalid_http_version", ["HTTP/9.9"]),
    "Content-Length and chunked": (
        LENGTH_AND_CHUNKED,
        400,
        "invalid_header",
        ["conflicting header", "CONTENT-LENGTH"],
    ),
    "invalid chunk size": (BAD_CHUNK, 400, "invalid_chunked_encoding", ["chunk size"]),
}


@pytest.mark.parametrize("case", CASES)
def test_default_worker_answers_refused_requests_in_json(gateway: GatewayProcess, case: str):
    request, status, code, fragments = CASES[case]
    message = assert_json_error(send_raw(gateway.port, request), status, code, *fragments)
    assert len(message) < 200  # never the whole request echoed back
    if case != "invalid chunk size":  # the others never reach the app
        assert "Invalid request from ip=127.0.0.1" in gateway.log_text()


def test_default_worker_class_is_the_json_gevent_worker(gateway: GatewayProcess):
    send_raw(gateway.port, MALFORMED_LINE)
    assert "Using worker: serving.gateway.workers.GeventWorker" in gateway.log_text()
    assert send_raw(gateway.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").status == 200


@pytest.fixture(scope="module", params=["gthread", "sync"])
def other_worker_gateway(
    request: pytest.FixtureRequest,
    gateway_modelserver: ModelServerProcess,
    gateway_models: Path,
) -> Iterator[tuple[str, GatewayProcess]]:
    # GATEWAY_THREADS=1: with more threads gunicorn (and our mapping) runs "sync" as gthread.
    env = {"GATEWAY_WORKER_CLASS": request.param, "GATEWAY_THREADS": "1"}
    with running_gateway(
        gateway_modelserver.grpc_target, gateway_models, env=env, workers=1
    ) as process:
        yield request.param, process


@pytest.mark.slow
def test_other_worker_classes_answer_refused_requests_in_json(
    other_worker_gateway: tuple[str, GatewayProcess],
):
    name, gateway = other_worker_gateway
    expected = {"gthread": "ThreadWorker", "sync": "SyncWorker"}[name]
    for case in ("too many headers", "malformed request line"):
        request, status, code, fragments = CASES[case]
        assert_json_error(send_raw(gateway.port, request), status, code, *fragments)
    assert f"Using worker: serving.gateway.workers.{expected}" in gateway.log_text()


# --- in-process: gunicorn.conf.py, the classes, the 500 answer


def load_conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> dict[str, Any]:
    # An existing metrics dir: reading the config then creates no directory of its own.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for name in ("GATEWAY_WORKER_CLASS", "GATEWAY_THREADS", "GATEWAY_GC_FREEZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(GUNICORN_CONF))


@pytest.mark.parametrize(
    ("env", "stock"),
    [
        ({}, StockGeventWorker),
        ({"GATEWAY_WORKER_CLASS": "gevent"}, StockGeventWorker),
        ({"GATEWAY_WORKER_CLASS": "gthread"}, StockThreadWorker),
        ({"GATEWAY_WORKER_CLASS": "sync", "GATEWAY_THREADS": "1"}, StockSyncWorker),
        ({"GATEWAY_WORKER_CLASS": "sync"}, StockThreadWorker),  # gunicorn's own swap, kept
    ],
)
def test_worker_class_names_load_json_workers(monkeypatch, tmp_path, env, stock):
    conf = load_conf(monkeypatch, tmp_path, **env)
    config = Config()
    config.set("worker_class", conf["worker_class"])
    config.set("threads", conf["threads"])
    loaded = config.worker_class  # what gunicorn's arbiter will fork
    assert issubclass(loaded, workers.JsonErrorsMixin) and issubclass(loaded, stock)


def test_dotted_worker_class_passes_through(monkeypatch, tmp_path):
    path = "gunicorn.workers.gthread.ThreadWorker"
    assert load_conf(monkeypatch, tmp_path, GATEWAY_WORKER_CLASS=path)["worker_class"] == path


@pytest.mark.parametrize(("name", "switched"), [("gevent", True), ("gthread", False)])
def test_post_worker_init_switches_grpc_to_gevent(monkeypatch, tmp_path, name, switched):
    import grpc.experimental.gevent

    calls = []
    monkeypatch.setattr(grpc.experimental.gevent, "init_gevent", lambda: calls.append(1))
    conf = load_conf(monkeypatch, tmp_path, GATEWAY_WORKER_CLASS=name)
    conf["post_worker_init"](None)
    assert calls == ([1] if switched else [])


@pytest.mark.parametrize(("env", "frozen"), [({}, True), ({"GATEWAY_GC_FREEZE": "0"}, False)])
def test_post_worker_init_freezes_what_the_loaded_app_holds(monkeypatch, tmp_path, env, frozen):
    conf = load_conf(monkeypatch, tmp_path, GATEWAY_WORKER_CLASS="gthread", **env)
    gc.unfreeze()
    try:
        conf["post_worker_init"](None)
        # Frozen objects are out of every later collection's reach (no multi-ms full passes).
        assert (gc.get_freeze_count() > 0) is frozen
    finally:
        gc.unfreeze()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        # The app's own variables (config.py), checked in the master: one line, not a worker
        # traceback and "Worker failed to boot".
        ({"GATEWAY_TIMEOUT_SECONDS": "abc"}, "GATEWAY_TIMEOUT_SECONDS must be a number"),
        ({"MODEL_SERVER_GRPC": "localhost:70000"}, "MODEL_SERVER_GRPC must be HOST:PORT"),
        # gunicorn's: refused instead of gunicorn's multi-line errors, tracebacks, a master
        # with no workers, or silent clipping / defaults.
        ({"GATEWAY_WORKERS": "0"}, "GATEWAY_WORKERS must be >= 1, got 0"),
        ({"GATEWAY_WORKERS": "-1"}, "GATEWAY_WORKERS must be >= 1"),
        ({"GATEWAY_THREADS": "0"}, "GATEWAY_THREADS must be >= 1"),
        ({"GATEWAY_WORKER_CONNECTIONS": "0"}, "GATEWAY_WORKER_CONNECTIONS must be >= 1"),
        ({"GATEWAY_KEEPALIVE": "-1"}, "GATEWAY_KEEPALIVE must be >= 0"),
        ({"GATEWAY_GC_FREEZE": "yes"}, "GATEWAY_GC_FREEZE must be an integer"),
        ({"GATEWAY_GC_FREEZE": "2"}, "GATEWAY_GC_FREEZE must be 0..1, got 2"),
        ({"GATEWAY_LIMIT_REQUEST_LINE": "99999"}, "GATEWAY_LIMIT_REQUEST_LINE must be 0..8190"),
        (
            {"GATEWAY_LIMIT_REQUEST_FIELDS": "40000"},
            "GATEWAY_LIMIT_REQUEST_FIELDS must be 0..32768",
        ),
        ({"GATEWAY_WORKER_CLASS": "bogus"}, "GATEWAY_WORKER_CLASS: cannot load worker class"),
        ({"GATEWAY_LOG_LEVEL": "loud"}, "GATEWAY_LOG_LEVEL must be debug, info"),
        ({"GATEWAY_BIND": "127.0.0.1:70000"}, "GATEWAY_BIND: expected HOST:PORT"),
        ({"GATEWAY_BIND": "host:http"}, "GATEWAY_BIND: expected HOST:PORT"),
        ({"GATEWAY_ERROR_LOG": "/nonexistent/dir/log"}, "GATEWAY_ERROR_LOG: cannot write"),
        ({"GATEWAY_ACCESS_LOG": "/nonexistent/dir/log"}, "GATEWAY_ACCESS_LOG: cannot write"),
    ],
)
def test_gunicorn_conf_refuses_bad_settings_in_one_line(monkeypatch, tmp_path, env, message):
    with pytest.raises(SystemExit) as info:
        load_conf(monkeypatch, tmp_path, **env)
    text = str(info.value.code)
    assert message in text and "\n" not in text, text


def test_gunicorn_conf_refuses_an_unusable_metrics_dir(monkeypatch, tmp_path):
    file = tmp_path / "a-file"
    file.write_text("")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(file / "metrics"))
    with pytest.raises(SystemExit, match="PROMETHEUS_MULTIPROC_DIR: cannot create"):
        runpy.run_path(str(GUNICORN_CONF))


def test_gunicorn_stops_with_one_line_on_a_bad_app_setting(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_BIND": "127.0.0.1:0", "GATEWAY_RETRIES": "-1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(GUNICORN_CONF),
            "serving.gateway:create_app()",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=GUNICORN_CONF.parents[2],
    )
    assert done.returncode != 0
    assert done.stderr == "GATEWAY_RETRIES must be >= 0, got -1\n"


def test_master_imports_neither_the_app_nor_gevent():
    code = (
        "import sys; from serving.gateway import workers; workers.SyncWorker; "
        "workers.ThreadWorker; "
        "print(sorted(m for m in ('flask', 'grpc', 'prometheus_client', 'gevent', 'numpy') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class RecordingLog:
    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def warning(self, message: str, *args: Any) -> None:
        self.records.append(("warning", message % args))

    def exception(self, message: str, *args: Any) -> None:
        self.records.append(("exception", message % args))

    def debug(self, message: str, *args: Any) -> None:
        self.records.append(("debug", message % args))

    def access(self, *args: Any) -> None:
        self.records.append(("access", ""))


def test_unexpected_error_is_a_json_500_without_details():
    worker = object.__new__(workers.SyncWorker)  # handle_error needs only cfg and log
    worker.cfg = Config()
    worker.log = RecordingLog()
    server_side, client_side = socket.socketpair()
    with server_side, client_side:
        worker.handle_error(None, server_side, ("127.0.0.1", 5), RuntimeError("secret detail"))
        server_side.close()
        response = http.client.HTTPResponse(client_side)
        response.begin()
        reply = RawReply(response.status, response.headers, response.read())
    message = assert_json_error(reply, 500, "internal", "logged")
    assert "secret" not in message and b"Traceback" not in reply.body
    assert worker.log.records == [("exception", "Error handling request (no URI read)")]
