"""``make loadtest``: a bounded, headless locust run with a report.

    python -m tests.load.run --users 32 --spawn-rate 32 --duration 60s --target gateway

1. Checks that the target answers (gateway ``/readyz``; model server GetModelStatus). When
   nothing listens there and ``--start-stack auto`` (the default), starts ``python -m
   serving.stack`` on those ports and stops it afterwards.
2. Runs locust headless for ``--duration`` (plus ``--stop-timeout``), killing it if it overruns,
   with the user classes of ``--target`` (gateway: the three HTTP users; grpc: the gRPC user;
   all: the four).
3. Writes ``reports/loadtest/<UTC timestamp>/``: locust's CSVs and HTML report, ``summary.md``
   (per-endpoint req/s, failures, p50..p99, max; the settings; the CPU used by the load generator
   and the servers, and the load average, since both share this machine) and ``latency.png``.
4. Prints the summary table; exits 1 if any request failed or an endpoint got no requests.

Settings: flags, with defaults from ``GATEWAY_URL`` (http://127.0.0.1:8000) and
``MODEL_SERVER_GRPC`` (127.0.0.1:8500). Exit codes: 0 ok, 1 failures, 2 usage, 3 stack not
reachable/startable.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from serving.cli_args import OneLineParser, float_in_range, int_in_range
from tests.load import report
from tests.load.names import CLASSES_BY_TARGET

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
EXIT_FAILURES, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
MODELS = ("fashion_mnist", "housing")


class RunError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_UNREACHABLE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def parse_timespan(text: str) -> int:
    """Locust's time format ("90", "60s", "1m30s", "1h") -> seconds."""
    text = text.strip().lower()
    if text.isdigit():
        return int(text)
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if not text or match is None:
        raise argparse.ArgumentTypeError(f"expected a duration like 60s or 1m30s, got {text!r}")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


AT_LEAST_ONE = int_in_range(1)
RATE = float_in_range(0, above_minimum=True, what="users per second")  # nan used to start
SECONDS = float_in_range(0, above_minimum=True, what="seconds")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m tests.load.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--users", type=AT_LEAST_ONE, default=32, help="concurrent users (default 32)"
    )
    parser.add_argument("--spawn-rate", type=RATE, default=32, help="users started per second")
    parser.add_argument("--duration", type=parse_timespan, default=60, help="e.g. 60s, 2m (60s)")
    parser.add_argument("--target", choices=sorted(CLASSES_BY_TARGET), default="gateway")
    parser.add_argument(
        "--gateway-url", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000")
    )
    parser.add_argument("--grpc", default=os.environ.get("MODEL_SERVER_GRPC", "127.0.0.1:8500"))
    parser.add_argument(
        "--start-stack",
        choices=("auto", "never"),
        default="auto",
        help="auto: start python -m serving.stack when nothing answers (default)",
    )
    parser.add_argument("--models-dir", default="models", help="for a stack started here")
    parser.add_argument("--ready-timeout", type=SECONDS, default=300.0)
    parser.add_argument(
        "--processes", type=AT_LEAST_ONE, default=1, help="locust processes (--processes)"
    )
    parser.add_argument(
        "--stop-timeout",
        type=int_in_range(0),
        default=5,
        help="seconds for running requests to finish",
    )
    parser.add_argument(
        "--batch", type=AT_LEAST_ONE, default=1, help="instances per request (LOAD_BATCH)"
    )
    parser.add_argument("--reports-dir", default="reports/loadtest")
    args = parser.parse_args(argv)
    if args.duration < 1:
        parser.error("--duration must be at least 1 s")
    if len(CLASSES_BY_TARGET[args.target]) > args.users:
        parser.error(f"--target {args.target} needs at least one user per class")
    return args


# -- reachability ------------------------------------------------------------------------


