"""`make serve`: the local model server and the gateway in the foreground, as one command.

    python -m serving.stack --models-dir models \
        --grpc-port 8500 --rest-port 8501 --gateway-port 8000

Trains and exports the models first when ``--models-dir`` lacks an exported version of one of
them, then starts ``python -m serving.modelserver`` (batching and monitoring configs) and the
gateway under gunicorn, waits until both are ready (gRPC health SERVING, gateway ``/readyz``
200), prints where they listen and streams their logs with a prefix. Ctrl-C or SIGTERM stops
both (SIGTERM, wait, SIGKILL stragglers) and exits 0; if either dies, the other is stopped and
the exit code is 1. This module is a supervisor: it never imports tensorflow.

The launch helpers (``spawn``, ``modelserver_argv``, ``gunicorn_argv``, ``wait_until_ready``) are
reused by the benchmarks in ``tests/bench``, so there is one way to start these processes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVING_DIR = Path(__file__).resolve().parent
MODEL_NAMES = ("fashion_mnist", "housing")
GATEWAY_APP = "serving.gateway:create_app()"
GUNICORN_CONF = SERVING_DIR / "gateway" / "gunicorn.conf.py"
CURL_PATH = "/predict"  # the gateway's single-image route
METRICS_PATH = "/monitoring/prometheus/metrics"  # serving/monitoring.config's path
SETTLE_SECONDS = 2.0  # every check must pass this long (see wait_until_ready)
STOP_TIMEOUT = 20.0  # seconds between SIGTERM and SIGKILL; gunicorn's graceful timeout is shorter


class StackError(Exception):
    """A problem reported to the user as one line, without a traceback."""


# ---------------------------------------------------------------------------------------------
# Configuration (read once, here)


@dataclass(frozen=True)
class StackConfig:
    models_dir: Path
    artifacts_dir: Path
    host: str
    grpc_port: int
    rest_port: int
    gateway_port: int
    model_config: Path
    batching_config: Path
    monitoring_config: Path
    ready_timeout: float
    python: str = sys.executable


def parse_args(argv: Sequence[str] | None = None) -> StackConfig:
    parser = argparse.ArgumentParser(
        prog="python -m serving.stack",
        description="Run the local model server and the gateway in the foreground (Ctrl-C stops).",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path("models"),
        help="exported models, models/<name>/<version>/ (default: models)",
    )
    parser.add_argument(
        "--artifacts-dir",
        type=Path,
        default=Path("artifacts"),
        help="where training writes model.keras when models are missing (default: artifacts)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address both servers bind to (default: 127.0.0.1; 0.0.0.0 exposes "
        "them to the network)",
    )
    parser.add_argument("--grpc-port", type=int, default=8500, help="model server gRPC (8500)")
    parser.add_argument("--rest-port", type=int, default=8501, help="model server REST (8501)")
    parser.add_argument("--gateway-port", type=int, default=8000, help="gateway HTTP (8000)")
    parser.add_argument("--model-config", type=Path, default=SERVING_DIR / "models.config")
    parser.add_argument("--batching-config", type=Path, default=SERVING_DIR / "batching.config")
    parser.add_argument("--monitoring-config", type=Path, default=SERVING_DIR / "monitoring.config")
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=180.0,
        help="seconds to wait for both servers to be ready (default: 180)",
    )
    args = parser.parse_args(argv)
    ports = {
        "--grpc-port": args.grpc_port,
        "--rest-port": args.rest_port,
        "--gateway-port": args.gateway_port,
    }
    for flag, port in ports.items():
        if not 1 <= port <= 65535:
            parser.error(f"{flag} must be between 1 and 65535, got {port}")
    if len(set(ports.values())) != len(ports):
        parser.error(f"the three ports must differ, got {ports}")
    return StackConfig(
        models_dir=args.models_dir.resolve(),
        artifacts_dir=args.artifacts_dir.resolve(),
        host=args.host,
        grpc_port=args.grpc_port,
        rest_port=args.rest_port,
        gateway_port=args.gateway_port,
        model_config=args.model_config.resolve(),
        batching_config=args.batching_config.resolve(),
        monitoring_config=args.monitoring_config.resolve(),
        ready_timeout=args.ready_timeout,
    )


# ---------------------------------------------------------------------------------------------
# Models on disk


def exported_versions(model_base: Path) -> list[int]:
    """Numeric version directories that hold a SavedModel (what the model server would load)."""
    if not model_base.is_dir():
        return []
    return sorted(
        int(child.name)
        for child in model_base.iterdir()
        if child.name.isdigit() and (child / "saved_model.pb").is_file()
    )


def missing_models(models_dir: Path, names: Sequence[str] = MODEL_NAMES) -> list[str]:
    return [name for name in names if not exported_versions(models_dir / name)]


def ensure_models(config: StackConfig, out: Callable[[str], None]) -> None:
    """Train (unless model.keras is already there) and export the models that are missing."""
    missing = missing_models(config.models_dir)
    if not missing:
        return
    out(
        f"{config.models_dir} has no exported version of {', '.join(missing)}: "
        "training and exporting them with the default settings first."
    )
    for name in missing:
        # One model at a time, so a model that is already exported does not get a new version.
        if (config.artifacts_dir / name / "model.keras").is_file():
            out(f"Found a trained {name} in {config.artifacts_dir}: exporting it only.")
        else:
            out(
                f"Training {name} (full training takes a few minutes on 2 cores; "
                "`make train export` does the same)..."
            )
            _run_step(
                [
                    config.python,
                    "-m",
                    "training",
                    "train",
                    "--model",
                    name,
                    "--artifacts-dir",
                    str(config.artifacts_dir),
                ],
                f"training {name}",
            )
        _run_step(
            [
                config.python,
                "-m",
                "training",
                "export",
                "--model",
                name,
                "--artifacts-dir",
                str(config.artifacts_dir),
                "--models-dir",
                str(config.models_dir),
            ],
            f"exporting {name}",
        )
    still = missing_models(config.models_dir)
    if still:
        raise StackError(f"export finished but {config.models_dir} still lacks {', '.join(still)}")


def _run_step(argv: list[str], what: str) -> None:
    # Foreground, same process group: Ctrl-C reaches the training process too.
    code = subprocess.call(argv, cwd=REPO_ROOT)  # noqa: S603 (our own argv)
    if code != 0:
        raise StackError(f"{what} failed (exit code {code}); see the output above")


# ---------------------------------------------------------------------------------------------
# Ports


def check_ports_free(host: str, ports: Mapping[str, int]) -> None:
    """Fail with one line naming the first port that something else already listens on."""
    for what, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # SO_REUSEADDR like the servers themselves, so TIME_WAIT leftovers do not count.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise StackError(
                    f"port {port} ({what}) on {host} is already in use ({exc.strerror}); "
                    f"stop whatever listens there or choose another port"
                ) from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# Child processes


_print_lock = threading.Lock()


def emit(line: str, stream: IO[str] | None = None) -> None:
    """Write one line atomically (the log threads write concurrently)."""
    with _print_lock:
        target = stream or sys.stdout
        target.write(line if line.endswith("\n") else line + "\n")
        target.flush()


@dataclass
class Child:
    """A server process in its own session, so the terminal's Ctrl-C reaches only us and we
    stop it in order (SIGTERM, then SIGKILL the whole group if it lingers)."""

    name: str
    process: subprocess.Popen[str]
    log_thread: threading.Thread | None = None
    lines: list[str] = field(default_factory=list)  # last lines, for error messages

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait up to ``timeout``, SIGKILL; then reap anything left in its group."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                emit(f"{self.name} did not stop within {timeout:.0f} s: killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()
        # Workers orphaned by a crashed master would keep the port: kill the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.log_thread is not None:
            self.log_thread.join(timeout=5)
        return int(self.process.returncode)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    prefix: str | None = None,
    log_file: IO[str] | None = None,
) -> Child:
    """Start ``argv`` in its own session; stream its output with ``prefix`` or to ``log_file``."""
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(  # noqa: S603 (argv built here, no shell)
        list(argv),
        cwd=REPO_ROOT,
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if log_file is None else log_file,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    child = Child(name=name, process=process)
    if log_file is None:
        label = f"{prefix or name} | "
        child.log_thread = threading.Thread(
            target=_pump, args=(process.stdout, label, child.lines), daemon=True
        )
        child.log_thread.start()
    return child


def _pump(stream: IO[str], label: str, tail: list[str]) -> None:
    for line in stream:
        emit(label + line.rstrip("\n"))
        tail.append(line)
        del tail[:-20]


def modelserver_argv(
    python: str,
    models_dir: Path,
    grpc_port: int,
    rest_port: int,
    *,
    model_config: Path = SERVING_DIR / "models.config",
    batching_config: Path | None = SERVING_DIR / "batching.config",
    monitoring_config: Path | None = SERVING_DIR / "monitoring.config",
    extra: Sequence[str] = (),
) -> list[str]:
    argv = [
        python,
        "-m",
        "serving.modelserver",
        "--model_config_file",
        str(model_config),
        "--models_root",
        str(models_dir),
        "--port",
        str(grpc_port),
        "--rest_api_port",
        str(rest_port),
    ]
    if batching_config is not None:
        argv += ["--enable_batching", "--batching_parameters_file", str(batching_config)]
    if monitoring_config is not None:
        argv += ["--monitoring_config_file", str(monitoring_config)]
    return argv + list(extra)


def gunicorn_argv(python: str, app: str = GATEWAY_APP, conf: Path = GUNICORN_CONF) -> list[str]:
    return [python, "-m", "gunicorn", "-c", str(conf), app]


def gateway_env(host: str, port: int, grpc_target: str, models_dir: Path) -> dict[str, str]:
    return {
        "GATEWAY_BIND": f"{host}:{port}",
        "MODEL_SERVER_GRPC": grpc_target,
        "MODEL_CARDS_DIR": str(models_dir),
    }


def grpc_serving(target: str, timeout: float = 1.0) -> bool:
    """True when the standard gRPC health service answers SERVING for the whole server."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 (loopback URL)
            return 200 <= reply.status < 300
    except (urllib.error.URLError, OSError):
        return False


