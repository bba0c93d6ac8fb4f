"""serving/gateway/malloc.py: freed memory stays mapped for the next request (glibc)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from serving.gateway.malloc import keep_freed_memory
from tests.gateway.test_pre_app_errors import load_conf

# In a fresh interpreter: optionally keep freed memory, then allocate and free 20 MiB (touching
# every page) and print how much RSS that left behind, in KiB.
_PROBE = """
import sys
from serving.gateway.malloc import keep_freed_memory
from tests.gateway.test_pre_app_errors import load_conf
keep = int(sys.argv[1])
assert keep_freed_memory(keep) is (keep > 0)

def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

before = rss_kib()
block = bytearray(20 * 1024 * 1024)
block[:] = b"x" * len(block)
del block
print(rss_kib() - before)
"""


def _rss_left_kib(keep_bytes: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(keep_bytes)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt, /proc")
def test_freed_memory_is_kept_only_when_asked():
    # Default glibc: a 20 MiB block is its own mmap and goes back to the kernel when freed.
    assert _rss_left_kib(0) < 4 * 1024
    # Kept: it came from the heap and stays mapped for the next allocation.
    assert _rss_left_kib(64 * 1024 * 1024) > 16 * 1024


def test_zero_changes_nothing_and_out_of_range_is_refused():
    assert keep_freed_memory(0) is False
    for bad in (-1, 2**31):
        with pytest.raises(ValueError, match="keep_bytes must be"):
            keep_freed_memory(bad)


@pytest.mark.parametrize("value", ["-1", "2147483648"])
def test_gunicorn_conf_refuses_an_out_of_range_setting_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path, value: str
) -> None:
    with pytest.raises(SystemExit, match=r"GATEWAY_MALLOC_KEEP_BYTES must be 0\.\.2147483647"):
        load_conf(monkeypatch, tmp_path, GATEWAY_MALLOC_KEEP_BYTES=value)