def _host_port(url_or_target: str) -> tuple[str, int]:
    if "://" in url_or_target:
        parts = urlsplit(url_or_target)
        return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)
    host, _, port = url_or_target.rpartition(":")
    try:
        return host.strip("[]") or "127.0.0.1", int(port)
    except ValueError:
        raise RunError(f"{url_or_target}: expected host:port", EXIT_USAGE) from None


def port_open(address: tuple[str, int]) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(address, timeout=1.0):
        return True
    return False


def gateway_ready(url: str) -> bool:
    import urllib3

    try:
        response = urllib3.request("GET", url.rstrip("/") + "/readyz", timeout=2.0, retries=False)
    except urllib3.exceptions.HTTPError:
        return False
    return response.status == 200


def grpc_ready(target: str) -> bool:
    from serving.tfs_client import BackendError, TFServingClient

    with TFServingClient(target, timeout=2.0, retries=0) as client:
        try:
            return all(
                any(v["state"] == "AVAILABLE" for v in client.status(model)) for model in MODELS
            )
        except BackendError:
            return False


def endpoints(args: argparse.Namespace) -> dict[str, tuple[str, int]]:
    """What the target needs: name -> (host, port)."""
    needed = {}
    if args.target in ("gateway", "all"):
        needed["gateway"] = _host_port(args.gateway_url)
    if args.target in ("grpc", "all"):
        needed["grpc"] = _host_port(args.grpc)
    return needed


def all_ready(args: argparse.Namespace, needed: dict[str, tuple[str, int]]) -> bool:
    checks = {
        "gateway": lambda: gateway_ready(args.gateway_url),
        "grpc": lambda: grpc_ready(args.grpc),
    }
    return all(checks[name]() for name in needed)


