"""Scenario 3: the model server answers slower than the gateway's deadline (a delaying gRPC
proxy in between) -> 504 within the deadline plus a small margin; once it is fast again, no
gateway thread is left stuck: a burst of one request per thread succeeds at once."""

from __future__ import annotations

import time

from tests.reliability.base import DEADLINE_SECONDS, GATEWAY_WORKERS, Context, Result, ms
from tests.reliability.load import LoadLoop, between, burst, describe_failures, figures
from tests.reliability.proxy import DelayProxy

DELAY_SECONDS = DEADLINE_SECONDS + 1.5
#: The gateway's answer may come this much after its deadline (scheduling on a busy box).
MARGIN_SECONDS = 0.5
THREADS = 4  # GATEWAY_THREADS; the load stays within workers x threads so nothing queues


def run(ctx: Context) -> Result:
    result = Result("slow_backend")
    ctx.ensure_server()
    phase = ctx.phase(2.0 * DEADLINE_SECONDS + 1, 4.0 * DEADLINE_SECONDS)
    env = {"GATEWAY_THREADS": str(THREADS)}
    with DelayProxy(ctx.server.target) as proxy, ctx.gateway(env, grpc_target=proxy.target) as gw:
        # No more clients than one worker has threads: connections are not spread evenly over
        # the workers, and a request queued in gunicorn behind slow ones waits before its own
        # deadline starts (the overload scenario covers that case).
        loop = LoadLoop(gw.url, threads=THREADS, rate=ctx.rate)
        with loop:
            time.sleep(ctx.phase(1.0, 2.0))
            slow_from = time.monotonic()
            proxy.delay = DELAY_SECONDS
            time.sleep(phase)
            proxy.delay = 0.0
            fast_from = time.monotonic()
            time.sleep(ctx.phase(1.0, 3.0))
        after_burst = burst(gw.url, GATEWAY_WORKERS * THREADS)
    samples = loop.samples
    result.samples, result.events = samples, {"slow": slow_from, "fast": fast_from}
    before = [s for s in samples if s.end < slow_from]
    slow = between(samples, slow_from + 0.05, fast_from - DELAY_SECONDS)
    after = between(samples, fast_from + 0.05, float("inf"))
    # Requests straddling a switch may legitimately get either answer; they are not judged.
    judged = before + slow + after
    bad = [s for s in before + after if s.status != 200] + [s for s in slow if s.status != 504]
    figs = figures(judged)
    result.sent, result.max_seconds, result.p99_seconds = (
        figs.sent,
        figs.max_seconds,
        figs.p99_seconds,
    )
    result.failures = len(bad) + sum(1 for s in after_burst if not s.ok)
    slow_max = max((s.seconds for s in slow), default=0.0)
    burst_max = max((s.seconds for s in after_burst), default=0.0)
    result.key = (
        f"{len(slow)} x 504, max {ms(slow_max)} (deadline {DEADLINE_SECONDS:g} s); "
        f"after: {sum(s.ok for s in after_burst)}/{len(after_burst)} ok, max {ms(burst_max)}"
    )
    result.check(not bad, f"unexpected answers: {describe_failures(bad)}")
    result.check(len(slow) > 0, "no request was sent while the model server was slow")
    result.check(
        all(s.ok for s in after_burst), f"burst after recovery: {describe_failures(after_burst)}"
    )
    hung = [s for s in slow if s.seconds > DEADLINE_SECONDS + 5]
    result.check(not hung, f"{len(hung)} requests hung past the deadline + 5 s")
    if ctx.strict:
        result.check(
            slow_max <= DEADLINE_SECONDS + MARGIN_SECONDS,
            f"a 504 took {slow_max:.2f} s (> deadline + {MARGIN_SECONDS} s)",
        )
        result.check(burst_max <= 1.0, f"a request after recovery took {burst_max:.2f} s")
    return result
