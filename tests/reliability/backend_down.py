"""Scenario 2: the model server crashes (SIGKILL) under load and comes back on the same ports.
While it is down the gateway answers 503 + Retry-After within its deadline and /readyz says 503;
once it is back the gateway recovers by itself (no gateway restart)."""

from __future__ import annotations

import signal
import threading
import time

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

MARGIN_SECONDS = 0.5
#: Longest the gateway may take to serve again once the model server is SERVING.
RECOVERY_TIMEOUT_SECONDS = 30.0


def run(ctx: Context) -> Result:
    result = Result("backend_down")
    ctx.ensure_server()
    down_seconds = ctx.phase(3.0, 10.0)
    with ctx.gateway() as gw:
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
            ctx.server.stop(signal.SIGKILL)
            time.sleep(down_seconds)
            restarted = time.monotonic()
            ctx.server.start(wait=False)
            serving = ctx.server.wait_serving()
            recovered = wait_for_sample(loop, lambda s: s.ok, serving, RECOVERY_TIMEOUT_SECONDS)
            ready_at = wait_status(gw.url + "/readyz", 200, RECOVERY_TIMEOUT_SECONDS)
            time.sleep(ctx.phase(1.0, 3.0))
            stop_probes.set()
            prober.join()
    samples = loop.samples
    result.samples, result.events = (
        samples,
        {"killed": killed, "restarted": restarted, "serving": serving},
    )
    down = between(samples, killed + 0.05, restarted)
    after = between(samples, serving + (recovered or 0.0) + 0.05, float("inf"))
    # While down only 503 + Retry-After is acceptable; before and after only 200.
    wrong_down = [s for s in down if s.status != 503 or not s.retry_after]
    down_ids = {id(s) for s in down}
    wrong_other = [
        s
        for s in samples
        if id(s) not in down_ids and not s.ok and not (s.status == 503 and s.retry_after)
    ]
    wrong_after = [s for s in after if not s.ok]
    figs = figures(samples, ok_statuses=(200, 503))
    result.sent, result.p99_seconds, result.max_seconds = (
        figs.sent,
        figs.p99_seconds,
        figs.max_seconds,
    )
    result.failures = len(wrong_down) + len(wrong_other) + len(wrong_after)
    down_max = max((s.seconds for s in down), default=0.0)
    not_ready = [t for t, status in probes if killed < t < restarted and status == 503]
    ready_flip = (not_ready[0] - killed) if not_ready else None
    result.key = (
        f"{len(down)} x 503 while down, max {ms(down_max)}; /readyz 503 after "
        f"{ms(ready_flip) if ready_flip is not None else 'never'}; serves "
        f"{ms(recovered) if recovered is not None else 'never'} after model server SERVING "
        f"(restart to SERVING {serving - restarted:.1f} s)"
    )
    result.check(len(down) > 0, "no request was sent while the model server was down")
    result.check(not wrong_down, f"while down: {describe_failures(wrong_down)}")
    result.check(not wrong_other, f"around the fault: {describe_failures(wrong_other)}")
    result.check(not wrong_after, f"after recovery: {describe_failures(wrong_after)}")
    result.check(recovered is not None, "the gateway did not serve again after the restart")
    result.check(ready_at is not None, "/readyz did not return to 200")
    result.check(ready_flip is not None, "/readyz never answered 503 while the server was down")
    result.check(down_max <= DEADLINE_SECONDS + 5, f"a request hung {down_max:.1f} s while down")
    if ctx.strict:
        result.check(
            down_max <= DEADLINE_SECONDS + MARGIN_SECONDS,
            f"a 503 took {down_max:.2f} s (> deadline + {MARGIN_SECONDS} s)",
        )
        result.check(
            recovered is not None and recovered <= 3.0,
            f"recovery took {recovered} s after SERVING (> 3 s)",
        )
    return result
