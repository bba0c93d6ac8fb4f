"""Scenario 4: SIGTERM under load, first to gunicorn, then to the model server. Requests already
accepted when the signal arrives must complete; both processes must exit 0 within their graceful
timeout.

"Accepted before the signal" is judged from the client: requests sent at least ``RACE_SECONDS``
before the signal. A request sent in the last instant before it may not have been read by the
server yet; those are counted separately (a client must retry them, as after any connection
loss). To have requests truly in flight, the gateway talks to the model server through a proxy
that adds ``IN_FLIGHT_DELAY`` seconds, and the model server gets batches of 64 images.
"""

from __future__ import annotations

import signal
import threading
import time

import numpy as np

from serving.tfs_client import BackendError, TFServingClient
from tests.reliability.base import Context, Result, ms
from tests.reliability.load import LoadLoop, Sample, describe_failures, figures
from tests.reliability.proxy import DelayProxy

IN_FLIGHT_DELAY = 0.5
RACE_SECONDS = 0.05  # HTTP through gunicorn
GRPC_RACE_SECONDS = 0.01  # gRPC straight to the model server
GRACEFUL_SECONDS = 10  # GATEWAY_GRACEFUL_TIMEOUT of the scenario's gateway
MODELSERVER_GRACE_SECONDS = 20  # serving/modelserver/server.py SHUTDOWN_GRACE_SECONDS


def run(ctx: Context) -> Result:
    result = Result("shutdown")
    ctx.ensure_server()
    gw_samples, gw_signal, gw_code, gw_exit, gw_log = _gateway_part(ctx)
    ms_samples, ms_signal, ms_code, ms_exit = _modelserver_part(ctx)

    notes = []
    result.samples = gw_samples + ms_samples
    result.events = {"gunicorn SIGTERM": gw_signal, "model server SIGTERM": ms_signal}
    for who, samples, signalled, code, took, grace, race in (
        ("gunicorn", gw_samples, gw_signal, gw_code, gw_exit, GRACEFUL_SECONDS, RACE_SECONDS),
        (
            "model server",
            ms_samples,
            ms_signal,
            ms_code,
            ms_exit,
            MODELSERVER_GRACE_SECONDS,
            GRPC_RACE_SECONDS,
        ),
    ):
        accepted = [s for s in samples if s.start < signalled - race]
        in_flight = [s for s in accepted if s.end > signalled]
        racing = [s for s in samples if signalled - race <= s.start < signalled]
        lost = [s for s in accepted if not s.ok]
        figs = figures(accepted)
        result.sent += figs.sent
        result.failures += figs.failures
        result.max_seconds = max(result.max_seconds, figs.max_seconds)
        result.p99_seconds = max(result.p99_seconds, figs.p99_seconds)
        notes.append(
            f"{who}: {len(in_flight)} in flight, {len(lost)} lost, exit {code} in {ms(took)}"
        )
        racing_failed = sum(1 for s in racing if not s.ok)
        if racing_failed:
            result.notes.append(
                f"{who}: {racing_failed} of {len(racing)} requests sent in the "
                f"last {race * 1000:.0f} ms before the signal failed"
            )
        result.check(not lost, f"{who}: accepted requests failed: {describe_failures(lost)}")
        result.check(len(in_flight) > 0, f"{who}: no request was in flight at the signal")
        result.check(code == 0, f"{who} exited with {code}")
        result.check(took <= grace + 2, f"{who} took {took:.1f} s to exit (grace {grace} s)")
    if gw_code != 0:
        # The evidence goes with the failure: gunicorn says why it did not exit 0.
        result.problems.append(f"gunicorn log, last lines:\n{gw_log}")
    result.key = "; ".join(notes)
    return result


def _gateway_part(ctx: Context) -> tuple[list[Sample], float, int | None, float, str]:
    with DelayProxy(ctx.server.target) as proxy:
        env = {"GATEWAY_GRACEFUL_TIMEOUT": str(GRACEFUL_SECONDS)}
        with ctx.gateway(env, grpc_target=proxy.target) as gw:
            proxy.delay = IN_FLIGHT_DELAY
            loop = LoadLoop(gw.url, threads=6, rate=None)
            with loop:
                time.sleep(ctx.phase(1.5, 3.0))
                signalled = time.monotonic()
                gw.process.send_signal(signal.SIGTERM)
                try:
                    code: int | None = gw.process.wait(GRACEFUL_SECONDS + 10)
                except Exception:
                    code = None
                exited = time.monotonic()
            log_tail = gw.log_tail(40)
    return loop.samples, signalled, code, exited - signalled, log_tail


def _modelserver_part(ctx: Context) -> tuple[list[Sample], float, int | None, float]:
    images = np.random.default_rng(0).integers(0, 255, (64, 28, 28)).astype(np.uint8)
    samples: list[Sample] = []
    stop = threading.Event()

    def client() -> None:
        with TFServingClient(ctx.server.target, timeout=10.0, retries=0) as tfs:
            while not stop.is_set():
                start = time.monotonic()
                try:
                    tfs.predict("fashion_mnist", {"images": images}, output_filter=["class_ids"])
                    samples.append(Sample(start, time.monotonic(), 200))
                except BackendError as exc:
                    samples.append(Sample(start, time.monotonic(), 503, error=exc.message[:120]))
                    time.sleep(0.05)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(16)]
    for thread in threads:
        thread.start()
    time.sleep(ctx.phase(1.5, 3.0))
    signalled = time.monotonic()
    ctx.server.send_signal(signal.SIGTERM)
    assert ctx.server.process is not None
    try:
        code: int | None = ctx.server.process.wait(MODELSERVER_GRACE_SECONDS + 10)
    except Exception:
        code = None
    exited = time.monotonic()
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(15)
    return samples, signalled, code, exited - signalled
