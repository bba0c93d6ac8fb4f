"""Run the gateway under gunicorn on a free loopback port (for tests, benchmarks, load tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.modelserver_process import free_port
from tests.helpers.processes import stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]
GUNICORN_CONF = REPO_ROOT / "serving" / "gateway" / "gunicorn.conf.py"
START_TIMEOUT_SECONDS = 60.0


class GatewayStartError(RuntimeError):
    pass


@dataclass
class GatewayProcess:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1.0) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_gateway(
    grpc_target: str,
    models_root: Path,
    *,
    env: Mapping[str, str] | None = None,
    workers: int = 2,
    start_timeout: float = START_TIMEOUT_SECONDS,
) -> Iterator[GatewayProcess]:
    """gunicorn + the gateway app on 127.0.0.1:<free port>; waits for /healthz, SIGTERM on exit.

    ``env`` adds/overrides environment variables (e.g. ``GATEWAY_MAX_INSTANCES``).
    """
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="gateway-log-"))
    log_path = log_dir / "gateway.log"
    environment = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "GATEWAY_BIND": f"127.0.0.1:{port}",
        "GATEWAY_WORKERS": str(workers),
        "MODEL_SERVER_GRPC": grpc_target,
        "MODEL_CARDS_DIR": str(models_root),
        **(env or {}),
    }
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)  # gunicorn.conf.py makes a fresh one
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(GUNICORN_CONF),
        "serving.gateway:create_app()",
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=environment
        )
    gateway = GatewayProcess(port, process, log_path)
    try:
        deadline = time.monotonic() + start_timeout
        while not _healthy(gateway.url):
            if process.poll() is not None:
                raise GatewayStartError(
                    f"gateway exited with {process.returncode}:\n{gateway.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise GatewayStartError(
                    f"gateway not healthy after {start_timeout:.0f} s:\n{gateway.log_tail()}"
                )
            time.sleep(0.1)
        yield gateway
    finally:
        stop_gateway(process)


stop_gateway = stop_process
