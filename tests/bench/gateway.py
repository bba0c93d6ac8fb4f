"""`make bench-gateway`: the gateway against its ceiling and against the naive tutorial server.

    python -m tests.bench.gateway --models-dir models [--seconds 10] [--workers-matrix]

Three HTTP servers answer the same single-image JSON request, one at a time on this box:
  (a) gateway  - gunicorn + the Flask gateway + the local model server (batching on);
  (b) canned   - the same gunicorn config and Flask app, with the model server call replaced by
                 a canned answer of the same shape (the ceiling of the HTTP layer);
  (c) naive    - a one-file Flask app calling Keras ``model.predict`` per request (tutorials).
wrk drives each at 1, 8 and 32 keep-alive connections; then a 256-image request measures
images/s through (a). Prints markdown tables with requests/s, p50/p99, errors, wrk's CPU and
the ratios a/b and a/c, and checks the targets. ``--workers-matrix`` instead compares gunicorn
worker classes for (a) at 32 connections, with worker RSS and start-up time.

Exported models come from ``--models-dir`` when it has both models; otherwise quick ones
(1 epoch, 2,000 examples) are exported into a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from serving import stack
from serving.cli_args import OneLineParser
from tests.bench import loadgen
from tests.bench.naive_gateway import PREDICT_PATH

CONNECTIONS = (1, 8, 32)
BATCH_IMAGES = 256
TARGETS = {"a/b": 0.5, "a/c": 20.0, "p99_ms": 20.0, "batch_images_per_s": 30_000}


# ---------------------------------------------------------------------------------------------
# Inputs


def sample_images(n: int, seed: int = 0) -> np.ndarray:
    """Real Fashion-MNIST test images when installed (realistic JSON size), else random ones."""
    try:
        from training.data.fashion_mnist import load_fashion_mnist

        return load_fashion_mnist(allow_download=False).x_test[:n]
    except Exception:  # any failure means "not installed": fall back
        return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def request_body(images: np.ndarray) -> bytes:
    """The gateway's JSON request for these images (row format, 28x28 nested lists)."""
    return orjson.dumps({"instances": images.tolist()})


def resolve_models(models_dir: Path, scratch: Path) -> Path:
    if not stack.missing_models(models_dir):
        return models_dir.resolve()
    print(
        f"{models_dir} lacks exported models: exporting quick ones (1 epoch, 2,000 examples) "
        f"into {scratch} ...",
        flush=True,
    )
    from training.pipeline import train_and_export

    housing = os.environ.get("HOUSING_DATA") or _shared_housing()
    train_and_export(scratch / "models", artifacts_dir=scratch / "artifacts", housing_data=housing)
    return scratch / "models"


def _shared_housing() -> str | None:
    path = stack.REPO_ROOT.parent / "shared/data/cal_housing.tgz"
    return str(path) if path.is_file() else None


def naive_model_path(models_dir: Path) -> Path:
    """The trained model.keras beside the models dir (what tutorials load), else the SavedModel."""
    for artifacts in (models_dir.parent / "artifacts", stack.REPO_ROOT / "artifacts"):
        candidate = artifacts / "fashion_mnist" / "model.keras"
        if candidate.is_file():
            return candidate
    versions = stack.exported_versions(models_dir / "fashion_mnist")
    return models_dir / "fashion_mnist" / str(versions[-1])


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass
class Server:
    name: str
    child: stack.Child
    url: str
    started_s: float  # spawn -> ready (first of the settled readiness probes)


@contextlib.contextmanager
def running(
    name: str,
    argv: Sequence[str],
    ready_url: str | None,
    *,
    env: Mapping[str, str] | None = None,
    grpc_target: str | None = None,
    log_dir: Path,
    timeout: float = 180.0,
) -> Iterator[Server]:
    log = (log_dir / f"{name}.log").open("w")
    started = time.monotonic()
    child = stack.spawn(name, argv, env=env, log_file=log)
    checks = {}
    if ready_url:
        checks[name] = lambda: stack.http_ok(ready_url)
    if grpc_target:
        checks[name + " gRPC"] = lambda: stack.grpc_serving(grpc_target)
    try:
        try:
            stack.wait_until_ready(checks, [child], timeout)
        except stack.StackError as exc:
            log.flush()
            tail = (log_dir / f"{name}.log").read_text()[-3000:]
            raise SystemExit(f"{name} did not start: {exc}\n{tail}") from None
        # Start-up: until ready, without the settle period wait_until_ready adds on top.
        elapsed = time.monotonic() - started - stack.SETTLE_SECONDS
        yield Server(name, child, ready_url or "", elapsed)
    finally:
        child.stop()
        log.close()


