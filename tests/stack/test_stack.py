"""`python -m serving.stack` (make serve): start, serve, stop cleanly, fail clearly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from serving import stack

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 180.0


@dataclass
class StackRun:
    process: subprocess.Popen[str]
    gateway_port: int
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = START_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the reader thread catch the last lines
                pytest.fail(f"stack exited with {self.process.returncode}:\n{self.output()}")
            time.sleep(0.1)
        pytest.fail(f"no line containing {text!r} within {timeout:.0f} s:\n{self.output()}")

    def child_pids(self) -> tuple[int, int]:
        """(model server, gateway) pids from the line the stack prints after starting them."""
        line = self.wait_for_line("Started model server (pid")
        modelserver = int(line.split("model server (pid ")[1].split(")")[0])
        gateway = int(line.split("gateway (pid ")[1].split(")")[0])
        return modelserver, gateway


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextmanager
def run_stack(models_dir: Path, *extra: str, ports: list[int] | None = None) -> Iterator[StackRun]:
    grpc_port, rest_port, gateway_port = ports or free_ports(3)
    argv = [sys.executable, "-m", "serving.stack", "--models-dir", str(models_dir),
            "--grpc-port", str(grpc_port), "--rest-port", str(rest_port),
            "--gateway-port", str(gateway_port), *extra]  # fmt: skip
    process = subprocess.Popen(
        argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    run = StackRun(process, gateway_port)
    reader = threading.Thread(target=lambda: run.lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        yield run
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # a failed test must not leak servers
            process.wait()


def group_alive(pgid: int) -> bool:
    """The children are session leaders: their group includes gunicorn's workers."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pgid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not group_alive(pgid)


def http(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.slow
def test_stack_serves_then_stops_both_children_on_sigint(models_root: Path) -> None:
    with run_stack(models_root) as run:
        modelserver_pid, gateway_pid = run.child_pids()
        run.wait_for_line("Press Ctrl-C to stop")
        base = f"http://127.0.0.1:{run.gateway_port}"
        status, answer = http(base + "/readyz")
        assert status == 200, answer
        status, answer = http(base + stack.CURL_PATH, {"instances": [[[0] * 28] * 28]})
        assert status == 200, answer
        assert len(answer["predictions"]) == 1
        # Both servers log through the stack, each with its own prefix.
        assert any(line.startswith("modelserver | ") for line in run.lines)
        assert any(line.startswith("gateway") and " | " in line for line in run.lines)

        run.process.send_signal(signal.SIGINT)
        assert run.process.wait(timeout=60) == 0, run.output()
        assert wait_gone(modelserver_pid), "model server still running after the stack exited"
        assert wait_gone(gateway_pid), "gateway (or a worker) still running after the stack exited"


@pytest.mark.slow
def test_stack_stops_the_gateway_and_fails_when_the_model_server_dies(models_root: Path) -> None:
    with run_stack(models_root) as run:
        modelserver_pid, gateway_pid = run.child_pids()
        run.wait_for_line("Press Ctrl-C to stop")
        os.killpg(modelserver_pid, signal.SIGKILL)
        assert run.process.wait(timeout=60) == 1, run.output()
        assert "model server exited unexpectedly" in run.output()
        assert wait_gone(gateway_pid), "gateway still running after the model server died"


def fake_models(root: Path, names: tuple[str, ...] = stack.MODEL_NAMES) -> Path:
    for name in names:
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "saved_model.pb").write_bytes(b"")
    return root


def test_port_in_use_is_one_clear_line_and_nothing_starts(tmp_path: Path) -> None:
    models = fake_models(tmp_path / "models")  # present, so no training; never loaded
    grpc_port, rest_port, gateway_port = free_ports(3)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", gateway_port))
        squatter.listen()
        with run_stack(models, ports=[grpc_port, rest_port, gateway_port]) as run:
            code = run.process.wait(timeout=60)
            time.sleep(0.2)
    assert code == 1
    errors = [line for line in run.lines if line.startswith("error:")]
    assert len(errors) == 1, run.output()
    assert f"port {gateway_port} (gateway)" in errors[0] and "already in use" in errors[0]
    assert not any("Started model server" in line for line in run.lines)


def test_missing_models_are_trained_and_exported_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the model without an exported version is trained and exported (an exported one
    must not get a new version); a trained model.keras skips straight to the export."""
    models = fake_models(tmp_path / "models", names=("housing",))
    (models / "fashion_mnist" / "7").mkdir(parents=True)  # a version dir without a SavedModel
    commands: list[list[str]] = []

    def fake_step(argv: list[str], what: str) -> None:
        commands.append(argv[argv.index("training") + 1 :])
        if "export" in argv:
            name = argv[argv.index("--model") + 1]
            (models / name / "1").mkdir(parents=True, exist_ok=True)
            (models / name / "1" / "saved_model.pb").write_bytes(b"")

    monkeypatch.setattr(stack, "_run_step", fake_step)
    config = stack.parse_args(["--models-dir", str(models), "--artifacts-dir",
                               str(tmp_path / "artifacts")])  # fmt: skip
    said: list[str] = []
    stack.ensure_models(config, said.append)

    assert [c[:3] for c in commands] == [
        ["train", "--model", "fashion_mnist"],
        ["export", "--model", "fashion_mnist"],
    ]
    assert "fashion_mnist" in said[0] and "housing" not in said[0]

    # Second case: the model is trained but not exported -> export only.
    commands.clear()
    (tmp_path / "artifacts" / "housing").mkdir(parents=True)
    (tmp_path / "artifacts" / "housing" / "model.keras").write_bytes(b"")
    for child in (models / "housing").iterdir():
        (child / "saved_model.pb").unlink()
    stack.ensure_models(config, said.append)
    assert [c[:3] for c in commands] == [["export", "--model", "housing"]]


def test_export_that_produces_nothing_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack, "_run_step", lambda argv, what: None)
    config = stack.parse_args(["--models-dir", str(tmp_path / "models")])
    with pytest.raises(stack.StackError, match="still lacks"):
        stack.ensure_models(config, lambda _: None)
