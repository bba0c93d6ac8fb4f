"""Scenario 1: roll a new version out under load, move the ``stable`` label there and back,
then roll back by removing the version directory. Every request must succeed."""

from __future__ import annotations

import time

from tests.reliability.base import Context, Result, ms, wait_for_sample
from tests.reliability.load import LoadLoop, describe_failures, figures
from tests.reliability.stack import model_config_text, remove_version, write_atomically

MODEL = "fashion_mnist"
#: Longest a change may take to show in the answers (poll interval 0.5 s + load + warm-up).
SWITCH_TIMEOUT_SECONDS = 60.0


def run(ctx: Context) -> Result:
    result = Result("rollout")
    ctx.ensure_server()
    versions = sorted(int(p.name) for p in (ctx.models_dir / MODEL).iterdir() if p.name.isdigit())
    old, new = versions[-1], versions[-1] + 1
    settle = ctx.phase(0.5, 3.0)
    with ctx.gateway() as gateway:
        latest = LoadLoop(gateway.url, threads=2, rate=ctx.rate / 2)
        stable = LoadLoop(
            gateway.url, path="/predict?version_label=stable", threads=2, rate=ctx.rate / 2
        )
        latest.start()
        stable.start()
        try:
            time.sleep(settle)
            # 1. A new version appears on disk: unlabelled requests move to it.
            started = time.monotonic()
            ctx.new_version(ctx.models_dir, MODEL, new)
            exported = time.monotonic()
            t_new = wait_for_sample(
                latest, lambda s: s.version == new, exported, SWITCH_TIMEOUT_SECONDS
            )
            # 2. Promote: "stable" -> new.
            time.sleep(settle)
            moved = time.monotonic()
            write_atomically(ctx.config_file, model_config_text(stable=new, canary=new))
            t_promote = wait_for_sample(
                stable, lambda s: s.version == new, moved, SWITCH_TIMEOUT_SECONDS
            )
            # 3. Roll back by label: "stable" -> old.
            time.sleep(settle)
            moved = time.monotonic()
            write_atomically(ctx.config_file, model_config_text(stable=old, canary=new))
            t_label_back = wait_for_sample(
                stable, lambda s: s.version == old, moved, SWITCH_TIMEOUT_SECONDS
            )
            # 4. Roll back by removing the version: unlabelled requests return to old.
            time.sleep(settle)
            removed = time.monotonic()
            remove_version(ctx.models_dir, MODEL, new)
            t_removed = wait_for_sample(
                latest, lambda s: s.version == old, removed, SWITCH_TIMEOUT_SECONDS
            )
            time.sleep(settle)
        finally:
            samples = latest.stop() + stable.stop()
    # Leave the config as found for the next scenario.
    write_atomically(ctx.config_file, model_config_text(stable=old, canary=new))

    result.samples = samples
    result.events = {"exported": exported, "removed": removed}
    figs = figures(samples)
    result.sent, result.failures = figs.sent, figs.failures
    result.max_seconds, result.p99_seconds = figs.max_seconds, figs.p99_seconds
    steps = {
        f"v{new} answers": t_new,
        f"stable->v{new}": t_promote,
        f"stable->v{old}": t_label_back,
        f"rm v{new}->v{old}": t_removed,
    }
    result.key = ", ".join(f"{k} {ms(v) if v is not None else 'never'}" for k, v in steps.items())
    result.notes.append(f"export of v{new} took {exported - started:.1f} s (measured from its end)")
    result.check(
        figs.failures == 0, f"{figs.failures} failed requests: {describe_failures(samples)}"
    )
    for step, seconds in steps.items():
        result.check(seconds is not None, f"{step}: not seen within {SWITCH_TIMEOUT_SECONDS:.0f} s")
    late_old = [
        s
        for s in latest.samples
        if t_new is not None
        and s.start > exported + t_new + 1.0
        and s.start < removed
        and s.version == old
    ]
    result.check(not late_old, f"{len(late_old)} unlabelled answers from v{old} after the switch")
    return result
