"""The argparse types every program shares: bounds are inclusive/exclusive as documented and
a refusal names the range and what was given."""

from __future__ import annotations

import argparse
import re

import pytest

from serving.cli_args import float_in_range, int_in_range


def test_int_in_range_bounds_are_inclusive() -> None:
    parse = int_in_range(1, 3)
    assert [parse("1"), parse("3"), parse(" 2 ")] == [1, 3, 2]
    for text in ("0", "4", "1.0", "x", ""):
        with pytest.raises(
            argparse.ArgumentTypeError, match=re.escape(f"expected an integer 1..3, got {text!r}")
        ):
            parse(text)


def test_int_in_range_without_maximum() -> None:
    parse = int_in_range(0)
    assert parse(str(2**80)) == 2**80
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer >= 0, got '-1'"):
        parse("-1")


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "0", "1e6", "abc"])
def test_float_in_range_refuses_non_finite_and_out_of_range(text: str) -> None:
    parse = float_in_range(0, 1e6, above_minimum=True, what="seconds")
    with pytest.raises(
        argparse.ArgumentTypeError,
        match=re.escape(f"expected seconds > 0 and < 1000000, got {text!r}"),
    ):
        parse(text)


def test_float_in_range_accepts_the_inclusive_minimum() -> None:
    assert float_in_range(0)("0") == 0.0
    assert float_in_range(0, above_minimum=True)("0.001") == 0.001
    with pytest.raises(
        argparse.ArgumentTypeError, match=re.escape("expected a number >= 0.5, got '0.4'")
    ):
        float_in_range(0.5)("0.4")