def modelserver_extra(args: argparse.Namespace) -> list[str]:
    return [
        "--host",
        "127.0.0.1",
        "--allow_version_labels_for_unavailable_models",
        *(args.modelserver_arg or ()),
    ]


def user_env(args: argparse.Namespace) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in args.gateway_env]
    bad = [item for item, pair in zip(args.gateway_env, pairs, strict=True) if len(pair) != 2]
    if bad:
        raise SystemExit(f"--gateway-env expects NAME=VALUE, got {bad[0]!r}")
    return dict(pairs)


def gunicorn_env(port: int, grpc_target: str, models_dir: Path, **extra: str) -> dict[str, str]:
    return {**stack.gateway_env("127.0.0.1", port, grpc_target, models_dir), **extra}


def worker_pids(master: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    pids.append(int(entry.name))
    return pids


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pids: Sequence[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


# ---------------------------------------------------------------------------------------------
# Measuring


@dataclass
class Row:
    target: str
    result: loadgen.WrkResult
    cpu_seconds: dict[str, float]  # per process group (e.g. gateway, model server)

    @property
    def server_cpu_percent(self) -> float:
        return 100 * sum(self.cpu_seconds.values()) / self.result.seconds

    def cpu_us_per_request(self, group: str) -> float:
        """CPU cost of one request in that group: what throughput on an idle box divides."""
        return 1e6 * self.cpu_seconds[group] / max(self.result.requests, 1)


def check_endpoint(url: str, body: bytes) -> None:
    status, reply = loadgen.post(url, body)
    if status != 200:
        raise SystemExit(f"{url} answered {status} to the benchmark request: {reply[:300]!r}")


def measure(
    name: str,
    url: str,
    body: bytes,
    connections: Sequence[int],
    seconds: float,
    groups: Mapping[str, Server],
    warmup: float = 2.0,
    timeout_s: float = 10.0,
) -> list[Row]:
    """wrk at each connection count; also the CPU each server process group spent."""
    check_endpoint(url, body)
    rows = []
    for c in connections:
        # Warm caches and pools.
        loadgen.run_wrk(url, body, connections=c, seconds=warmup, timeout_s=timeout_s)
        pids = {group: all_pids(server) for group, server in groups.items()}
        before = {group: cpu_seconds(p) for group, p in pids.items()}
        result = loadgen.run_wrk(url, body, connections=c, seconds=seconds, timeout_s=timeout_s)
        used = {group: cpu_seconds(p) - before[group] for group, p in pids.items()}
        row = Row(name, result, used)
        rows.append(row)
        per_request = "  ".join(
            f"{group} {row.cpu_us_per_request(group):.0f} us/req" for group in groups
        )
        print(
            f"  {name:8s} c={c:<3d} {result.requests_per_s:8.0f} req/s  "
            f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
            f"errors {result.errors}  CPU {per_request}",
            flush=True,
        )
    return rows


def all_pids(server: Server, *others: Server) -> list[int]:
    pids = []
    for s in (server, *others):
        pids += [s.child.pid, *worker_pids(s.child.pid)]
    return pids


def run_comparison(args: argparse.Namespace, models_dir: Path, log_dir: Path) -> str:
    images = sample_images(BATCH_IMAGES)
    body = request_body(images[:1])
    batch_body = request_body(images)
    rows: list[Row] = []
    batch_rows: list[Row] = []
    load_before = loadgen.load_average()

    grpc_port, rest_port = stack.free_port(), stack.free_port()
    grpc_target = f"127.0.0.1:{grpc_port}"
    ms_argv = stack.modelserver_argv(
        sys.executable,
        models_dir,
        grpc_port,
        rest_port,
        extra=modelserver_extra(args),
    )
    print(f"(a) gateway + model server ({models_dir})", flush=True)
    with running("modelserver", ms_argv, None, grpc_target=grpc_target, log_dir=log_dir) as ms:
        port = stack.free_port()
        with running(
            "gateway",
            stack.gunicorn_argv(sys.executable, args.gateway_app),
            f"http://127.0.0.1:{port}/readyz",
            env=gunicorn_env(port, grpc_target, models_dir, **user_env(args)),
            log_dir=log_dir,
        ) as gw:
            url = f"http://127.0.0.1:{port}{PREDICT_PATH}"
            groups = {"gateway": gw, "modelserver": ms}
            rows += measure("gateway", url, body, args.connections, args.seconds, groups)
            batch_rows += measure(
                f"batch{BATCH_IMAGES}",
                url,
                batch_body,
                args.batch_connections,
                args.seconds,
                groups,
            )

    print("(b) canned: same app and gunicorn config, no model server", flush=True)
    port = stack.free_port()
    with running(
        "canned",
        stack.gunicorn_argv(sys.executable, "tests.bench.canned_app:create_app()"),
        f"http://127.0.0.1:{port}/readyz",
        env=gunicorn_env(port, "127.0.0.1:1", models_dir, **user_env(args)),
        log_dir=log_dir,
    ) as canned:
        url = f"http://127.0.0.1:{port}{PREDICT_PATH}"
        rows += measure("canned", url, body, args.connections, args.seconds, {"canned": canned})

    if not args.skip_naive:
        model = naive_model_path(models_dir)
        print(f"(c) naive: Flask + keras model.predict per request ({model})", flush=True)
        port = stack.free_port()
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            str(args.naive_workers),
            "-b",
            f"127.0.0.1:{port}",
            "--timeout",
            "120",
            "tests.bench.naive_gateway:create_app()",
        ]
        url = f"http://127.0.0.1:{port}{PREDICT_PATH}"
        with running(
            "naive", argv, None, env={"NAIVE_MODEL": str(model)}, log_dir=log_dir
        ) as naive:
            _wait_post(url, body, naive.child)
            # Seconds per request under load: a longer run and timeout, so that its rate is
            # measured instead of wrk's timeouts.
            rows += measure(
                "naive",
                url,
                body,
                args.connections,
                max(args.seconds, args.naive_seconds),
                {"naive": naive},
                timeout_s=60.0,
            )

    load_after = loadgen.load_average()
    return report(rows, batch_rows, load_before, load_after, args)


def _wait_post(url: str, body: bytes, child: stack.Child, timeout: float = 180.0) -> None:
    """The naive app has no readiness route: it is ready when it answers a prediction."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise SystemExit(f"naive gateway exited with {child.process.returncode}")
        with contextlib.suppress(OSError):
            if loadgen.post(url, body, timeout=5)[0] == 200:
                return
        time.sleep(0.5)
    raise SystemExit("naive gateway not ready in time")


# ---------------------------------------------------------------------------------------------
# Reporting


def report(
    rows: list[Row],
    batch_rows: list[Row],
    load_before: tuple[float, ...],
    load_after: tuple[float, ...],
    args: argparse.Namespace,
) -> str:
    by = {(r.target, r.result.connections): r.result for r in rows}
    lines = [
        f"Load average before {_fmt_load(load_before)}, after {_fmt_load(load_after)} "
        f"({os.cpu_count()} cores); {args.seconds:g} s per point ((c): "
        f"{max(args.seconds, args.naive_seconds):g} s) after a 2 s warm-up; "
        f"CPU speed probe {loadgen.cpu_speed_ms():.1f} ms (a 200k-step Python loop).",
        "",
        "| server | conns | req/s | p50 ms | p99 ms | errors | server CPU % | server CPU µs/req "
        "| wrk CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(_row(r))
    lines += ["", "| conns | a/b (gateway/canned) | a/c (gateway/naive) |", "|---:|---:|---:|"]
    for c in args.connections:
        a, b, n = by.get(("gateway", c)), by.get(("canned", c)), by.get(("naive", c))
        ab = f"{a.requests_per_s / b.requests_per_s:.2f}" if a and b else "-"
        ac = f"{a.requests_per_s / n.requests_per_s:.1f}" if a and n and n.requests_per_s else "-"
        lines.append(f"| {c} | {ab} | {ac} |")
    if batch_rows:
        lines += [
            "",
            f"Batched requests of {BATCH_IMAGES} images through the gateway:",
            "",
            "| conns | req/s | images/s | p50 ms | p99 ms | errors |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for r in batch_rows:
            res = r.result
            lines.append(
                f"| {res.connections} | {res.requests_per_s:.0f} | "
                f"{res.requests_per_s * BATCH_IMAGES:,.0f} | {res.p50_ms:.2f} | "
                f"{res.p99_ms:.2f} | {res.errors} |"
            )
    lines += ["", *check_targets(by, batch_rows)]
    return "\n".join(lines)


def _row(r: Row) -> str:
    res = r.result
    return (
        f"| {r.target} | {res.connections} | {res.requests_per_s:,.0f} | {res.p50_ms:.2f} | "
        f"{res.p99_ms:.2f} | {res.errors} | {r.server_cpu_percent:.0f} | {_cpu_text(r)} | "
        f"{res.client_cpu_percent:.0f} |"
    )


def _cpu_text(r: Row) -> str:
    """Server CPU per request, split by process group when there are several."""
    parts = {group: r.cpu_us_per_request(group) for group in r.cpu_seconds}
    total = f"{sum(parts.values()):.0f}"
    if len(parts) == 1:
        return total
    return total + " (" + " + ".join(f"{g} {v:.0f}" for g, v in parts.items()) + ")"


def _fmt_load(load: tuple[float, ...]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def check_targets(
    by: Mapping[tuple[str, int], loadgen.WrkResult], batch_rows: Sequence[Row]
) -> list[str]:
    out = []
    a, b, n = by.get(("gateway", 32)), by.get(("canned", 32)), by.get(("naive", 32))

    def line(ok: bool, text: str) -> None:
        out.append(f"- {'PASS' if ok else 'MISS'}: {text}")

    if a and b:
        ratio = a.requests_per_s / b.requests_per_s
        line(ratio >= TARGETS["a/b"], f"a/b at 32 connections = {ratio:.2f} (target >= 0.5)")
    if a and n and n.requests_per_s:
        ratio = a.requests_per_s / n.requests_per_s
        line(ratio >= TARGETS["a/c"], f"a/c at 32 connections = {ratio:.1f} (target >= 20)")
    if a:
        line(
            a.p99_ms <= TARGETS["p99_ms"],
            f"gateway p99 at 32 connections = {a.p99_ms:.2f} ms (target <= 20 ms)",
        )
    errors = sum(r.errors for k, r in by.items() if k[0] == "gateway")
    errors += sum(r.result.errors for r in batch_rows)
    line(errors == 0, f"gateway errors (socket, timeout, non-2xx) = {errors} (target 0)")
    if batch_rows:
        best = max(r.result.requests_per_s * BATCH_IMAGES for r in batch_rows)
        line(
            best >= TARGETS["batch_images_per_s"],
            f"batched {BATCH_IMAGES}-image requests = {best:,.0f} images/s (target >= 30,000)",
        )
    return out


# ---------------------------------------------------------------------------------------------
# Worker classes


WORKER_CONFIGS: dict[str, dict[str, str]] = {
    # GATEWAY_THREADS=1: with more threads gunicorn silently runs "sync" as gthread.
    "sync x2": {"GATEWAY_WORKER_CLASS": "sync", "GATEWAY_WORKERS": "2", "GATEWAY_THREADS": "1"},
    "sync x4": {"GATEWAY_WORKER_CLASS": "sync", "GATEWAY_WORKERS": "4", "GATEWAY_THREADS": "1"},
    "gthread x2, 4 threads": {
        "GATEWAY_WORKER_CLASS": "gthread",
        "GATEWAY_WORKERS": "2",
        "GATEWAY_THREADS": "4",
    },
    "gthread x2, 16 threads": {
        "GATEWAY_WORKER_CLASS": "gthread",
        "GATEWAY_WORKERS": "2",
        "GATEWAY_THREADS": "16",
    },
    "gevent x1": {"GATEWAY_WORKER_CLASS": "gevent", "GATEWAY_WORKERS": "1"},
    "gevent x2": {"GATEWAY_WORKER_CLASS": "gevent", "GATEWAY_WORKERS": "2"},
    "gevent x3": {"GATEWAY_WORKER_CLASS": "gevent", "GATEWAY_WORKERS": "3"},
    "gevent x4": {"GATEWAY_WORKER_CLASS": "gevent", "GATEWAY_WORKERS": "4"},
}


def run_worker_matrix(args: argparse.Namespace, models_dir: Path, log_dir: Path) -> str:
    body = request_body(sample_images(1))
    grpc_port, rest_port = stack.free_port(), stack.free_port()
    grpc_target = f"127.0.0.1:{grpc_port}"
    ms_argv = stack.modelserver_argv(
        sys.executable,
        models_dir,
        grpc_port,
        rest_port,
        extra=modelserver_extra(args),
    )
    load_before = loadgen.load_average()
    lines = [
        "| worker model | req/s | p50 ms | p99 ms | errors | server CPU % | "
        "server CPU µs/req | RSS/worker MB | start-up s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with running("modelserver", ms_argv, None, grpc_target=grpc_target, log_dir=log_dir) as ms:
        for label, extra in WORKER_CONFIGS.items():
            if args.only and label not in args.only:
                continue
            port = stack.free_port()
            log_name = "gw-" + label.replace(" ", "").replace(",", "-")
            with running(
                log_name,
                stack.gunicorn_argv(sys.executable, args.gateway_app),
                f"http://127.0.0.1:{port}/readyz",
                env=gunicorn_env(port, grpc_target, models_dir, **{**user_env(args), **extra}),
                log_dir=log_dir,
            ) as gw:
                url = f"http://127.0.0.1:{port}{PREDICT_PATH}"
                (row,) = measure(
                    label, url, body, (32,), args.seconds, {"gateway": gw, "modelserver": ms}
                )
                workers = worker_pids(gw.child.pid)
                rss = max(rss_mb(p) for p in workers) if workers else float("nan")
                res = row.result
                lines.append(
                    f"| {label} | {res.requests_per_s:,.0f} | {res.p50_ms:.2f} | "
                    f"{res.p99_ms:.2f} | {res.errors} | {row.server_cpu_percent:.0f} | "
                    f"{_cpu_text(row)} | {rss:.0f} | {gw.started_s:.2f} |"
                )
    load_after = loadgen.load_average()
    lines.insert(
        0,
        f"Single-image JSON, 32 connections, {args.seconds:g} s per row; load "
        f"average before {_fmt_load(load_before)}, after {_fmt_load(load_after)}; CPU speed "
        f"probe {loadgen.cpu_speed_ms():.1f} ms (a 200k-step Python loop).\n",
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"connection counts must be >= 1, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(
        prog="python -m tests.bench.gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument(
        "--seconds", type=loadgen.duration, default=10.0, help="per measured point (default 10)"
    )
    p.add_argument("--connections", type=_int_list, default=CONNECTIONS, help="default: 1,8,32")
    p.add_argument(
        "--batch-connections",
        type=_int_list,
        default=(2, 8, 16),
        help="connections for the 256-image requests (default: 2,8,16)",
    )
    p.add_argument(
        "--naive-workers",
        type=loadgen.positive_int,
        default=2,
        help="sync workers of (c), default 2",
    )
    p.add_argument(
        "--naive-seconds",
        type=loadgen.duration,
        default=30.0,
        help="seconds per point for (c), whose requests take seconds under load (default 30)",
    )
    p.add_argument("--skip-naive", action="store_true", help="skip (c), the slow baseline")
    p.add_argument(
        "--workers-matrix",
        action="store_true",
        help="compare gunicorn worker classes for (a) instead",
    )
    p.add_argument("--only", action="append", help="with --workers-matrix: only these labels")
    p.add_argument(
        "--gateway-app",
        default=stack.GATEWAY_APP,
        help="gunicorn app spec of (a) (default: %(default)s); for experiments",
    )
    p.add_argument(
        "--modelserver-arg",
        action="append",
        help="extra flag for python -m serving.modelserver (repeatable), e.g. "
        "--modelserver-arg=--tensorflow_intra_op_parallelism=1",
    )
    p.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        help="NAME=VALUE for the gateway (and canned) gunicorn, e.g. GATEWAY_WORKER_CLASS=gevent",
    )
    p.add_argument("--out", type=Path, help="also write the markdown here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        loadgen.wrk_path()
    except loadgen.LoadgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        scratch = Path(tmp)
        log_dir = scratch / "logs"
        log_dir.mkdir()
        models_dir = resolve_models(args.models_dir, scratch)
        if args.workers_matrix:
            text = run_worker_matrix(args, models_dir, log_dir)
        else:
            text = run_comparison(args, models_dir, log_dir)
    print()
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
