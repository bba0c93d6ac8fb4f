"""serving/gateway/workers.py LengthBody: Content-Length bodies read with few large reads.

In-process: each worker class (sync, gthread, gevent) serves one end of a socketpair in a thread,
as its accept loop would hand it a connection, with a small WSGI app that reads ``wsgi.input``
in various ways (and the gateway app for the body limit); the test is the client.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import select
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson
import pytest
from gunicorn.config import Config
from gunicorn.http import RequestParser
from gunicorn.http.body import Body, ChunkedReader
from gunicorn.workers.gthread import TConn
from werkzeug.wrappers import Request

from serving.gateway import GatewayConfig, create_app, workers

KINDS = ["sync", "gthread", "gevent"]
KEEPALIVE_KINDS = ["gthread", "gevent"]  # gunicorn's sync worker closes after each request
# Random bytes: every byte value, with a newline every 256 bytes or so for readline.
BIG = random.Random(7).randbytes(730_000)
ADDR = ("127.0.0.1", 5)


class Log:
    """gunicorn's logger, recording what the worker logs."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def _record(self, level: str, message: str, *args: Any) -> None:
        self.records.append((level, message % args if args else message))

    def debug(self, message: str, *args: Any) -> None:
        self._record("debug", message, *args)

    def info(self, message: str, *args: Any) -> None:
        self._record("info", message, *args)

    def warning(self, message: str, *args: Any) -> None:
        self._record("warning", message, *args)

    def exception(self, message: str, *args: Any) -> None:
        self._record("exception", message, *args)

    def error(self, message: str, *args: Any) -> None:
        self._record("error", message, *args)

    def access(self, *args: Any) -> None:
        pass

    def problems(self) -> list[tuple[str, str]]:
        return [r for r in self.records if r[0] in ("exception", "error", "warning")]


class Listener:
    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 80)


class LimitedRequest(Request):
    max_content_length = 8 * 1024 * 1024  # as the gateway's MAX_CONTENT_LENGTH


@dataclass
class EchoApp:
    """Reads the body as the path says and answers ``{"reader", "length", "sha256"}``."""

    seen: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        stream = environ["wsgi.input"]
        mode = environ["PATH_INFO"].strip("/")
        pieces: list[bytes] = []
        if mode == "whole":
            pieces = [stream.read()]
        elif mode == "werkzeug":  # how Flask's request.get_data() reads it
            pieces = [LimitedRequest(environ).get_data()]
        elif mode == "pieces":
            while piece := stream.read(1000):
                pieces.append(piece)
        elif mode == "lines":
            while line := stream.readline():
                pieces.append(line)
        elif mode == "iter":
            pieces = list(stream)
        elif mode == "mixed":
            pieces = [stream.readline(), stream.read(5000), stream.readline(100), stream.read(-1)]
        elif mode == "first-line":  # the rest is left for gunicorn to drain
            pieces = [stream.readline()]
        data = b"".join(pieces)
        answer = {
            "reader": type(stream).__name__,
            "length": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        self.seen.append({**answer, "mode": mode, "sizes": [len(p) for p in pieces]})
        body = orjson.dumps(answer)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        start_response("200 OK", headers)
        return [body]


def make_worker(kind: str, app: Callable) -> Any:
    cls = {
        "sync": workers.SyncWorker,
        "gthread": workers.ThreadWorker,
        "gevent": workers.GeventWorker,
    }[kind]
    worker = cls(1, os.getpid(), [], None, 30, Config(), Log())
    worker.tmp.close()  # the heartbeat file is the arbiter's business
    worker.wsgi = app
    worker.stalled = False
    return worker


def _serve_gthread(worker: Any, sock: socket.socket) -> None:
    conn = TConn(worker.cfg, sock, ADDR, Listener().getsockname())
    keepalive = True
    while keepalive:
        conn.init()  # as gthread's enqueue_req: a blocking socket while a request is handled
        keepalive, conn = worker.handle(conn)
        # gthread then waits for the socket to be readable before it parses the next request:
        # a request already taken off the socket into gunicorn's buffer would wait in vain.
        if keepalive and not select.select([conn.sock], [], [], 5.0)[0]:
            worker.stalled = True
            break
    conn.close()


def serve(worker: Any, kind: str) -> tuple[socket.socket, threading.Thread]:
    """The client end of a connection ``worker`` serves in a thread until it closes."""
    server, client = socket.socketpair()
    if kind == "gthread":
        target, args = _serve_gthread, (worker, server)
    else:
        target, args = worker.handle, (Listener(), server, ADDR)
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return client, thread


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


def read_answer(stream: BinaryIO) -> Answer:
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = stream.read(int(headers["content-length"]))
    return Answer(int(status_line.split()[1]), headers, body)


def send(sock: socket.socket, data: bytes) -> None:
    # The worker may answer and close before reading everything (a 413).
    with contextlib.suppress(OSError):
        sock.sendall(data)


def post(path: str, body: bytes, *extra_headers: str) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{header}\r\n" for header in extra_headers)
    return head.encode("latin-1") + b"\r\n" + body


def exchange(worker: Any, kind: str, data: bytes, answers: int) -> list[Answer]:
    """Sends ``data`` on a new connection, reads ``answers`` answers, closes, and checks the
    worker finished the connection without a problem logged."""
    client, thread = serve(worker, kind)
    with client, client.makefile("rb") as stream:
        sender = threading.Thread(target=send, args=(client, data), daemon=True)
        sender.start()
        replies = [read_answer(stream) for _ in range(answers)]
        sender.join(10)
        client.shutdown(socket.SHUT_WR)
        thread.join(10)
    assert not thread.is_alive(), "the worker still holds the connection"
    assert not worker.stalled, "the next request was not left on the socket"
    assert worker.log.problems() == []
    return replies


def digest(data: bytes) -> dict[str, Any]:
    return {"reader": "LengthBody", "length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# --- through the workers


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["whole", "werkzeug"])
def test_big_body_is_read_whole_and_intact(kind: str, mode: str):
    app = EchoApp()
    [reply] = exchange(make_worker(kind, app), kind, post(f"/{mode}", BIG, "Connection: close"), 1)
    assert reply.status == 200
    assert reply.json == digest(BIG)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["pieces", "lines", "iter", "mixed"])
