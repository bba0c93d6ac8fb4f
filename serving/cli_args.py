"""Command-line parsing shared by every program of the project (model server, clients,
training, benchmarks, load tests): a usage error is one line, not a usage dump."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def int_in_range(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in ``minimum..maximum`` (no upper bound when ``maximum`` is
    None); every program words the refusal the same way, naming the range."""
    span = f">= {minimum}" if maximum is None else f"{minimum}..{maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer {span}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected an integer {span}, got {text!r}")
        return value

    return parse


def float_in_range(
    minimum: float,
    maximum: float = math.inf,
    *,
    above_minimum: bool = False,
    what: str = "a number",
) -> Callable[[str], float]:
    """argparse type: a finite number >= ``minimum`` (> with ``above_minimum``) and below
    ``maximum``; nan and infinities are refused. ``what`` names it in the message ("seconds")."""

    def bound(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    span = f"{'>' if above_minimum else '>='} {bound(minimum)}"
    if maximum != math.inf:
        span += f" and < {bound(maximum)}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} {span}, got {text!r}") from None
        low_ok = value > minimum if above_minimum else value >= minimum
        if not (low_ok and value < maximum and math.isfinite(value)):  # also refuses nan
            raise argparse.ArgumentTypeError(f"expected {what} {span}, got {text!r}")
        return value

    return parse
