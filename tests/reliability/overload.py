"""Scenario 6: many more concurrent clients than the gateway has threads, each sending its
next request as soon as the previous one answered (and waiting Retry-After after a 503). With
the admission cap (``GATEWAY_MAX_INFLIGHT``, serving/gateway/admission.py) the excess gets 503
``overloaded`` + Retry-After at once and admitted requests keep a bounded latency; the same load
without the cap is measured for comparison (full runs only)."""

from __future__ import annotations

import time

from tests.reliability.base import GATEWAY_WORKERS, Context, Result, ms
from tests.reliability.load import LoadLoop, Sample, describe_failures, figures, percentile

CLIENTS = 64
#: gthread threads per worker and the cap: threads > cap, so the excess reaches the app and is
#: refused there instead of queueing in gunicorn's thread pool (see admission.py).
THREADS, MAX_INFLIGHT = 16, 4
CAPPED_ENV = {"GATEWAY_THREADS": str(THREADS), "GATEWAY_MAX_INFLIGHT": str(MAX_INFLIGHT)}
#: The comparison: the same threads, no cap.
UNCAPPED_ENV = {"GATEWAY_THREADS": str(THREADS), "GATEWAY_MAX_INFLIGHT": "0"}


def _hammer(ctx: Context, env: dict[str, str], seconds: float) -> list[Sample]:
    with ctx.gateway(env) as gw:
        loop = LoadLoop(gw.url, threads=CLIENTS, rate=None, honor_retry_after=True)
        with loop:
            time.sleep(seconds)
    return loop.samples


def run(ctx: Context) -> Result:
    result = Result("overload")
    ctx.ensure_server()
    seconds = ctx.phase(4.0, 15.0)
    samples = _hammer(ctx, CAPPED_ENV, seconds)
    ok = [s.seconds for s in samples if s.ok]
    refused = [s for s in samples if s.status == 503]
    wrong = [s for s in samples if not s.ok and not (s.status == 503 and s.retry_after)]
    result.samples = samples
    figs = figures(samples, ok_statuses=(200, 503))
    result.sent, result.failures = figs.sent, len(wrong)
    result.max_seconds, result.p99_seconds = figs.max_seconds, figs.p99_seconds
    refused_p99 = percentile([s.seconds for s in refused], 99)
    ok_p99 = percentile(ok, 99)
    result.key = (
        f"{CLIENTS} clients, cap {MAX_INFLIGHT}x{GATEWAY_WORKERS}: "
        f"{len(ok)} ok (p99 {ms(ok_p99)}), "
        f"{len(refused)} x 503 (p99 {ms(refused_p99)})"
    )
    result.check(not wrong, f"answers other than 200 / 503+Retry-After: {describe_failures(wrong)}")
    result.check(len(refused) > 0, "the cap never refused a request")
    result.check(len(ok) > 0, "no request was served")
    if ctx.strict:
        uncapped = _hammer(ctx, UNCAPPED_ENV, seconds)
        plain = [s.seconds for s in uncapped if s.ok]
        plain_p99 = percentile(plain, 99)
        result.key += f"; without cap: {len(plain)} ok, p99 {ms(plain_p99)}"
        result.check(refused_p99 <= 0.25, f"503 p99 {ms(refused_p99)} (> 250 ms): not fast")
        result.check(ok_p99 < plain_p99, "the cap did not lower the p99 of served requests")
    return result
