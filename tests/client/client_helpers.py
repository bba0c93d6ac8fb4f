"""Helpers shared by the client tests. tests/client has no __init__.py (it would be imported
as a package named ``client`` and shadow the real one), so this module has a unique name."""

from __future__ import annotations

from dataclasses import dataclass

HOUSING_ROW = {
    "MedInc": 8.3252,
    "HouseAge": 41.0,
    "AveRooms": 6.984127,
    "AveBedrms": 1.02381,
    "Population": 322.0,
    "AveOccup": 2.555556,
    "Latitude": 37.88,
    "Longitude": -122.23,
}


@dataclass
class Result:
    code: int
    out: str
    err: str


def assert_one_line_error(result: Result, code: int, *needles: str) -> None:
    assert result.code == code, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