def wait_until_ready(
    checks: Mapping[str, Callable[[], bool]],
    children: Sequence[Child],
    timeout: float,
    *,
    settle: float = SETTLE_SECONDS,
    stop_requested: Callable[[], bool] = lambda: False,
) -> None:
    """Poll the checks until all of them have passed on every probe for ``settle`` seconds.

    Settling matters for the gateway: each gunicorn worker has its own gRPC channel and
    readiness cache, so the first 200 from /readyz may come from one worker while another
    still reports the model server unreachable (reconnect backoff up to 1 s plus a 1 s
    cache). Fails early if a child exits; returns early if the user asks to stop.
    """
    deadline = time.monotonic() + timeout
    passing_since: float | None = None
    failing: list[str] = list(checks)
    while True:
        for child in children:
            if not child.alive():
                raise StackError(
                    f"{child.name} exited with code {child.process.returncode} while starting"
                    + _tail(child)
                )
        if stop_requested():
            return
        failing = [name for name, check in checks.items() if not check()]
        now = time.monotonic()
        if failing:
            passing_since = None
        elif passing_since is None:
            passing_since = now
        if passing_since is not None and now - passing_since >= settle:
            return
        if now > deadline:
            what = ", ".join(failing) if failing else "readiness kept flapping"
            raise StackError(f"not ready after {timeout:.0f} s: {what} (see the logs above)")
        time.sleep(0.2)


