"""Run ``python -m serving.modelserver`` as a subprocess on free loopback ports (for tests,
benchmarks and other packages' fixtures)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers.processes import stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "serving" / "models.config"
BATCHING_CONFIG = REPO_ROOT / "serving" / "batching.config"
MONITORING_CONFIG = REPO_ROOT / "serving" / "monitoring.config"
START_TIMEOUT_SECONDS = 180.0  # importing TensorFlow on a busy 2-core box can take 30 s


class ModelServerStartError(RuntimeError):
    pass


@dataclass
class ModelServerProcess:
    grpc_port: int
    rest_port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def health_status(target: str, service: str = "", timeout: float = 2.0) -> int | None:
    """The gRPC health status of ``service`` (``health_pb2.HealthCheckResponse`` enum), or None
    when the server does not answer."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return None
    return int(reply.status)


def modelserver_command(
    models_root: Path,
    grpc_port: int,
    rest_port: int,
    *,
    batching: bool = False,
    config_file: Path | None = None,
    poll_seconds: float = 1.0,
    extra_args: Sequence[str] = (),
    module: str = "serving.modelserver",
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        module,
        f"--model_config_file={config_file or DEFAULT_CONFIG}",
        f"--models_root={models_root}",
        "--host=127.0.0.1",
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        f"--file_system_poll_wait_seconds={poll_seconds}",
        f"--monitoring_config_file={MONITORING_CONFIG}",
        "--allow_version_labels_for_unavailable_models",
    ]
    if batching:
        command += ["--enable_batching", f"--batching_parameters_file={BATCHING_CONFIG}"]
    return command + list(extra_args)


@contextmanager
def running_modelserver(
    models_root: Path,
    *,
    batching: bool = False,
    config_file: Path | None = None,
    poll_seconds: float = 1.0,
    extra_args: Sequence[str] = (),
    start_timeout: float = START_TIMEOUT_SECONDS,
    module: str = "serving.modelserver",
) -> Iterator[ModelServerProcess]:
    """Start the server, wait until gRPC health is SERVING, SIGTERM it on exit."""
    grpc_port, rest_port = free_port(), free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="modelserver-log-"))
    log_path = log_dir / "modelserver.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    command = modelserver_command(
        models_root,
        grpc_port,
        rest_port,
        batching=batching,
        config_file=config_file,
        poll_seconds=poll_seconds,
        extra_args=extra_args,
        module=module,
    )
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env
        )
    server = ModelServerProcess(grpc_port, rest_port, process, log_path)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise ModelServerStartError(
                    f"model server exited with {process.returncode}:\n{server.log_tail()}"
                )
            if health_status(server.grpc_target) == health_pb2.HealthCheckResponse.SERVING:
                break
            if time.monotonic() > deadline:
                raise ModelServerStartError(
                    f"model server not SERVING after {start_timeout:.0f} s:\n{server.log_tail()}"
                )
            time.sleep(0.25)
        yield server
    finally:
        stop_modelserver(process)


stop_modelserver = stop_process