def test_big_body_read_in_pieces(kind: str, mode: str):
    app = EchoApp()
    [reply] = exchange(make_worker(kind, app), kind, post(f"/{mode}", BIG, "Connection: close"), 1)
    assert reply.json == digest(BIG)
    sizes = app.seen[0]["sizes"]
    if mode == "pieces":  # read(n) gives n bytes until the body ends
        assert set(sizes) == {1000} and len(sizes) == len(BIG) // 1000  # 730 x 1000
    if mode in ("lines", "iter"):
        *lines, last = BIG.split(b"\n")
        assert sizes == [len(line) + 1 for line in lines] + ([len(last)] if last else [])
    if mode == "mixed":
        first = BIG.index(b"\n") + 1
        third = BIG.index(b"\n", first + 5000) + 1 - (first + 5000)
        assert sizes[:3] == [first, 5000, min(100, third)]


@pytest.mark.parametrize("kind", KEEPALIVE_KINDS)
@pytest.mark.parametrize("mode", ["whole", "first-line", "none"])
def test_keep_alive_after_a_big_body(kind: str, mode: str):
    # "first-line" and "none" leave (most of) the first body to gunicorn's drain.
    app = EchoApp()
    worker = make_worker(kind, app)
    client, thread = serve(worker, kind)
    with client, client.makefile("rb") as stream:
        sender = threading.Thread(target=send, args=(client, post(f"/{mode}", BIG)))
        sender.start()
        first = read_answer(stream)
        sender.join(10)
        client.sendall(post("/whole", b"second body"))
        second = read_answer(stream)
        client.shutdown(socket.SHUT_WR)
        thread.join(10)
    assert not thread.is_alive() and not worker.stalled
    assert first.status == second.status == 200
    if mode == "whole":
        assert first.json == digest(BIG)
    assert second.json == digest(b"second body")
    assert worker.log.problems() == []


@pytest.mark.parametrize("kind", KEEPALIVE_KINDS)
def test_pipelined_requests_after_a_big_body(kind: str):
    app = EchoApp()
    data = post("/whole", BIG) + post("/pieces", b"second body") + post("/none", BIG[:20_000])
    replies = exchange(make_worker(kind, app), kind, data, 3)
    assert [reply.json for reply in replies] == [
        digest(BIG),
        digest(b"second body"),
        digest(b""),
    ]


def test_pipelined_requests_already_in_gunicorns_buffer():
    # Small bodies: gunicorn's first recv takes all three requests; each body must take only
    # its own bytes from the unreader's buffer. (gevent: gthread waits for the socket to be
    # readable between requests, even in stock gunicorn.)
    app = EchoApp()
    data = post("/whole", b"one\n") + post("/lines", b"two\nlines\n") + post("/whole", b"3")
    replies = exchange(make_worker("gevent", app), "gevent", data, 3)
    assert [reply.json for reply in replies] == [
        digest(b"one\n"),
        digest(b"two\nlines\n"),
        digest(b"3"),
    ]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["whole", "werkzeug", "pieces"])
def test_a_body_shorter_than_its_content_length_then_close(kind: str, mode: str):
    app = EchoApp()
    worker = make_worker(kind, app)
    sent = BIG[:300_000]
    client, thread = serve(worker, kind)
    with client, client.makefile("rb") as stream:
        head = f"POST /{mode} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(BIG)}\r\n\r\n"
        sender = threading.Thread(target=send, args=(client, head.encode() + sent))
        sender.start()
        sender.join(10)
        client.shutdown(socket.SHUT_WR)  # the client is gone; it still reads the answer
        reply = read_answer(stream)
        thread.join(10)
    assert not thread.is_alive(), "the worker still waits for the missing bytes"
    assert reply.status == 200 and reply.json == digest(sent)  # a short body, as gunicorn's own
    assert worker.log.problems() == []
    # The same worker serves the next connection.
    [again] = exchange(worker, kind, post("/whole", b"next", "Connection: close"), 1)
    assert again.json == digest(b"next")


