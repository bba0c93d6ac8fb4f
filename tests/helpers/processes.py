"""Stopping the servers the tests start, one way for every launcher."""

from __future__ import annotations

import signal
import subprocess


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM (the servers' graceful shutdown), wait; SIGKILL if it does not exit.

    Returns the exit code.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)
