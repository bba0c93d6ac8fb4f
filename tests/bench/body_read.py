"""Micro-benchmark: reading a 730 kB Content-Length body through gunicorn 23, stock vs ours.

    python -m tests.bench.body_read [--iterations 200] [--images 256] [--variants stock,ours]

In-process, over a socketpair: a thread writes the request (head + a JSON body of N
Fashion-MNIST-sized images, 730 kB for 256), the main thread parses it with gunicorn's
``RequestParser`` and reads ``wsgi.input`` whole, once as the app's werkzeug does
(``LimitedStream`` with the 8 MiB ``MAX_CONTENT_LENGTH``: ``read(65536)`` until empty) and once
with a bare ``read()``. Variants: gunicorn's own ``Body``, the same with a 64 KiB or 1 MiB
``SocketUnreader.mxchunk`` (``--variants``), and ``serving.gateway.workers.LengthBody``. Prints
µs per request from the parser's start to the last byte read: wall time (median, mean) and the
reading thread's CPU time (median). The variants run round-robin, so the VM's speed drift hits
them alike. Last, what werkzeug's ``LimitedStream`` alone costs over an in-memory body.
"""

from __future__ import annotations

import argparse
import io
import random
import socket
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from gunicorn.config import Config
from gunicorn.http import RequestParser
from werkzeug.wsgi import LimitedStream, get_input_stream

from serving.gateway.workers import use_length_body
from tests.bench.loadgen import cpu_speed_ms

MAX_BODY = 8 * 1024 * 1024
CONFIG = Config()
VARIANTS = ("stock", "mxchunk64", "mxchunk1024", "ours")


def json_body(images: int) -> bytes:
    rng = random.Random(0)
    image = "[" + ",".join(
        "[" + ",".join(str(rng.randrange(256)) for _ in range(28)) + "]" for _ in range(28)
    )
    rows = ",".join(image + "]" for _ in range(images))
    return b'{"instances": [' + rows.encode() + b"]}"


def request_bytes(body: bytes) -> bytes:
    head = (
        b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    return head + body


def _prepare(variant: str, req: Any) -> None:
    if variant == "ours":
        use_length_body(req)
    elif variant.startswith("mxchunk"):
        req.unreader.mxchunk = int(variant.removeprefix("mxchunk")) * 1024


def _read_werkzeug(req: Any) -> bytes:
    environ = {"wsgi.input": req.body, "wsgi.input_terminated": True}
    return get_input_stream(environ, max_content_length=MAX_BODY).read()


def _read_plain(req: Any) -> bytes:
    return req.body.read()


def time_read(variant: str, reader: Callable, data: bytes, body_size: int) -> tuple[float, float]:
    server, client = socket.socketpair()
    with server, client:
        writer = threading.Thread(target=client.sendall, args=(data,))
        writer.start()
        start, start_cpu = time.perf_counter(), time.thread_time()
        req = next(RequestParser(CONFIG, server, ("127.0.0.1", 1)))
        _prepare(variant, req)
        body = reader(req)
        elapsed, cpu = time.perf_counter() - start, time.thread_time() - start_cpu
        writer.join()
    assert len(body) == body_size, (variant, len(body))
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument(
        "--variants", default="stock,ours", help=f"comma-separated, of: {', '.join(VARIANTS)}"
    )
    args = parser.parse_args()
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants: {sorted(unknown)}")
    body = json_body(args.images)
    data = request_bytes(body)
    rows = [
        (variant, read_name, reader)
        for read_name, reader in (("werkzeug", _read_werkzeug), ("read()", _read_plain))
        for variant in variants
    ]
    times: dict[tuple[str, str], list[tuple[float, float]]] = {(v, r): [] for v, r, _ in rows}
    # Round-robin, so the VM's speed drift hits every row alike.
    for _ in range(args.iterations):
        for variant, read_name, reader in rows:
            times[variant, read_name].append(time_read(variant, reader, data, len(body)))
    print(
        f"body {len(body):,} bytes, {args.iterations} iterations per row, interleaved; "
        f"CPU speed probe {cpu_speed_ms():.1f} ms (a 200k-step Python loop)"
    )
    print("| variant | read | wall median µs | wall mean µs | CPU median µs |")
    print("|---|---|---:|---:|---:|")
    for (variant, read_name), row in times.items():
        wall = [w for w, _ in row]
        median = statistics.median(wall) * 1e6
        mean = statistics.fmean(wall) * 1e6
        cpu = statistics.median(c for _, c in row) * 1e6
        print(f"| {variant} | {read_name} | {median:,.0f} | {mean:,.0f} | {cpu:,.0f} |")
    # What werkzeug's LimitedStream costs on its own (64 KiB reads into a growing bytearray).
    floor = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        LimitedStream(io.BytesIO(body), MAX_BODY, is_max=True).read()
        floor.append(time.perf_counter() - start)
    print(
        f"werkzeug's LimitedStream over an in-memory body: {statistics.median(floor) * 1e6:,.0f} µs"
    )


if __name__ == "__main__":
    main()