def _tail(child: Child) -> str:
    last = [line.strip() for line in child.lines if line.strip()][-1:]
    return f"; its last line: {last[0]}" if last else ""


# ---------------------------------------------------------------------------------------------
# The foreground command


class _Stop:
    """Set by SIGINT/SIGTERM; the main loop notices within 0.2 s."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, _frame: object) -> None:
        self.signal = signum

    def requested(self) -> bool:
        return self.signal is not None


def banner(config: StackConfig, started: float) -> str:
    host = _client_host(config.host)
    gateway = f"http://{host}:{config.gateway_port}"
    rest = f"http://{host}:{config.rest_port}"
    return "\n".join(
        [
            f"Ready in {time.monotonic() - started:.1f} s.",
            f"  gateway            {gateway}",
            f"  gateway OpenAPI    {gateway}/openapi.json",
            f"  model server REST  {rest}/v1/models/fashion_mnist",
            f"  model server gRPC  {host}:{config.grpc_port}",
            f"  metrics            {rest}{METRICS_PATH}  and  {gateway}/metrics",
            "Try:",
            f"  curl -s {gateway}{CURL_PATH} -H 'Content-Type: application/json' \\",
            '    -d "{\\"instances\\": [$(python3 -c \'print([[0]*28]*28)\')]}"',
            "Press Ctrl-C to stop both.",
        ]
    )


def run(config: StackConfig) -> int:
    ensure_models(config, emit)
    check_ports_free(
        config.host,
        {
            "model server gRPC": config.grpc_port,
            "model server REST": config.rest_port,
            "gateway": config.gateway_port,
        },
    )

    stop = _Stop()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    started = time.monotonic()
    grpc_target = f"{_client_host(config.host)}:{config.grpc_port}"
    children: list[Child] = []
    try:
        children.append(
            spawn(
                "model server",
                modelserver_argv(
                    config.python,
                    config.models_dir,
                    config.grpc_port,
                    config.rest_port,
                    model_config=config.model_config,
                    batching_config=config.batching_config,
                    monitoring_config=config.monitoring_config,
                    extra=["--host", config.host, "--allow_version_labels_for_unavailable_models"],
                ),
                prefix="modelserver",
            )
        )
        children.append(
            spawn(
                "gateway",
                gunicorn_argv(config.python),
                env=gateway_env(config.host, config.gateway_port, grpc_target, config.models_dir),
                prefix="gateway    ",
            )
        )
        emit(
            f"Started model server (pid {children[0].pid}) and gateway "
            f"(pid {children[1].pid}); waiting until both are ready..."
        )
        gateway_url = f"http://{_client_host(config.host)}:{config.gateway_port}"
        wait_until_ready(
            {
                "model server (gRPC health)": lambda: grpc_serving(grpc_target),
                "gateway (/readyz)": lambda: http_ok(gateway_url + "/readyz"),
            },
            children,
            config.ready_timeout,
            stop_requested=stop.requested,
        )
        if not stop.requested():
            emit(banner(config, started))
        while not stop.requested():
            for child in children:
                if not child.alive():
                    raise StackError(
                        f"{child.name} exited unexpectedly with code {child.process.returncode}"
                        + _tail(child)
                        + "; stopping the rest"
                    )
            time.sleep(0.2)
        emit(
            f"Received {signal.Signals(stop.signal).name}: stopping the gateway and the "
            "model server..."
        )
        return 0
    finally:
        # Gateway first: it is the one taking traffic, and it needs the model server to drain.
        for child in reversed(children):
            child.stop()
        if children:
            emit("Stopped.")


def _client_host(host: str) -> str:
    """Where a local client reaches a server bound to ``host`` (not the wildcard address)."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        return run(config)
    except StackError as exc:
        emit(f"error: {exc}", sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C during training, before our handlers are installed
        emit("interrupted", sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
