"""How error messages name user-supplied JSON values, shared by the codecs and the gateway.

User data is quoted cut short, so a hostile value cannot make an error answer (or a log line)
arbitrarily long.
"""

from __future__ import annotations

from typing import Any


def quoted(name: str, limit: int = 40) -> str:
    """A user-supplied name for an error message: repr'd and cut, so messages stay short."""
    return repr(name if len(name) <= limit else name[:limit] + "...")


def json_kind(value: Any) -> str:
    """What a parsed JSON value is, for "expected X, got <kind>" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return type(value).__name__
