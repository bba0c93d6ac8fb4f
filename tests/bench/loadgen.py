"""wrk and h2load as a library: one fixed request at N connections (wrk, HTTP/1.1) or N streams
(h2load, unary gRPC), returning rate, percentiles and errors.

wrk (Debian package ``wrk``) is a C event loop: with one thread it drives 32 keep-alive
connections for 10-25 % of one core, so on a 2-core box the server gets the rest (a Python
client such as locust would eat half a core and measure itself). The body is set by a Lua
script and ``done()`` prints the numbers as one JSON line, so nothing is scraped from wrk's
human-readable text except what the Lua API lacks.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from serving.cli_args import float_in_range, int_in_range

# Runs inside wrk (LuaJIT). Each thread and the done() phase get their own copy of the script,
# so the body is read from the file at load time in every environment.
WRK_SCRIPT = r"""
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE")

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"duration_us": %d, "requests": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %f}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


class LoadgenError(RuntimeError):
    pass


@dataclass(frozen=True)
class WrkResult:
    connections: int
    seconds: float
    requests: int
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # socket errors + timeouts + HTTP status > 399 (wrk's "Non-2xx or 3xx")
    status_errors: int
    client_cpu_percent: float  # wrk's own CPU, as % of one core

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


#: argparse types: a count (>= 1), a measured duration (> 0 s), a warm-up (>= 0 s).
positive_int = int_in_range(1)
duration = float_in_range(0, above_minimum=True, what="seconds")
warmup_duration = float_in_range(0, what="seconds")


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise LoadgenError("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    return path


def run_wrk(
    url: str,
    body: bytes,
    *,
    connections: int,
    seconds: float = 10.0,
    threads: int = 1,
    content_type: str = "application/json",
    timeout_s: float = 10.0,
) -> WrkResult:
    """POST ``body`` to ``url`` over ``connections`` keep-alive connections for ``seconds``."""
    threads = max(1, min(threads, connections))
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        body_file = Path(tmp, "body")
        body_file.write_bytes(body)
        script = Path(tmp, "post.lua")
        script.write_text(WRK_SCRIPT)
        env = {**os.environ, "WRK_BODY_FILE": str(body_file), "WRK_CONTENT_TYPE": content_type}
        argv = [
            wrk_path(),
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds:g}s",
            "--timeout",
            f"{timeout_s:g}s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise LoadgenError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise LoadgenError(f"wrk printed no results:\n{proc.stdout}\n{proc.stderr}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    duration = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    return WrkResult(
        connections=connections,
        seconds=round(duration, 2),
        requests=raw["requests"],
        requests_per_s=raw["requests"] / duration if duration else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        errors=errors,
        status_errors=raw["status"],
        client_cpu_percent=100 * cpu / wall if wall else 0.0,
    )


@dataclass(frozen=True)
class GrpcLoadResult:
    streams: int
    seconds: float
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    http_errors: int  # failed streams and HTTP status != 200 (gRPC statuses are in trailers)
    client_cpu_percent: float  # h2load's own CPU, as % of one core


def h2load_path() -> str:
    path = shutil.which("h2load")
    if path is None:
        raise LoadgenError(
            "h2load is not installed (Debian/Ubuntu: apt-get install nghttp2-client)"
        )
    return path


def run_h2load_grpc(
    target: str, method: str, message: bytes, *, streams: int, seconds: float, warmup: float
) -> GrpcLoadResult:
    """Unary gRPC calls of ``method`` (e.g. "/pkg.Service/Method") with one serialized
    ``message`` over ONE HTTP/2 connection with ``streams`` calls in flight, like one gRPC
    channel shared by that many callers. h2load is a C client (a few % of a core where a Python
    gRPC client took a quarter to a third of one). It sees HTTP, not gRPC: a call that fails
    with a gRPC status still counts as HTTP 200, so count those on the server."""
    framed = b"\x00" + len(message).to_bytes(4, "big") + message  # gRPC's length-prefixed frame
    with tempfile.TemporaryDirectory(prefix="h2load-") as tmp:
        body_file, log_file = Path(tmp, "body"), Path(tmp, "log")
        body_file.write_bytes(framed)
        argv = [
            h2load_path(),
            "-c1",
            f"-m{streams}",
            f"-d{body_file}",
            "-Hcontent-type: application/grpc",
            "-Hte: trailers",
            f"--warm-up-time={round(warmup * 1000)}ms",  # h2load takes no fractions of s
            f"-D{round(seconds * 1000)}ms",
            f"--log-file={log_file}",
            f"http://{target}{method}",
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise LoadgenError(f"h2load failed ({proc.returncode}): {proc.stderr or proc.stdout}")
        # One line per finished request: start (µs since the epoch), HTTP status, duration µs.
        rows = [line.split() for line in log_file.read_text().splitlines() if line.strip()]
    ok = [int(row[2]) for row in rows if row[1] == "200"]
    latencies = sorted(ok)
    # Every finished request has a row, a stream that failed before any answer with status -1,
    # so the rows alone count failures once (h2load's own "failed" already includes "errored").
    failed = len(rows) - len(ok)

    def percentile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000 if ok else 0.0

    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return GrpcLoadResult(
        streams=streams,
        seconds=seconds,
        requests=len(ok),
        requests_per_s=len(ok) / seconds,
        p50_ms=percentile(0.50),
        p99_ms=percentile(0.99),
        http_errors=failed,
        client_cpu_percent=100 * cpu / wall if wall else 0.0,
    )


def post(
    url: str, body: bytes, content_type: str = "application/json", timeout: float = 30.0
) -> tuple[int, bytes]:
    """One request with the standard library (to check an endpoint before loading it)."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def cpu_speed_ms() -> float:
    """CPU milliseconds of a fixed pure-Python loop (best of 5): how slow this box is right now.

    On a shared box the CPU time of the same work varies (SMT siblings, caches, the host), so
    benchmark numbers are only comparable together with this figure.
    """
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        total = 0
        for i in range(200_000):
            total += i
        best = min(best, time.process_time() - start)
    return best * 1000
