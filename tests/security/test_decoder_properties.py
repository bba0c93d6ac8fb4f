"""Property tests of the input decoders on hostile data (the JSON codec of the model server has its
own in tests/shared/test_tfs_json.py; the JSON-pixel fast path in tests/gateway/test_parsing.py).

Whatever the bytes or JSON, each decoder either returns what its contract promises or raises its
own error type (CodecError / ApiError) — never another exception, which would become a 500.
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from serving import protos
from serving.codecs import CodecError
from serving.codecs.images import IMAGE_FORMATS, decode_image, pixels_to_batch, pixels_to_image
from serving.codecs.tensors import tensor_proto_to_ndarray
from serving.gateway.errors import ApiError
from serving.gateway.parsing import (
    PARAMETERS,
    Params,
    housing_inputs,
    images_from_json,
    parse_json_object,
    parse_params,
)
from training.data.housing import DEEP_FEATURES, FEATURE_NAMES, WIDE_FEATURES

SETTINGS = settings(
    max_examples=int(os.environ.get("SECURITY_PROPERTY_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)


def _sample(fmt: str) -> bytes:
    rng = np.random.default_rng(len(fmt))
    image = Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8))
    if fmt == "JPEG":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


SAMPLES = {fmt: _sample(fmt) for fmt in IMAGE_FORMATS}


def _check_image(result: np.ndarray) -> None:
    assert result.dtype == np.uint8 and result.shape == (28, 28)


# -- images ------------------------------------------------------------------------------------


@SETTINGS
@given(data=st.binary(max_size=2048), invert=st.sampled_from(["auto", "always", "never"]))
def test_decode_image_on_arbitrary_bytes(data: bytes, invert: str) -> None:
    with contextlib.suppress(CodecError):
        _check_image(decode_image(data, invert=invert, max_pixels=1_000_000))


@SETTINGS
@given(
    fmt=st.sampled_from(IMAGE_FORMATS),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.none() | st.integers(1, 10**6),
)
def test_decode_image_on_corrupted_real_images(fmt: str, edits, cut) -> None:
    """Real files with flipped bytes (headers included) and truncations."""
    data = bytearray(SAMPLES[fmt])
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    with contextlib.suppress(CodecError):
        _check_image(decode_image(bytes(data), max_pixels=1_000_000))


@SETTINGS
@given(
    fmt=st.sampled_from(["PNG", "GIF", "BMP", "TIFF"]),
    width=st.integers(1, 2**16 - 1),
    height=st.integers(1, 2**16 - 1),
)
def test_declared_size_beyond_the_limit_is_always_refused(fmt: str, width: int, height: int):
    """Rewrite a small real image's header to claim width x height: beyond the pixel limit it must
    be refused (CodecError) however the header lies, and no decode of that size may happen."""
    image = Image.new("L", (min(width, 64), min(height, 64)))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    data = bytearray(buffer.getvalue())
    if fmt == "PNG":
        data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    elif fmt == "GIF":
        data[6:10] = width.to_bytes(2, "little") + height.to_bytes(2, "little")
    elif fmt == "BMP":
        data[18:26] = width.to_bytes(4, "little") + height.to_bytes(4, "little")
    limit = 1_000_000
    try:
        result = decode_image(bytes(data), max_pixels=limit)
    except CodecError:
        return
    _check_image(result)
    # Accepted only if what Pillow saw is within the limit (e.g. the TIFF header was not edited).
    assert fmt == "TIFF" or width * height <= limit


# -- JSON pixels -------------------------------------------------------------------------------

_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=4)
)
_JSON = st.recursive(
    _LEAVES,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(
            st.sampled_from(["b64", "x", "wide", "deep", "MedInc"]), children, max_size=3
        )
    ),
    max_leaves=40,
)


def _near_image(rows: int, cols: int, edits: list[tuple[int, int, object]]) -> list[list[object]]:
    image: list[list[object]] = [[0] * cols for _ in range(rows)]
    for row, col, value in edits:
        image[row % rows][col % cols] = value
    return image


# Almost-valid images (cheap to generate): 27..29 rows of 27..29 zeros with a few hostile cells.
_NEAR_IMAGES = st.builds(
    _near_image,
    st.sampled_from([28, 28, 28, 27, 29]),
    st.sampled_from([28, 28, 28, 27, 29]),
    st.lists(st.tuples(st.integers(0, 28), st.integers(0, 28), _LEAVES), max_size=3),
)


@SETTINGS
@given(value=_JSON | _NEAR_IMAGES)
def test_pixels_to_image_on_arbitrary_json(value) -> None:
    try:
        result = pixels_to_image(value, where="instance 0")
    except CodecError as exc:
        assert "instance 0" in str(exc)
        return
    _check_image(result)


@SETTINGS
@given(instances=st.lists(_JSON | _NEAR_IMAGES, max_size=4), check_bools=st.booleans())
def test_pixels_to_batch_on_arbitrary_json(instances, check_bools: bool) -> None:
    try:
        result = pixels_to_batch(instances, check_bools=check_bools)
    except CodecError:
        return
    assert result.dtype == np.uint8 and result.shape == (len(instances), 28, 28)
    if check_bools:
        # The vectorised batch accepts exactly what the per-instance strict path accepts.
        for index, value in enumerate(instances):
            assert np.array_equal(pixels_to_image(value), result[index])


# -- the gateway's request parsing ---------------------------------------------------------------

_PARAM_VALUES = _LEAVES | st.lists(_LEAVES, max_size=2)
_DOCUMENTS = st.fixed_dictionaries(
    {"instances": st.lists(_JSON | _NEAR_IMAGES, max_size=3)},
    optional={name: _PARAM_VALUES for name in PARAMETERS} | {"extra": _LEAVES},
)


@SETTINGS
@given(document=_DOCUMENTS | _JSON)
def test_gateway_parsing_raises_only_api_errors(document) -> None:
    body = json.dumps(document, allow_nan=True).encode()
    try:
        parsed = parse_json_object(body, ("instances", *PARAMETERS))
        params = parse_params({}, parsed)
        images = images_from_json(parsed, body, params, max_pixels=1_000_000)
    except (ApiError, CodecError) as exc:
        status = getattr(exc, "status", 400)
        assert 400 <= status < 500
        return
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)


@SETTINGS
@given(
    query=st.dictionaries(
        st.sampled_from([*PARAMETERS, "topk", "\u0442op_k"]), st.text(max_size=8)
    ),
)
def test_query_parameters_raise_only_api_errors(query) -> None:
    try:
        params = parse_params(query, {})
    except ApiError as exc:
        assert exc.status == 400
        return
    assert isinstance(params, Params)
    if params.version is not None:
        assert params.version >= 1 and query["version"].strip().lstrip("+").isascii()
    if params.version_label is not None:
        assert params.version_label.isascii() and "." not in params.version_label


@SETTINGS
@given(instances=st.lists(_JSON, max_size=3), with_card=st.booleans())
def test_housing_inputs_raise_only_api_errors(instances, with_card: bool) -> None:
    card = {"wide": WIDE_FEATURES, "deep": DEEP_FEATURES} if with_card else None
    try:
        inputs = housing_inputs(instances, card, FEATURE_NAMES if with_card else None)
    except ApiError as exc:
        assert exc.status in (400, 500)  # 500 only: named features without a model card
        assert exc.status == 400 or not with_card
        return
    for array in inputs.values():
        assert array.dtype == np.float32 and np.isfinite(array).all()


# -- TensorProtos (what the model server's gRPC API decodes) -----------------------------------

_DTYPES = st.sampled_from([1, 2, 3, 4, 5, 6, 7, 9, 10, 14, 17, 19, 0, 8, 20, 99])


@SETTINGS
@given(
    dtype=_DTYPES,
    dims=st.lists(st.integers(-3, 2**40), max_size=5),
    content=st.binary(max_size=256),
    floats=st.lists(st.floats(allow_nan=True), max_size=8),
    strings=st.lists(st.binary(max_size=8), max_size=4),
    unknown_rank=st.booleans(),
)
def test_tensor_proto_decoding_raises_only_codec_errors(
    dtype, dims, content, floats, strings, unknown_rank
) -> None:
    proto = protos.TensorProto(dtype=dtype, tensor_content=content)
    proto.float_val.extend(floats)
    proto.string_val.extend(strings)
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_shape.unknown_rank = unknown_rank
    try:
        array = tensor_proto_to_ndarray(proto)
    except CodecError:
        return
    assert array.shape == tuple(dims) or array.size <= 1 << 26


def test_corrupted_samples_cover_every_format() -> None:
    """The corruption test above starts from a real, decodable file of each format."""
    for data in SAMPLES.values():
        _check_image(decode_image(data))


@pytest.mark.parametrize("body", [b"[" * 10**5, b'{"instances": ' + b"[" * 10**5])
def test_deep_json_is_an_api_error(body: bytes) -> None:
    with pytest.raises(ApiError) as raised:
        parse_json_object(body, ("instances",))
    assert raised.value.status == 400 and raised.value.code == "invalid_json"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
