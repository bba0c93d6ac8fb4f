"""Scenario 5: a steady rate for a long time -> no failures, p99 of the last window close to the
first, and resident memory of the gateway (gunicorn master + workers) and the model server
growing by less than 10 % after warm-up."""

from __future__ import annotations

import os
import time

from tests.reliability.base import Context, Result, ms
from tests.reliability.load import LoadLoop, between, describe_failures, figures
from tests.reliability.stack import tree_rss

RSS_GROWTH_LIMIT = 0.10
#: The last window's p99 may exceed the first's by this factor plus this many seconds.
P99_FACTOR, P99_SLACK = 2.0, 0.010


def run(ctx: Context) -> Result:
    result = Result("soak")
    ctx.ensure_server()
    duration = ctx.phase(10.0, ctx.soak_seconds)
    window = max(duration / 10, 2.0)
    sample_every = ctx.phase(1.0, 5.0)
    with ctx.gateway() as gw:
        assert ctx.server.process is not None
        pids = {"gateway": gw.process.pid, "model server": ctx.server.process.pid}
        rss: dict[str, list[int]] = {name: [] for name in pids}
        loop = LoadLoop(gw.url, threads=4, rate=ctx.rate)
        with loop:
            started = time.monotonic()
            # Memory is measured from the end of the first window: caches and arenas fill up
            # during warm-up, which is not growth.
            loads = [os.getloadavg()[0]]
            while (now := time.monotonic()) < started + duration:
                if now >= started + window:
                    loads.append(os.getloadavg()[0])
                    for name, pid in pids.items():
                        rss[name].append(tree_rss(pid))
                time.sleep(min(sample_every, max(0.0, started + duration - now)))
            for name, pid in pids.items():
                rss[name].append(tree_rss(pid))
    samples = loop.samples
    result.samples, result.events = samples, {"started": started}
    figs = figures(samples)
    result.sent, result.failures = figs.sent, figs.failures
    result.max_seconds, result.p99_seconds = figs.max_seconds, figs.p99_seconds
    first = figures(between(samples, started, started + window))
    last = figures(between(samples, started + duration - window, started + duration))
    growth = {
        name: (values[-1] - values[0]) / values[0] if values and values[0] else 0.0
        for name, values in rss.items()
    }
    achieved = figs.sent / duration
    series = [
        figures(between(samples, started + i * window, started + (i + 1) * window))
        for i in range(int(duration // window))
    ]
    result.notes.append("p99 per window: " + ", ".join(ms(f.p99_seconds) for f in series))
    result.notes.append(
        f"machine load average (1 min) during the soak: {min(loads):.1f} to "
        f"{max(loads):.1f} on {os.cpu_count()} cores"
    )
    result.key = (
        f"{duration:.0f} s at {achieved:.0f} req/s; p99 first {ms(first.p99_seconds)} -> last "
        f"{ms(last.p99_seconds)}; RSS "
        + ", ".join(
            f"{name} {values[-1] / 2**20:.0f} MiB ({growth[name]:+.1%})"
            for name, values in rss.items()
        )
    )
    result.check(figs.failures == 0, f"{figs.failures} failed: {describe_failures(samples)}")
    if ctx.strict:
        limit = first.p99_seconds * P99_FACTOR + P99_SLACK
        result.check(
            last.p99_seconds <= limit,
            f"p99 grew from {ms(first.p99_seconds)} to {ms(last.p99_seconds)}",
        )
        for name, value in growth.items():
            result.check(value < RSS_GROWTH_LIMIT, f"{name} RSS grew {value:+.1%}")
        result.check(
            achieved >= 0.9 * ctx.rate,
            f"sent {achieved:.1f} req/s, below 90 % of --rate {ctx.rate:g}",
        )
    return result
