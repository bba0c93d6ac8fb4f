"""A short headless locust run (``python -m tests.load.run``) against the session's live stack:
every user class sends requests, none fails, and the report files exist and parse."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from tests.load import report
from tests.load.names import CLASSES_BY_TARGET, ENTRY_BY_CLASS

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_short_headless_run_reports_every_user_class(live_stack, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "tests.load.run", "--target", "all", "--users", "4",
        "--spawn-rate", "4", "--duration", "3s", "--stop-timeout", "1", "--start-stack", "never",
        "--gateway-url", live_stack.gateway_url, "--grpc", live_stack.grpc_target,
        "--reports-dir", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (out_dir,) = tmp_path.iterdir()  # reports/loadtest/<timestamp>/

    stats = report.read_stats(out_dir / "locust_stats.csv")
    by_name = {s.name: s for s in stats}
    for user_class in CLASSES_BY_TARGET["all"]:
        entry = by_name[ENTRY_BY_CLASS[user_class]]
        assert entry.requests > 0, user_class
        assert entry.failures == 0, user_class
    assert by_name["Aggregated"].requests == sum(s.requests for s in stats if not s.is_total)
    assert report.read_failures(out_dir / "locust_failures.csv") == []

    with (out_dir / "locust_stats_history.csv").open() as f:
        history = list(csv.DictReader(f))
    assert any(
        row["Name"] == "Aggregated" and int(row["Total Request Count"]) > 0 for row in history
    )

    summary = (out_dir / "summary.md").read_text()
    for user_class in CLASSES_BY_TARGET["all"]:
        assert ENTRY_BY_CLASS[user_class] in summary
    assert "load generator (locust) CPU" in summary and "load average" in summary
    assert (out_dir / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out_dir / "report.html").stat().st_size > 0
    # The table printed at the end is the summary's.
    assert report.stats_table(stats) in done.stdout
