"""The processes a scenario runs: a restartable model server on fixed (free) ports, gateways
via ``tests.helpers.gateway_process``, a private models dir and model config the server polls."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from grpc_health.v1 import health_pb2

from tests.helpers.modelserver_process import (
    REPO_ROOT,
    START_TIMEOUT_SECONDS,
    free_port,
    health_status,
    modelserver_command,
)

MODEL_NAMES = ("fashion_mnist", "housing")
SERVING = health_pb2.HealthCheckResponse.SERVING
#: How often the model server re-reads its base paths and its model config in the scenarios.
POLL_SECONDS = 0.5

#: ``new_version(models_dir, name, version) -> version dir``: how a scenario exports a version.
VersionMaker = Callable[[Path, str, int], Path]


def model_config_text(stable: int = 1, canary: int = 2) -> str:
    """serving/models.config with the labels moved (the file the scenario server polls)."""
    text = (REPO_ROOT / "serving" / "models.config").read_text()
    text = re.sub(r'(key: "stable" value: )\d+', rf"\g<1>{stable}", text)
    return re.sub(r'(key: "canary" value: )\d+', rf"\g<1>{canary}", text)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one rename, so the polling server never reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def prepare_models_dir(source: Path, workdir: Path) -> Path:
    """``workdir/models`` with the newest version of each model in ``source``, as version 1."""
    target = workdir / "models"
    for name in MODEL_NAMES:
        versions = sorted(
            int(p.name) for p in (source / name).iterdir() if p.is_dir() and p.name.isdigit()
        )
        if not versions:
            raise FileNotFoundError(f"{source / name} has no exported version")
        shutil.copytree(source / name / str(versions[-1]), target / name / "1")
    return target


def remove_version(models_dir: Path, name: str, version: int) -> None:
    """Take a version away the way an operator would: rename (atomic) then delete."""
    path = models_dir / name / str(version)
    hidden = path.with_name(f".removed-{version}")
    os.replace(path, hidden)
    shutil.rmtree(hidden)


class ModelServer:
    """``python -m serving.modelserver`` on ports chosen once, so it can be restarted in place."""

    def __init__(
        self, models_dir: Path, config_file: Path, *, batching: bool = True, label: str = "ms"
    ) -> None:
        self.models_dir = models_dir
        self.config_file = config_file
        self.batching = batching
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.log_path = Path(tempfile.mkdtemp(prefix=f"reliability-{label}-")) / "modelserver.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, *, wait: bool = True) -> ModelServer:
        command = modelserver_command(
            self.models_dir,
            self.grpc_port,
            self.rest_port,
            batching=self.batching,
            config_file=self.config_file,
            poll_seconds=POLL_SECONDS,
            extra_args=[f"--model_config_file_poll_wait_seconds={POLL_SECONDS}"],
        )
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env
            )
        if wait:
            self.wait_serving()
        return self

    def wait_serving(self, timeout: float = START_TIMEOUT_SECONDS) -> float:
        """Block until gRPC health says SERVING; returns the monotonic time it did."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"model server exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if health_status(self.target, timeout=1.0) == SERVING:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise RuntimeError(f"model server not SERVING after {timeout:.0f} s")
            time.sleep(0.05)

    def send_signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 40.0) -> int | None:
        """Signal and wait; SIGKILL if it does not exit. Returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its children (gunicorn master + workers)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total
