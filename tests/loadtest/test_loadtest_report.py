"""The load-test report code and run.py's argument handling, on small hand-made CSV files."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest

from tests.load import report
from tests.load.run import parse_args, parse_timespan

PERCENTILES = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]
STATS_COLUMNS = [
    "Type", "Name", "Request Count", "Failure Count", "Median Response Time",
    "Average Response Time", "Min Response Time", "Max Response Time", "Average Content Size",
    "Requests/s", "Failures/s", *PERCENTILES,
]  # fmt: skip
HISTORY_COLUMNS = [
    "Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", *PERCENTILES,
    "Total Request Count", "Total Failure Count",
]  # fmt: skip


def write_csv(path: Path, columns: list[str], rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, restval="0")
        writer.writeheader()
        writer.writerows(rows)
    return path


def stats_row(name: str, requests: int, failures: int, p50: object, p99: object) -> dict:
    row = {"Type": "POST" if name != "Aggregated" else "", "Name": name}
    row.update({"Request Count": requests, "Failure Count": failures, "Requests/s": 12.5})
    row.update({p: p50 for p in PERCENTILES[:4]})
    row.update({p: p99 for p in PERCENTILES[4:]})
    row["Average Response Time"] = p50
    return row


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("60s", 60), ("1m30s", 90), ("2m", 120), ("1h", 3600)]
)
def test_parse_timespan(text: str, seconds: int) -> None:
    assert parse_timespan(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "s", "-5", "1.5m"])
def test_parse_timespan_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_timespan(text)


def test_parse_args_checks_users_per_class() -> None:
    assert parse_args(["--target", "all", "--users", "4"]).users == 4
    with pytest.raises(SystemExit):
        parse_args(["--target", "all", "--users", "3"])  # one user per class at least
    with pytest.raises(SystemExit):
        parse_args(["--duration", "0s"])


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--spawn-rate", "nan"], "--spawn-rate: expected users per second > 0, got 'nan'"),
        (["--spawn-rate", "inf"], "--spawn-rate: expected users per second > 0, got 'inf'"),
        (["--ready-timeout", "-1"], "--ready-timeout: expected seconds > 0, got '-1'"),
        (["--ready-timeout", "nan"], "--ready-timeout: expected seconds > 0, got 'nan'"),
        (["--users", "abc"], "--users: expected an integer >= 1, got 'abc'"),
        (["--users", "0"], "--users: expected an integer >= 1, got '0'"),
        (["--batch", "-2"], "--batch: expected an integer >= 1, got '-2'"),
        (["--stop-timeout", "-1"], "--stop-timeout: expected an integer >= 0, got '-1'"),
        (["--duration", "0s"], "--duration must be at least 1 s"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_parse_args_refuses_in_one_line(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and fragment in err, err


def test_read_stats_and_table(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "s.csv",
        STATS_COLUMNS,
        [
            stats_row("/predict", 100, 2, 5, 40),
            stats_row("/idle", 0, 0, "N/A", "N/A"),
            stats_row("Aggregated", 100, 2, 5, 40),
        ],
    )
    stats = report.read_stats(path)
    assert [s.name for s in stats] == ["/predict", "/idle", "Aggregated"]
    assert stats[0].failures == 2 and stats[0].p99 == 40 and stats[1].p50 is None
    assert stats[-1].is_total and not stats[0].is_total
    table = report.stats_table(stats)
    assert "| POST /predict | 100 | 2 | 12.5 | 5.0 |" in table
    assert "| POST /idle | 0 | 0 | 12.5 | n/a |" in table
    assert "**all**" in table


def test_read_stats_errors(tmp_path: Path) -> None:
    with pytest.raises(report.ReportError, match="not written"):
        report.read_stats(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("Type,Name\nPOST,/x\n")
    with pytest.raises(report.ReportError, match="missing columns"):
        report.read_stats(bad)
    no_total = write_csv(tmp_path / "n.csv", STATS_COLUMNS, [stats_row("/p", 1, 0, 1, 1)])
    with pytest.raises(report.ReportError, match="Aggregated"):
        report.read_stats(no_total)


def test_summary_lists_failures_and_settings(tmp_path: Path) -> None:
    stats = report.read_stats(
        write_csv(
            tmp_path / "s.csv",
            STATS_COLUMNS,
            [stats_row("/p", 3, 1, 1, 2), stats_row("Aggregated", 3, 1, 1, 2)],
        )
    )
    failures = [{"Method": "POST", "Name": "/p", "Error": "HTTP 503: a|b", "Occurrences": "1"}]
    text = report.summary_markdown({"users": 4}, stats, {"load average": "1.0"}, failures)
    assert "| POST /p | HTTP 503: a\\|b | 1 |" in text
    assert "| users | 4 |" in text and "| load average | 1.0 |" in text


def test_plot_history(tmp_path: Path) -> None:
    rows = []
    for t in range(5):
        for name in ("/p", "Aggregated"):
            row = {"Timestamp": 1000 + t, "User Count": 4, "Name": name, "Requests/s": 10 * t}
            row.update({p: ("N/A" if t == 0 else 3 + t) for p in PERCENTILES})
            row["Total Request Count"] = 10 * t
            rows.append(row)
    history = write_csv(tmp_path / "h.csv", HISTORY_COLUMNS, rows)
    png = tmp_path / "latency.png"
    report.plot_history(history, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = write_csv(tmp_path / "e.csv", HISTORY_COLUMNS, [])
    with pytest.raises(report.ReportError, match="Aggregated"):
        report.plot_history(empty, tmp_path / "none.png")
