"""Model server fixtures: one plain server per session (read-only tests share it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.modelserver_process import ModelServerProcess, running_modelserver


@pytest.fixture(scope="session")
def modelserver(models_root: Path) -> Iterator[ModelServerProcess]:
    """``python -m serving.modelserver`` without batching over ``models_root`` (v1 of both)."""
    with running_modelserver(models_root) as server:
        yield server
