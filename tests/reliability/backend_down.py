"""Scenario 2: the model server goes away under load and comes back on the same port. While it
is down the gateway answers 503 + Retry-After within its deadline and /readyz says 503; once it
is back the gateway recovers by itself (no gateway restart).

Full run: the model server is SIGKILLed (a crash) and restarted. Fast variant (pytest): the
gateway talks to it through a proxy whose port is closed and reopened, which the gateway sees
the same way (connections reset, then refused) without paying a TensorFlow start-up.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator

from grpc_health.v1 import health_pb2

from tests.helpers.modelserver_process import health_status
from tests.reliability.base import (
    DEADLINE_SECONDS,
    Context,
    Result,
    http_status,
    ms,
    wait_for_sample,
    wait_status,
)
from tests.reliability.load import LoadLoop, between, describe_failures, figures
from tests.reliability.proxy import DelayProxy

MARGIN_SECONDS = 0.5
#: Longest the gateway may take to serve again once the model server is SERVING.
RECOVERY_TIMEOUT_SECONDS = 30.0
#: Strict target: every gateway worker serves again this soon after the server is SERVING
#: (gRPC reconnect backoff is capped at 1 s in serving/tfs_client.py).
RECOVERY_TARGET_SECONDS = 3.0


@contextlib.contextmanager
def _outage(ctx: Context) -> Iterator[tuple[str, Callable[[], None], Callable[[], float]]]:
    """(gRPC target for the gateway, take_down(), bring_up() -> time it is SERVING again)."""
    if not ctx.fast:

        def bring_up() -> float:
            ctx.server.start(wait=False)
            return ctx.server.wait_serving()

        yield ctx.server.target, lambda: ctx.server.stop(signal.SIGKILL), bring_up
        return
    with DelayProxy(ctx.server.target) as proxy:

        def reopen() -> float:
            proxy.start()
            while health_status(proxy.target, timeout=1.0) != (
                health_pb2.HealthCheckResponse.SERVING
            ):
                time.sleep(0.02)
            return time.monotonic()

        yield proxy.target, proxy.stop, reopen


def run(ctx: Context) -> Result:
    result = Result("backend_down")
    ctx.ensure_server()
    down_seconds = ctx.phase(3.0, 10.0)
    with _outage(ctx) as (target, take_down, bring_up), ctx.gateway(grpc_target=target) as gw:
        loop = LoadLoop(gw.url, threads=4, rate=ctx.rate)
        probes: list[tuple[float, int]] = []
        stop_probes = threading.Event()

        def probe() -> None:
            while not stop_probes.is_set():
                probes.append((time.monotonic(), http_status(gw.url + "/readyz")))
                stop_probes.wait(0.2)

        prober = threading.Thread(target=probe, daemon=True)
        with loop:
            time.sleep(ctx.phase(1.0, 3.0))
            prober.start()
            killed = time.monotonic()
            take_down()
            time.sleep(down_seconds)
            restarted = time.monotonic()
            serving = bring_up()
            first_ok = wait_for_sample(loop, lambda s: s.ok, serving, RECOVERY_TIMEOUT_SECONDS)
            ready_at = wait_status(gw.url + "/readyz", 200, RECOVERY_TIMEOUT_SECONDS)
            time.sleep(ctx.phase(2.5, 5.0))
            stop_probes.set()
            prober.join()
        ended = time.monotonic()
    samples = loop.samples
    result.samples = samples
    result.events = {"down": killed, "restarted": restarted, "serving": serving}
    down = between(samples, killed + 0.05, restarted)
    {id(s) for s in down}
    # Only 503 + Retry-After is acceptable while down (and while workers reconnect).
    wrong = [s for s in samples if not s.ok and not (s.status == 503 and s.retry_after)]
    wrong += [s for s in down if s.ok]
    failed_after = [s for s in samples if s.start >= serving and not s.ok]
    all_ok = max((s.end for s in failed_after), default=serving) - serving
    # From 2 s after /readyz is 200 again, every request must be served.
    settled = between(samples, (ready_at or ended) + 2.0, ended)
    not_settled = [s for s in settled if not s.ok]
    figs = figures(samples, ok_statuses=(200, 503))
    result.sent, result.p99_seconds, result.max_seconds = (
        figs.sent,
        figs.p99_seconds,
        figs.max_seconds,
    )
    result.failures = len(wrong) + len(not_settled)
    down_max = max((s.seconds for s in down), default=0.0)
    not_ready = [t for t, status in probes if killed < t < restarted and status == 503]
    ready_flip = (not_ready[0] - killed) if not_ready else None
    result.key = (
        f"{len(down)} x 503 while down, max {ms(down_max)}; /readyz 503 after "
        f"{ms(ready_flip) if ready_flip is not None else 'never'}; after SERVING: first 200 "
        f"{ms(first_ok) if first_ok is not None else 'never'}, all workers {ms(all_ok)}"
    )
    how = "port closed via proxy" if ctx.fast else "SIGKILL"
    result.notes.append(f"outage: {how}; back to SERVING {serving - restarted:.1f} s after restart")
    result.check(len(down) > 0, "no request was sent while the model server was down")
    result.check(not wrong, f"answers other than 200 / 503+Retry-After: {describe_failures(wrong)}")
    result.check(
        len(settled) > 0 and not not_settled,
        f"after recovery: {describe_failures(not_settled) or 'no requests'}",
    )
    result.check(first_ok is not None, "the gateway did not serve again after the restart")
    result.check(ready_at is not None, "/readyz did not return to 200")
    result.check(ready_flip is not None, "/readyz never answered 503 while the server was down")
    result.check(down_max <= DEADLINE_SECONDS + 5, f"a request hung {down_max:.1f} s while down")
    if ctx.strict:
        result.check(
            down_max <= DEADLINE_SECONDS + MARGIN_SECONDS,
            f"a 503 took {down_max:.2f} s (> deadline + {MARGIN_SECONDS} s)",
        )
        result.check(
            all_ok <= RECOVERY_TARGET_SECONDS,
            f"503s until {all_ok:.1f} s after SERVING (> {RECOVERY_TARGET_SECONDS} s)",
        )
    return result