def wait_ready(
    args: argparse.Namespace, needed: dict[str, tuple[str, int]], process: subprocess.Popen | None
) -> None:
    deadline = time.monotonic() + args.ready_timeout
    while not all_ready(args, needed):
        if process is not None and process.poll() is not None:
            raise RunError(f"python -m serving.stack exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise RunError(f"{', '.join(needed)} not ready within {args.ready_timeout:g} s")
        time.sleep(0.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def stack(args: argparse.Namespace, out_dir: Path) -> Iterator[str]:
    """Yields "running" (already up) or "started by run.py" (and stops it on exit)."""
    needed = endpoints(args)
    open_ = {name: port_open(address) for name, address in needed.items()}
    if all(open_.values()):
        wait_ready(args, needed, None)
        yield "already running"
        return
    if any(open_.values()) or args.start_stack == "never":
        up = [n for n, o in open_.items() if o]
        down = [f"{n} ({needed[n][0]}:{needed[n][1]})" for n, o in open_.items() if not o]
        hint = f"; {', '.join(up)} answers, so not starting a stack" if up else ""
        raise RunError(f"nothing answers at {', '.join(down)}{hint}")
    gateway_host, gateway_port = _host_port(args.gateway_url)
    grpc_host, grpc_port = _host_port(args.grpc)
    for host in (gateway_host, grpc_host):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise RunError(f"nothing answers at {host} and run.py only starts a local stack")
    command = [
        sys.executable, "-m", "serving.stack", "--models-dir", args.models_dir, "--host",
        "127.0.0.1", "--grpc-port", str(grpc_port), "--rest-port", str(_free_port()),
        "--gateway-port", str(gateway_port), "--ready-timeout", str(args.ready_timeout),
    ]  # fmt: skip
    log_path = out_dir / "stack.log"
    print(f"nothing answers: starting {' '.join(command[1:])} (log: {log_path})", flush=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        # Both servers, whatever the target: the stack is started once for either.
        full = {"gateway": (gateway_host, gateway_port), "grpc": (grpc_host, grpc_port)}
        wait_ready(args, full, process)
        yield "started by run.py"
    finally:
        _stop(process)


def _stop(process: subprocess.Popen, grace: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# -- CPU accounting ----------------------------------------------------------------------


def _tree(roots: Sequence[psutil.Process]) -> list[psutil.Process]:
    seen: dict[int, psutil.Process] = {}
    for root in roots:
        with contextlib.suppress(psutil.Error):
            for p in [root, *root.children(recursive=True)]:
                seen[p.pid] = p
    return list(seen.values())


def _cpu_seconds(process: psutil.Process) -> float | None:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def server_processes(needed_ports: set[int]) -> list[psutil.Process]:
    """The processes serving these ports: the listeners, climbing from a gunicorn worker to its
    master (the kernel may name any process sharing the socket), and all their children."""
    roots: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="inet"):
            listening = conn.status == psutil.CONN_LISTEN and conn.laddr and conn.pid
            if not listening or conn.laddr.port not in needed_ports:
                continue
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(conn.pid)
                parent = process.parent()
                while parent is not None and "gunicorn" in " ".join(parent.cmdline()):
                    process, parent = parent, parent.parent()
                roots[process.pid] = process
    return _tree(list(roots.values()))


class TreeMeter:
    """CPU seconds used by a set of processes between start() and stop(), sampled in a thread
    so that processes exiting before the end (locust workers) still count."""

    def __init__(
        self, processes: Sequence[psutil.Process] = (), root: psutil.Process | None = None
    ):
        self.fixed = list(processes)
        self.root = root
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        procs = _tree([self.root]) if self.root is not None else self.fixed
        for p in procs:
            seconds = _cpu_seconds(p)
            if seconds is not None:
                self.first.setdefault(p.pid, 0.0 if self.root is not None else seconds)
                self.last[p.pid] = seconds

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def start(self) -> TreeMeter:
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        return sum(self.last[pid] - self.first[pid] for pid in self.last)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- the run -----------------------------------------------------------------------------


@dataclass
class LocustRun:
    returncode: int
    wall_seconds: float
    client_cpu: float
    server_cpu: float | None
    machine_busy: float  # fraction of all cores busy during the run
    load_average: tuple[float, float, float]
    server_processes: int


def run_locust(args: argparse.Namespace, out_dir: Path) -> LocustRun:
    classes = CLASSES_BY_TARGET[args.target]
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
        "--run-time", f"{args.duration}s", "--stop-timeout", str(args.stop_timeout),
        "--host", args.gateway_url, "--csv", str(out_dir / "locust"), "--csv-full-history",
        "--html", str(out_dir / "report.html"), "--only-summary", "--exit-code-on-error", "1",
    ]  # fmt: skip
    if args.processes > 1:
        command += ["--processes", str(args.processes)]
    command += classes
    env = dict(os.environ)
    env.update(
        GATEWAY_URL=args.gateway_url,
        MODEL_SERVER_GRPC=args.grpc,
        LOAD_BATCH=str(args.batch),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
    )
    ports = {port for _, port in endpoints(args).values()}
    # The gateway's own backend too: its CPU is part of every gateway request (a listener on
    # this machine only; a remote model server is simply not found).
    ports.add(_host_port(args.grpc)[1])
    server_meter = TreeMeter(server_processes(ports))
    servers = len(server_meter.fixed)
    log_path = out_dir / "locust.log"
    print(
        f"locust: {args.users} users ({', '.join(classes)}) for {args.duration} s "
        f"(log: {log_path})",
        flush=True,
    )
    children_before = _children_cpu()
    cpu_before = psutil.cpu_times()
    start = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        client_meter = TreeMeter(root=psutil.Process(process.pid)).start()
        server_meter.start()
        # Bounded: run time, the stop timeout, start-up and report writing, then it is killed.
        limit = args.duration + args.stop_timeout + 60
        try:
            returncode = process.wait(limit)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            message = f"locust overran its {limit} s bound and was killed (see {log_path})"
            raise RunError(message, EXIT_FAILURES) from None
        finally:
            wall = time.monotonic() - start
            sampled = client_meter.stop()
            server_cpu = server_meter.stop() if servers else None
    cpu_after = psutil.cpu_times()
    busy = _busy_fraction(cpu_before, cpu_after)
    # getrusage covers everything locust reaped; sampling covers workers it did not wait for.
    client_cpu = max(sampled, _children_cpu() - children_before)
    return LocustRun(returncode, wall, client_cpu, server_cpu, busy, os.getloadavg(), servers)


def _busy_fraction(before: Any, after: Any) -> float:
    total = sum(after) - sum(before)
    idle = (after.idle + getattr(after, "iowait", 0)) - (before.idle + getattr(before, "iowait", 0))
    return 0.0 if total <= 0 else max(0.0, 1 - idle / total)


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def _cpu_line(seconds: float | None, wall: float) -> str:
    if seconds is None:
        return "not measured (no listening process found on this machine)"
    return f"{seconds:.1f} s = {seconds / wall:.0%} of one core"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    out_dir = Path(args.reports_dir) / started.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with stack(args, out_dir) as stack_state:
            result = run_locust(args, out_dir)
        stats = report.read_stats(out_dir / "locust_stats.csv")
        failures = report.read_failures(out_dir / "locust_failures.csv")
    except (RunError, report.ReportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_FAILURES)
    settings = {
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "target": args.target,
        "user classes": ", ".join(CLASSES_BY_TARGET[args.target]),
        "users": args.users,
        "spawn rate (users/s)": f"{args.spawn_rate:g}",
        "duration": f"{args.duration} s (wall {result.wall_seconds:.0f} s incl. start/stop)",
        "instances per request": args.batch,
        "locust processes": args.processes,
        "gateway": args.gateway_url,
        "model server gRPC": args.grpc,
        "stack": stack_state,
        "commit": _git_commit(),
        "machine": f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.1f} GiB",
    }
    cores = os.cpu_count() or 1
    resources = {
        "load generator (locust) CPU": _cpu_line(result.client_cpu, result.wall_seconds),
        f"servers CPU ({result.server_processes} processes)": _cpu_line(
            result.server_cpu, result.wall_seconds
        ),
        "whole machine busy": f"{result.machine_busy:.0%} of {cores} cores",
        # What neither side used: other processes competing for the same cores during the run.
        "everything else on the machine": _cpu_line(
            max(
                0.0,
                result.machine_busy * cores * result.wall_seconds
                - result.client_cpu
                - (result.server_cpu or 0.0),
            ),
            result.wall_seconds,
        ),
        "load average (1/5/15 min, at the end)": " / ".join(
            f"{x:.2f}" for x in result.load_average
        ),
    }
    (out_dir / "summary.md").write_text(
        report.summary_markdown(settings, stats, resources, failures), encoding="utf-8"
    )
    try:
        report.plot_history(out_dir / "locust_stats_history.csv", out_dir / "latency.png")
    except report.ReportError as exc:
        print(f"warning: no latency plot: {exc}", file=sys.stderr)
    print(report.stats_table(stats))
    for name, value in resources.items():
        print(f"{name}: {value}")
    print(f"report: {out_dir}/summary.md")
    total = stats[-1]
    idle = [s.name for s in stats[:-1] if s.requests == 0]
    expected_entries = len(CLASSES_BY_TARGET[args.target])
    if total.failures or idle or len(stats) - 1 < expected_entries:
        print(
            f"error: {total.failures} failed requests of {total.requests}"
            + (f"; no requests for {', '.join(idle)}" if idle else "")
            + (
                f"; only {len(stats) - 1} of {expected_entries} endpoints ran"
                if len(stats) - 1 < expected_entries
                else ""
            ),
            file=sys.stderr,
        )
        return EXIT_FAILURES
    if result.returncode != 0:
        print(f"error: locust exited with code {result.returncode} (see its log)", file=sys.stderr)
        return EXIT_FAILURES
    return 0


if __name__ == "__main__":
    sys.exit(main())