@pytest.fixture(scope="module")
def gateway_app() -> Any:
    config = GatewayConfig(
        model_server_grpc="127.0.0.1:1", model_cards_dir="/nonexistent", max_body_bytes=100_000
    )
    return create_app(config)


def _chunked(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
    head += "Content-Type: application/json\r\n\r\n"
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 8192]), body[i : i + 8192])
        for i in range(0, len(body), 8192)
    )
    return head.encode() + chunks + b"0\r\n\r\n"


@pytest.mark.parametrize("kind", KINDS)
def test_body_limit_still_413_with_the_new_reader(kind: str, gateway_app: Any):
    worker = make_worker(kind, gateway_app)
    json = "Content-Type: application/json"
    close = "Connection: close"
    # Under the limit: read whole (a cut body would be invalid JSON, not "no instances").
    fits = b'{"instances": []' + b" " * 90_000 + b"}"
    [reply] = exchange(worker, kind, post("/predict", fits, json, close), 1)
    assert reply.status == 400 and reply.json["error"]["code"] == "empty_instances"
    # Over it, by Content-Length (werkzeug, before reading) and chunked (security.py's read).
    for request in (post("/predict", BIG, json, close), _chunked("/predict", BIG)):
        [reply] = exchange(worker, kind, request, 1)
        assert reply.status == 413 and reply.json["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("kind", KEEPALIVE_KINDS)
def test_an_unread_body_past_the_limit_is_drained_before_the_next_request(
    kind: str, gateway_app: Any
):
    worker = make_worker(kind, gateway_app)
    data = post("/predict", BIG, "Content-Type: application/json")
    data += b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    too_large, healthz = exchange(worker, kind, data, 2)
    assert too_large.status == 413 and healthz.status == 200


# --- the reader itself


def parsed(data: bytes) -> tuple[Any, socket.socket, RequestParser]:
    server, client = socket.socketpair()
    threading.Thread(target=send, args=(client, data), daemon=True).start()
    parser = RequestParser(Config(), server, ADDR)
    return next(parser), client, parser


@pytest.fixture
def cleanup() -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


def test_bytes_gunicorn_already_read_are_kept_and_counted(cleanup):
    # gunicorn's Body has read (and buffered) past what it returned: the new reader starts
    # from there, and leaves the next request to the parser.
    req, client, parser = parsed(post("/", BIG) + post("/next", b"x"))
    cleanup += [client, parser.unreader.sock]
    length_reader = req.body.reader
    start = req.body.read(100)
    assert req.body.buf.tell() > 0  # Body's own look-ahead
    workers.use_length_body(req)
    assert isinstance(req.body, workers.LengthBody)
    assert start + req.body.read() == BIG
    assert length_reader.length == 0 and req.body.read() == b""
    following = next(parser)
    assert following.path == "/next"


def test_a_body_left_unread_is_drained_by_gunicorn(cleanup):
    req, client, parser = parsed(post("/", BIG) + post("/next", b"x"))
    cleanup += [client, parser.unreader.sock]
    workers.use_length_body(req)
    assert req.body.readline() == BIG[: BIG.index(b"\n") + 1]
    following = next(parser)  # drains the rest through req.body
    assert following.path == "/next"
    workers.use_length_body(following)
    assert following.body.read() == b"x"


def test_chunked_and_empty_bodies_keep_gunicorns_reader(cleanup):
    chunked, client, parser = parsed(_chunked("/", b"abc"))
    cleanup += [client, parser.unreader.sock]
    workers.use_length_body(chunked)
    assert type(chunked.body) is Body and isinstance(chunked.body.reader, ChunkedReader)
    empty, client, parser = parsed(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    cleanup += [client, parser.unreader.sock]
    workers.use_length_body(empty)
    assert type(empty.body) is Body


def test_size_arguments_as_gunicorns_body(cleanup):
    req, client, parser = parsed(post("/", b"line one\nline two\nrest"))
    cleanup += [client, parser.unreader.sock]
    workers.use_length_body(req)
    body = req.body
    assert body.read(0) == b"" and body.readline(0) == b""
    assert body.readline(4) == b"line"
    assert body.readline() == b" one\n"
    with pytest.raises(TypeError):
        body.read(1.5)
    buffer = bytearray(4)
    assert body.readinto(buffer) == 4 and buffer == b"line"
    assert body.readlines() == [b" two\n", b"rest"]
    assert body.read(None) == b"" and body.readline() == b""


def test_merged_writes_flushes_a_held_head_before_recv_into():
    # The gevent worker's socket: a response head must leave before the body read waits.
    server, client = socket.socketpair()
    with server, client:
        merged = workers.MergedWrites(server)
        merged.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        client.sendall(b"body")
        buffer = bytearray(4)
        assert merged.recv_into(buffer) == 4 and buffer == b"body"
        assert client.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
