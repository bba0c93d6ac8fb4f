"""Turn locust's CSV files into ``summary.md`` and a latency-over-time PNG.

Reads ``<prefix>_stats.csv`` (totals per endpoint) and ``<prefix>_stats_history.csv`` (one row
per second and endpoint with --csv-full-history). Locust rounds response times for its
percentiles (to 1 ms below 100 ms, 10 ms below 1 s), so sub-millisecond differences vanish.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ReportError(Exception):
    """Locust's CSV files are missing or not in the expected format."""


@dataclass(frozen=True)
class EndpointStats:
    type: str
    name: str
    requests: int
    failures: int
    rps: float
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    max: float | None
    average: float | None

    @property
    def is_total(self) -> bool:
        return self.name == "Aggregated"


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None  # locust writes "N/A" for endpoints without requests
    return number if math.isfinite(number) else None


def _rows(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise ReportError(f"{path}: missing columns {', '.join(missing)}")
            return list(reader)
    except FileNotFoundError:
        raise ReportError(f"{path}: not written (did locust start?)") from None


def read_stats(path: Path) -> list[EndpointStats]:
    """Per-endpoint totals, the ``Aggregated`` row last."""
    columns = ("Type", "Name", "Request Count", "Failure Count", "Requests/s", "50%", "90%")
    columns += ("95%", "99%", "100%", "Average Response Time")
    stats = []
    for row in _rows(path, columns):
        stats.append(
            EndpointStats(
                type=row["Type"],
                name=row["Name"],
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                rps=_number(row["Requests/s"]) or 0.0,
                p50=_number(row["50%"]),
                p90=_number(row["90%"]),
                p95=_number(row["95%"]),
                p99=_number(row["99%"]),
                max=_number(row["100%"]),
                average=_number(row["Average Response Time"]),
            )
        )
    if not stats or not stats[-1].is_total:
        raise ReportError(f"{path}: no Aggregated row")
    return stats


def read_failures(path: Path) -> list[dict[str, str]]:
    """Locust's failures CSV: Method, Name, Error, Occurrences (empty when all went well)."""
    if not path.exists():
        return []
    return _rows(path, ("Method", "Name", "Error", "Occurrences"))


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def stats_table(stats: Sequence[EndpointStats]) -> str:
    """A Markdown table (also readable as plain text) of the per-endpoint numbers."""
    header = (
        "| endpoint | requests | failures | req/s | p50 ms | p90 ms | p95 ms | p99 ms | max ms |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in stats:
        name = "**all**" if s.is_total else f"{s.type} {s.name}"
        lines.append(
            f"| {name} | {s.requests} | {s.failures} | {s.rps:.1f} | {_ms(s.p50)} | {_ms(s.p90)} "
            f"| {_ms(s.p95)} | {_ms(s.p99)} | {_ms(s.max)} |"
        )
    return "\n".join(lines)


def summary_markdown(
    settings: dict[str, Any],
    stats: Sequence[EndpointStats],
    resources: dict[str, Any],
    failures: Sequence[dict[str, str]],
) -> str:
    """The whole summary.md."""
    out = [f"# Load test {settings.get('started', '')}", "", "## Results", "", stats_table(stats)]
    if failures:
        out += ["", "## Failures", "", "| endpoint | error | occurrences |", "|---|---|---:|"]
        for f in failures:
            error = f["Error"].replace("|", "\\|").replace("\n", " ")[:200]
            out.append(f"| {f['Method']} {f['Name']} | {error} | {f['Occurrences']} |")
    out += ["", "## Settings", "", "| setting | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in settings.items()]
    out += ["", "## CPU (client and server share this machine)", "", "| measure | value |"]
    out += ["|---|---|"] + [f"| {k} | {v} |" for k, v in resources.items()]
    out += [
        "",
        "Latency over time: `latency.png`; locust's own report: `report.html`; raw numbers: "
        "`locust_stats.csv`, `locust_stats_history.csv`, `locust_failures.csv`.",
        "",
    ]
    return "\n".join(out)


def plot_history(history_csv: Path, png_path: Path, title: str = "") -> None:
    """p50/p95/p99 and requests/s over time, for all endpoints together (Aggregated rows)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: works headless and in CI
    import matplotlib.pyplot as plt

    rows = [
        r
        for r in _rows(history_csv, ("Timestamp", "Name", "Requests/s", "50%", "95%", "99%"))
        if r["Name"] == "Aggregated"
    ]
    if not rows:
        raise ReportError(f"{history_csv}: no Aggregated rows to plot")
    start = int(rows[0]["Timestamp"])
    seconds = [int(r["Timestamp"]) - start for r in rows]
    fig, (ax_latency, ax_rate) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    started = [(_number(r.get("Total Request Count", "1")) or 0) > 0 for r in rows]
    for column, label in (("50%", "p50"), ("95%", "p95"), ("99%", "p99")):
        # Before the first answer locust writes 0 or N/A: leave a gap rather than a fake 0 ms.
        values = [_number(r[column]) if ok else None for r, ok in zip(rows, started, strict=True)]
        ax_latency.plot(seconds, [math.nan if v is None else v for v in values], label=label)
    ax_latency.set_ylabel("response time (ms)")
    ax_latency.set_ylim(bottom=0)
    ax_latency.legend(loc="upper left")
    ax_latency.grid(alpha=0.3)
    ax_latency.set_title(title or "latency (locust's 10 s sliding window) and throughput")
    users = [_number(r.get("User Count", "")) for r in rows]
    ax_rate.plot(seconds, [_number(r["Requests/s"]) or 0.0 for r in rows], color="tab:green")
    ax_rate.set_ylabel("requests/s")
    ax_rate.set_xlabel("seconds since start")
    ax_rate.set_ylim(bottom=0)
    ax_rate.grid(alpha=0.3)
    if any(u is not None for u in users):
        ax_users = ax_rate.twinx()
        ax_users.plot(seconds, [u or 0 for u in users], color="tab:gray", linestyle=":")
        ax_users.set_ylabel("users", color="tab:gray")
        ax_users.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
