"""Fast path for big JSON pixel batches: ``{"instances": [[[0..255 ints]]]}`` bytes -> uint8.

``orjson.loads`` turns a 256-image body (730 kB) into 200k Python ints and numpy then walks
them again; together ≈ half of the gateway's CPU for such a request (docs/performance.md).
Here the ``instances`` array is read straight from the bytes with a few vectorised passes.

It only accepts what it can prove is the plain form, and answers ``None`` for anything else
(floats, negative or > 255 values, other layouts, escapes, malformed JSON, ...), so callers fall
back to the general path, which words the errors. When it answers, ``orjson.loads(body)``
succeeds and gives the same images and the same other fields (tests/shared/test_json_pixels.py).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import orjson

IMAGE_SIDE = 28
_KEY = b'"instances"'
_AFTER_KEY = re.compile(rb"[ \t\n\r]*:[ \t\n\r]*\[")

_SPACES = b" \t\n\r"
_SPACE_BYTES = tuple(bytes([space]) for space in _SPACES)


def split_pixel_instances(body: bytes) -> tuple[dict[str, Any], np.ndarray] | None:
    """``(the JSON object without "instances", uint8 [N, 28, 28])`` when ``body`` is a JSON
    object whose ``instances`` are images of 28x28 or 784 integers in 0..255; else ``None``."""
    start = _instances_start(body)
    if start is None:
        return None
    # Taken to end at the body's last "]" (usual: nothing but scalars follow the images). If
    # that is wrong, the span holds a quote or is no single array, and _pixels says None.
    end = body.rfind(b"]") + 1
    if end <= start:
        return None
    pixels = _pixels(body[start:end])
    if pixels is None:
        return None
    rest = body[:start] + b"[]" + body[end:]
    if b"\\" in rest:  # an escaped key could be a second "instances"; let the full parser decide
        return None
    try:
        document = orjson.loads(rest)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or document.get("instances") != []:
        return None
    del document["instances"]
    return document, pixels


def _instances_start(body: bytes) -> int | None:
    first = body.find(_KEY)
    if first < 0 or body.find(_KEY, first + 1) >= 0:
        return None
    after = _AFTER_KEY.match(body, first + len(_KEY))
    return None if after is None else after.end() - 1


def _pixels(text: bytes) -> np.ndarray | None:
    """``text``: from the "[" of ``instances`` to the body's last "]"; the images when that is
    exactly one array of the plain form, else None."""
    compact = text
    if any(space in text for space in _SPACE_BYTES):  # a memchr each; translate costs more
        compact = text.translate(None, _SPACES)
        if _splits_a_number(text):
            return None  # "7 7" would read as 77
    chars = np.frombuffer(compact, dtype=np.uint8)
    digit = (chars - np.uint8(ord("0"))) < 10
    opens, closes, commas = chars == ord("["), chars == ord("]"), chars == ord(",")
    if not (digit | opens | closes | commas).all():
        return None  # "-", ".", "e", quotes, letters: not the plain form
    # JSON's grammar for nested arrays of numbers, as the pairs of characters it forbids.
    now, after = slice(None, -1), slice(1, None)
    if (
        (opens[now] & commas[after])
        | (digit[now] & opens[after])
        | (closes[now] & (opens[after] | digit[after]))
        | (commas[now] & (commas[after] | closes[after]))
    ).any():
        return None
    starts = digit.copy()
    starts[1:] &= ~digit[:-1]
    if (starts[:-1] & (chars[:-1] == ord("0")) & digit[1:]).any():
        return None  # a leading zero: not JSON
    if (digit[:-3] & digit[1:-2] & digit[2:-1] & digit[3:]).any():
        return None  # a number > 999: the general path words the error
    ends = np.flatnonzero(digit[:-1] & ~digit[1:])  # the last character is "]"
    values = _numbers(compact, ends)
    if not len(values) or values.max() > 255:
        return None
    images = _layout(chars, opens | closes, ends)
    if images is None:
        return None
    return values.astype(np.uint8).reshape(images, IMAGE_SIDE, IMAGE_SIDE)


def _splits_a_number(text: bytes) -> bool:
    """Whether a run of whitespace has a digit on both sides (JSON needs a comma there)."""
    chars = np.frombuffer(text, dtype=np.uint8)
    space = (chars == 32) | (chars == 10) | (chars == 13) | (chars == 9)
    digit = (chars - np.uint8(ord("0"))) < 10
    first = np.flatnonzero(space[1:] & ~space[:-1]) + 1  # text[0] is "[", never a space
    last = np.flatnonzero(space[:-1] & ~space[1:])  # the last character is "]"
    return bool((digit[first - 1] & digit[last + 1]).any())


def _numbers(text: bytes, ends: np.ndarray) -> np.ndarray:
    """The value of each number (of at most 3 digits) ending at ``ends``."""
    # Views of the text shifted by one and two characters: at index e they hold the characters
    # before e, so no shifted copy of the (large) index array is needed.
    shifted = np.frombuffer(b"  " + text, dtype=np.uint8)
    # np.take: about twice as fast as fancy indexing for these 200k-element gathers.
    values = np.take(shifted[2:], ends) - np.uint8(ord("0"))
    tens = np.take(shifted[1:-1], ends) - np.uint8(ord("0"))
    hundreds = np.take(shifted[:-2], ends) - np.uint8(ord("0"))
    has_tens = tens < 10  # a digit before the last one (the text starts with "[", not a digit)
    has_hundreds = has_tens & (hundreds < 10)
    return (
        values.astype(np.int16)
        + np.where(has_tens, tens.astype(np.int16) * 10, 0)
        + np.where(has_hundreds, hundreds.astype(np.int16) * 100, 0)
    )


def _layout(chars: np.ndarray, is_bracket: np.ndarray, ends: np.ndarray) -> int | None:
    """The number of images when every image is 28 rows of 28 numbers or one row of 784, and
    numbers appear only in those rows; ``None`` for any other nesting."""
    brackets = np.flatnonzero(is_bracket)
    shape = chars[brackets]
    pattern, inner = shape.tobytes(), len(shape) - 2  # inner: brackets inside the outer array
    per_image = 2 + 2 * IMAGE_SIDE  # "[" + 28 x "[]" + "]"
    if inner % per_image == 0 and pattern == (
        b"[" + (b"[" + b"[]" * IMAGE_SIDE + b"]") * (inner // per_image) + b"]"
    ):
        images, per_row = inner // per_image, IMAGE_SIDE
    elif inner % 2 == 0 and pattern == b"[" + b"[]" * (inner // 2) + b"]":
        images, per_row = inner // 2, IMAGE_SIDE * IMAGE_SIDE
    else:
        return None
    if images == 0 or len(ends) != images * IMAGE_SIDE * IMAGE_SIDE:
        return None
    # Rows are the "[" directly followed by "]" in the bracket pattern: each must hold exactly
    # per_row numbers; with the total above, no number is anywhere else.
    rows = np.flatnonzero((shape[:-1] == ord("[")) & (shape[1:] == ord("]")))
    numbers_before = np.searchsorted(ends, brackets)  # numbers ending before each bracket
    counts = numbers_before[1:][rows] - numbers_before[:-1][rows]
    return images if (counts == per_row).all() else None
