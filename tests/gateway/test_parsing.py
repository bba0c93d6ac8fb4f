"""The JSON fast path (int64 conversion after a raw-body scan) agrees with the strict path."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.codecs import CodecError
from serving.codecs.images import pixels_to_batch
from serving.gateway.parsing import Params, images_from_json, only_integer_pixels


def _body(instances, **fields) -> tuple[bytes, dict]:
    body = orjson.dumps({"instances": instances, **fields})
    return body, orjson.loads(body)


ZERO = [[0] * 28 for _ in range(28)]


def _with(value):
    pixels = [row[:] for row in ZERO]
    pixels[5][7] = value
    return pixels


def test_integers_only_take_the_fast_path():
    assert only_integer_pixels(*_body([ZERO, ZERO]))
    assert only_integer_pixels(*_body([ZERO], top_k=3, version_label="stable", invert="never"))


@pytest.mark.parametrize(
    "leaf", [1.5, 3.0, "12", 5e-1, 1e-7], ids=["float", "whole float", "string", "exp", "tiny"]
)
def test_anything_but_integers_disables_the_fast_path(leaf):
    assert not only_integer_pixels(*_body([ZERO, _with(leaf)]))


def test_escaped_quotes_in_a_label_disable_the_fast_path():
    assert not only_integer_pixels(*_body([ZERO], version_label='a"b'))


LEAVES = st.one_of(
    st.integers(-300, 300),
    st.integers(0, 255),
    st.floats(-1e3, 1e3, allow_nan=False),
    st.sampled_from([0.0, 12.0, 255.0, 1e2]),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)


@given(leaf=LEAVES, row=st.integers(0, 27), col=st.integers(0, 27), label=st.text(max_size=5))
@settings(max_examples=200, deadline=None)
def test_fast_path_never_accepts_what_the_strict_path_refuses(leaf, row, col, label):
    pixels = [row_[:] for row_ in ZERO]
    pixels[row][col] = leaf
    body, document = _body([ZERO, pixels], version_label=label)
    try:
        strict = pixels_to_batch(document["instances"])
    except CodecError as exc:
        strict = exc
    try:
        fast = images_from_json(document, body, Params(), 10**6)
    except CodecError as exc:
        fast = exc
    if isinstance(strict, CodecError):
        assert isinstance(fast, CodecError) and str(fast) == str(strict)
    else:
        assert np.array_equal(fast, strict)
