"""Fast variants of the reliability scenarios (``make test``): the same code as ``make
reliability`` with short phases and without its latency/memory targets (the test suite makes no
timing assertions; ``hung`` checks use bounds far above any deadline). One model server is
shared by the module, in the order of ``run.SCENARIOS`` (the last one stops it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.reliability.base import Context
from tests.reliability.run import SCENARIOS, scenario


@pytest.fixture(scope="module")
def reliability_ctx(
    models_root: Path,
    export_version: Callable[[Path, str, int], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Context]:
    ctx = Context.create(
        models_root,
        tmp_path_factory.mktemp("reliability"),
        export_version,
        fast=True,
        strict=False,
        rate=40.0,
    )
    ctx.server.start()
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(reliability_ctx: Context, name: str) -> None:
    result = scenario(name)(reliability_ctx)
    assert result.sent > 0
    assert result.passed, f"{name}: " + "; ".join(result.problems) + f" ({result.key})"
