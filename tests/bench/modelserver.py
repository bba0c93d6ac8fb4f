"""`make bench-modelserver`: gRPC Predict throughput/latency of the local model server.

    python -m tests.bench.modelserver --models-dir models [--seconds 10] [--clients 1,16]
        [--modes off,on] [--server-args=--tensorflow_intra_op_parallelism=1]

One 28x28 image per request. For batching off and on, one model server runs and a load
generator drives it for ``--seconds`` after a warm-up: by default ``h2load`` (Debian package
``nghttp2-client``, a C HTTP/2 client: one connection with N calls in flight, like one gRPC
channel shared by N callers), or with ``--client python`` a grpc.aio process (one coroutine
per client; the request serialized once, responses not parsed), which costs the 2-core box a
quarter to a third of a core. gRPC failures are counted from the server's own
``:tensorflow:serving:request_count`` (h2load sees only HTTP). Prints a markdown table of
requests/s, p50/p99 latency, client and server CPU, and the batching/no-batching throughput
ratio at the highest concurrency.
Exported models come from ``--models-dir`` when it has both, else quick ones are exported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.cli_args import OneLineParser
from tests.bench.loadgen import duration, warmup_duration
from tests.helpers.modelserver_process import running_modelserver

PREDICT = "/tensorflow.serving.PredictionService/Predict"
TARGET_RATIO = 2.0


# ---- load generator (runs in its own process) ---------------------------------------------


def predict_request_bytes(seed: int = 0) -> bytes:
    from serving.codecs.tensors import ndarray_to_tensor_proto
    from serving.protos import PredictRequest, PredictResponse

    request = PredictRequest()
    request.model_spec.name = "fashion_mnist"
    image = np.random.default_rng(seed).integers(0, 256, (1, 28, 28), dtype=np.uint8)
    ndarray_to_tensor_proto(image, request.inputs["images"])
    assert PredictResponse  # the response is checked once by the parent, not here
    return request.SerializeToString()


async def _drive(target: str, clients: int, warmup: float, seconds: float) -> dict:
    import grpc

    body = predict_request_bytes()
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(PREDICT)  # bytes in, bytes out: no client-side protobuf
        start = time.perf_counter()
        measure_from, stop_at = start + warmup, start + warmup + seconds

        async def client() -> None:
            nonlocal errors
            while True:
                sent = time.perf_counter()
                if sent >= stop_at:
                    return
                try:
                    await call(body, timeout=30)
                except grpc.RpcError:
                    errors += 1
                    continue
                if sent >= measure_from:
                    latencies.append(time.perf_counter() - sent)

        cpu0, wall0 = None, None

        async def mark() -> None:
            nonlocal cpu0, wall0
            await asyncio.sleep(warmup)
            cpu0, wall0 = time.process_time(), time.perf_counter()

        await asyncio.gather(mark(), *(client() for _ in range(clients)))
        cpu = time.process_time() - (cpu0 or 0.0)
        wall = time.perf_counter() - (wall0 or start)
    lat = np.array(latencies) * 1e3
    return {
        "clients": clients,
        "requests": len(latencies),
        "rps": len(latencies) / seconds,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "errors": errors,
        "client_cpu": cpu / wall,
    }


def loadgen_main(target: str, clients: int, warmup: float, seconds: float) -> None:
    print(json.dumps(asyncio.run(_drive(target, clients, warmup, seconds))), flush=True)


# ---- orchestration ------------------------------------------------------------------------


@dataclass
class Row:
    mode: str  # "off", "on" or "ceiling" (MODES)
    clients: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    client_cpu: float
    server_cpu: float


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_loadgen(target: str, clients: int, warmup: float, seconds: float) -> dict:
    command = [
        sys.executable,
        "-m",
        "tests.bench.modelserver",
        "--loadgen",
        target,
        "--clients",
        str(clients),
        "--warmup",
        str(warmup),
        "--seconds",
        str(seconds),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=warmup + seconds + 120
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_h2load(target: str, rest_url: str, clients: int, warmup: float, seconds: float) -> dict:
    from tests.bench.loadgen import run_h2load_grpc

    failed_before = predict_failures(rest_url)
    result = run_h2load_grpc(
        target, PREDICT, predict_request_bytes(), streams=clients, seconds=seconds, warmup=warmup
    )
    return {
        "rps": result.requests_per_s,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.http_errors + predict_failures(rest_url) - failed_before,
        "client_cpu": result.client_cpu_percent / 100,
    }


def predict_failures(rest_url: str) -> int:
    """Predict calls the server answered with a status other than OK, from its metrics."""
    import urllib.request

    with urllib.request.urlopen(f"{rest_url}/monitoring/prometheus/metrics", timeout=10) as r:
        text = r.read().decode()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(":tensorflow:serving:request_count{")
            and 'API="Predict"' in line
            and 'status="OK"' not in line
        )
    )


def check_answer(target: str) -> None:
    import grpc

    from serving.protos import PredictResponse

    with grpc.insecure_channel(target) as channel:
        raw = channel.unary_unary(PREDICT)(predict_request_bytes(), timeout=30)
    response = PredictResponse.FromString(raw)
    assert set(response.outputs) == {"probabilities", "class_ids", "class_names"}, response


#: --modes: batching off, on, and on with graph calls answered from a cache (the front-end's
#: ceiling, tests/bench/cached_graph_modelserver.py).
MODES = ("off", "on", "ceiling")
CACHED_GRAPH_SERVER = "tests.bench.cached_graph_modelserver"


def measure(
    models_dir: Path,
    mode: str,
    clients: Sequence[int],
    warmup: float,
    seconds: float,
    server_args: Sequence[str] = (),
    client: str = "h2load",
) -> list[Row]:
    rows = []
    with running_modelserver(
        models_dir,
        batching=mode != "off",
        poll_seconds=30,
        extra_args=server_args,
        module=CACHED_GRAPH_SERVER if mode == "ceiling" else "serving.modelserver",
    ) as server:
        check_answer(server.grpc_target)
        for n in clients:
            cpu0, t0 = process_cpu_seconds(server.process.pid), time.perf_counter()
            if client == "h2load":
                result = run_h2load(server.grpc_target, server.rest_url, n, warmup, seconds)
            else:
                result = run_loadgen(server.grpc_target, n, warmup, seconds)
            server_cpu = (process_cpu_seconds(server.process.pid) - cpu0) / (
                time.perf_counter() - t0
            )
            rows.append(
                Row(
                    mode,
                    n,
                    result["rps"],
                    result["p50_ms"],
                    result["p99_ms"],
                    result["errors"],
                    result["client_cpu"],
                    server_cpu,
                )
            )
            print(
                f"  batching={mode} clients={n}: {result['rps']:.0f} req/s",
                flush=True,
            )
    return rows


def measure_in_process(models_dir: Path, clients: Sequence[int], seconds: float) -> str:
    """The data plane alone (no gRPC, no second process): what batching saves in the graph
    calls themselves, to compare with the end-to-end table."""
    from concurrent.futures import ThreadPoolExecutor

    from serving.modelserver.batching import AsyncBatcher
    from serving.modelserver.config import load_batching_config, load_model_config
    from serving.modelserver.dataplane import DataPlane
    from serving.modelserver.repository import ModelRepository
    from serving.modelserver.specs import ModelRef
    from tests.helpers.modelserver_process import BATCHING_CONFIG, DEFAULT_CONFIG

    repository = ModelRepository(load_model_config(DEFAULT_CONFIG, models_dir), poll_seconds=0)
    repository.poll_once()
    executor = ThreadPoolExecutor(32)
    batcher = AsyncBatcher(load_batching_config(BATCHING_CONFIG), executor)
    image = {"images": np.zeros((1, 28, 28), np.uint8)}
    ref = ModelRef("fashion_mnist")

    async def run(plane: DataPlane, n: int, duration: float) -> tuple[float, float]:
        done, stop = 0, time.perf_counter() + duration

        async def client() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await plane.predict_async(ref, image)
                done += 1

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client() for _ in range(n)))
        wall = time.perf_counter() - wall0
        return done / wall, (time.process_time() - cpu0) / max(done, 1) * 1e6

    async def all_cells() -> list[str]:
        lines = ["| batching | clients | requests/s | CPU µs/request |", "|---|---:|---:|---:|"]
        for label, plane in (
            ("off", DataPlane(repository, executor=executor)),
            ("on", DataPlane(repository, executor=executor, async_batcher=batcher)),
        ):
            for n in clients:
                await run(plane, n, 1.0)
                rps, cpu = await run(plane, n, seconds)
                lines.append(f"| {label} | {n} | {rps:,.0f} | {cpu:,.0f} |")
        return lines

    try:
        return "\n".join(asyncio.run(all_cells()))
    finally:
        executor.shutdown()


def report(rows: list[Row]) -> str:
    lines = [
        "| batching | clients | requests/s | p50 ms | p99 ms | errors | client CPU | server CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.mode} | {r.clients} | {r.rps:,.0f} | {r.p50_ms:.2f} "
            f"| {r.p99_ms:.2f} | {r.errors} | {r.client_cpu:.0%} | {r.server_cpu:.0%} |"
        )
    top = max(r.clients for r in rows)
    off, on, ceiling = (
        next((r for r in rows if r.mode == mode and r.clients == top), None) for mode in MODES
    )
    if off and on and off.rps:
        ratio = on.rps / off.rps
        verdict = "meets" if ratio >= TARGET_RATIO else "misses"
        lines.append("")
        lines.append(
            f"Batching on/off at {top} clients: **{ratio:.2f}x** ({verdict} the "
            f"{TARGET_RATIO:.0f}x target). CPU is % of one core; {os.cpu_count()} cores."
        )
    if off and ceiling and off.rps:
        lines.append(
            f"Ceiling (batching on, graph answered from a cache) at {top} clients: "
            f"{ceiling.rps:,.0f} req/s = **{ceiling.rps / off.rps:.2f}x** off: the most "
            f"batching can give through this gRPC front-end here, whatever the model costs."
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = OneLineParser(
        prog="python -m tests.bench.modelserver",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--seconds", type=duration, default=10.0, help="measured seconds per cell")
    p.add_argument(
        "--warmup", type=warmup_duration, default=2.0, help="unmeasured seconds per cell"
    )
    p.add_argument("--clients", default="1,16", help="comma-separated concurrency levels")
    p.add_argument(
        "--server-args",
        default="",
        help="extra model server flags (space-separated; write --server-args=... as they start "
        "with --), e.g. --server-args=--tensorflow_intra_op_parallelism=1",
    )
    p.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated: off, on (batching), ceiling (on, graph calls cached); default all",
    )
    p.add_argument(
        "--client",
        choices=("h2load", "python"),
        default="h2load",
        help="load generator: h2load (C, default) or a grpc.aio process",
    )
    p.add_argument("--loadgen", metavar="TARGET", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.loadgen:
        loadgen_main(args.loadgen, int(args.clients), args.warmup, args.seconds)
        return 0
    try:
        clients = [int(c) for c in args.clients.split(",")]
    except ValueError:
        clients = [0]
    if min(clients) < 1:
        print(f"bench: --clients must be integers >= 1, got {args.clients!r}", file=sys.stderr)
        return 2
    modes = args.modes.split(",")
    if not set(modes) <= set(MODES):  # anything else used to run as "off"
        print(
            f"bench: --modes must be among {','.join(MODES)}, got {args.modes!r}", file=sys.stderr
        )
        return 2
    from tests.bench.gateway import resolve_models
    from tests.bench.loadgen import LoadgenError, h2load_path

    if args.client == "h2load":
        try:
            h2load_path()
        except LoadgenError as exc:
            print(f"bench: {exc}; or run with --client python", file=sys.stderr)
            return 2

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-modelserver-") as scratch:
        models_dir = resolve_models(args.models_dir, Path(scratch))
        print(f"models: {models_dir}", flush=True)
        rows = []
        for mode in modes:
            rows += measure(
                models_dir,
                mode,
                clients,
                args.warmup,
                args.seconds,
                args.server_args.split(),
                args.client,
            )
        print("data plane in-process ...", flush=True)
        in_process = measure_in_process(models_dir, clients, args.seconds)
    print()
    print(report(rows))
    print(
        f"Load average (1 min) before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores: other work on the box competes with server and client."
    )
    print()
    print("Data plane alone, in-process (no gRPC), same request:")
    print()
    print(in_process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
