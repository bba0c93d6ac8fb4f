"""``make reliability``: run the fault and load scenarios against the real local stack and print
one table row per scenario; exit 1 if any fails, 2 on a usage/setup problem.

    python -m tests.reliability.run [--models-dir models] [--artifacts-dir artifacts]
        [--soak-seconds 600] [--rate 50] [--only rollout,soak] [--markdown]

The stack runs on free loopback ports from a private copy of ``--models-dir`` (the newest version
of each model becomes version 1). New versions for the rollout come from ``--artifacts-dir``
(``training.export.export_model``, no retraining) when it has the trained models, else from a
copy of version 1 (the card says so).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.reliability.base import Context, Result

#: Run order matters: the scenarios share one model server and the last one stops it.
SCENARIOS = ("rollout", "slow_backend", "overload", "soak", "backend_down", "shutdown")


def scenario(name: str) -> Callable[[Context], Result]:
    return importlib.import_module(f"tests.reliability.{name}").run


# The rollout's export imports TensorFlow here; its C++ start-up chatter is not a result.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def version_maker(artifacts_dir: Path) -> Callable[[Path, str, int], Path]:
    """Export from trained artifacts when present, else copy the newest version (fallback)."""

    def make(models_dir: Path, name: str, version: int) -> Path:
        if (artifacts_dir / name / "model.keras").is_file():
            from training.export import export_model

            return export_model(name, artifacts_dir, models_dir, version)
        base = models_dir / name
        newest = max(int(p.name) for p in base.iterdir() if p.name.isdigit())
        tmp = base / f".copy-{version}"
        shutil.copytree(base / str(newest), tmp)
        card = tmp / "assets.extra" / "model_card.json"
        if card.is_file():
            data = json.loads(card.read_text())
            data["version"] = version
            data["note"] = f"copy of version {newest} made by tests.reliability"
            card.write_text(json.dumps(data, indent=2) + "\n")
        return Path(shutil.move(tmp, base / str(version)))

    return make


def dump(result: Result, directory: Path) -> None:
    """CSV of the scenario's requests, times in seconds from its first request; events as
    comment lines (when a fault was injected)."""
    directory.mkdir(parents=True, exist_ok=True)
    origin = min((s.start for s in result.samples), default=0.0)
    lines = [
        f"# {name} {at - origin:.3f}"
        for name, at in sorted(result.events.items(), key=lambda item: item[1])
    ]
    lines.append("start,seconds,status,version,retry_after,error")
    for s in sorted(result.samples, key=lambda item: item.start):
        error = (s.error or "").replace(",", ";")
        lines.append(
            f"{s.start - origin:.4f},{s.seconds:.4f},{s.status},{s.version or ''},"
            f"{s.retry_after or ''},{error}"
        )
    (directory / f"{result.name}.csv").write_text("\n".join(lines) + "\n")


def table(results: Sequence[Result], *, markdown: bool = False) -> str:
    head = ("scenario", "sent", "failures", "max", "p99", "key figure", "result")
    rows = [
        (
            r.name,
            str(r.sent),
            str(r.failures),
            f"{r.max_seconds * 1000:.0f} ms",
            f"{r.p99_seconds * 1000:.0f} ms",
            r.key,
            "PASS" if r.passed else "FAIL",
        )
        for r in results
    ]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in (head, *rows)) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (head, *rows)
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.reliability.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path("models"),
        help="exported models to copy (default: models)",
    )
    parser.add_argument(
        "--artifacts-dir",
        type=Path,
        default=Path("artifacts"),
        help="trained models for the rollout's new version (default: artifacts)",
    )
    parser.add_argument(
        "--soak-seconds", type=float, default=600.0, help="soak duration in seconds (default 600)"
    )
    parser.add_argument(
        "--rate", type=float, default=50.0, help="steady load in requests/s (default 50)"
    )
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--dump",
        type=Path,
        default=None,
        help="write every request of each scenario to DIR/<scenario>.csv",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        parser.error(
            f"unknown scenario {unknown[0] if unknown else '(none)'!r}; "
            f"choose from {', '.join(SCENARIOS)}"
        )
    if args.soak_seconds < 10 or args.rate <= 0:
        parser.error("--soak-seconds must be >= 10 and --rate > 0")
    args.names = [n for n in SCENARIOS if n in names]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for name in ("fashion_mnist", "housing"):
        if not any(p.name.isdigit() for p in (args.models_dir / name).glob("*")):
            print(
                f"reliability: {args.models_dir / name} has no exported version; "
                f"run `make train export` first",
                file=sys.stderr,
            )
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="reliability-"))
    ctx = Context.create(
        args.models_dir,
        workdir,
        version_maker(args.artifacts_dir.resolve()),
        soak_seconds=args.soak_seconds,
        rate=args.rate,
    )
    results: list[Result] = []
    try:
        for name in args.names:
            print(f"-- {name} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                result = scenario(name)(ctx)
            except Exception as exc:  # one broken scenario must not hide the others' figures
                result = Result(name, problems=[f"crashed: {type(exc).__name__}: {exc}"])
            results.append(result)
            if args.dump:
                dump(result, args.dump)
            print(
                f"   {'PASS' if result.passed else 'FAIL'} in {time.monotonic() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            for line in result.notes:
                print(f"   note: {line}", file=sys.stderr)
            for line in result.problems:
                print(f"   problem: {line}", file=sys.stderr)
    finally:
        ctx.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(table(results, markdown=args.markdown))
    if args.dump:
        (args.dump / "table.md").write_text(table(results, markdown=True) + "\n")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
