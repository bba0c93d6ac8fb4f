"""serving.codecs.tfs_json: TF Serving's REST JSON, both directions, and its errors."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.codecs import CodecError, tfs_json

IMAGES = {"images": np.dtype("uint8")}
HOUSING = {"wide": np.dtype("float32"), "deep": np.dtype("float32")}
STRINGS = {"text": np.dtype(object)}


def decode(body: object, dtypes: dict[str, np.dtype] = IMAGES) -> tfs_json.PredictRequestJson:
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body).encode()
    return tfs_json.decode_predict_request(raw, dtypes)


# -- requests -------------------------------------------------------------------------------


def test_row_format_single_input_batches_instances_as_uint8() -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    request = decode({"instances": images.tolist()})
    assert request.format == tfs_json.ROW
    assert request.signature_name is None
    assert request.inputs["images"].dtype == np.uint8
    np.testing.assert_array_equal(request.inputs["images"], images)


def test_row_format_named_inputs_are_stacked_per_input() -> None:
    rng = np.random.default_rng(1)
    wide, deep = rng.normal(size=(4, 5)), rng.normal(size=(4, 6))
    instances = [{"wide": w.tolist(), "deep": d.tolist()} for w, d in zip(wide, deep, strict=True)]
    request = decode({"instances": instances, "signature_name": "serving_default"}, HOUSING)
    assert request.signature_name == "serving_default"
    assert request.inputs["wide"].dtype == np.float32
    assert request.inputs["wide"].shape == (4, 5)
    assert request.inputs["deep"].shape == (4, 6)
    np.testing.assert_array_equal(request.inputs["deep"], deep.astype(np.float32))


def test_row_format_single_named_input_object_is_accepted() -> None:
    request = decode({"instances": [{"images": [[1, 2], [3, 4]]}]})
    assert request.inputs["images"].shape == (1, 2, 2)


def test_columnar_format_plain_value_and_named_object() -> None:
    plain = decode({"inputs": [[[7]]]})
    assert plain.format == tfs_json.COLUMNAR
    assert plain.inputs["images"].shape == (1, 1, 1)
    named = decode({"inputs": {"wide": [[1, 2, 3, 4, 5]], "deep": [[0.5] * 6]}}, HOUSING)
    assert named.inputs["wide"].tolist() == [[1, 2, 3, 4, 5]]
    assert named.inputs["deep"].dtype == np.float32
    # Columnar keeps whatever shape was sent; the data plane checks it against the signature.
    scalar = decode({"inputs": 5})
    assert scalar.inputs["images"].shape == ()


def test_signature_name_reaches_the_dtype_lookup() -> None:
    seen: list[str | None] = []

    def lookup(name: str | None) -> dict[str, np.dtype]:
        seen.append(name)
        return IMAGES

    tfs_json.decode_predict_request(b'{"instances": [1], "signature_name": "other"}', lookup)
    tfs_json.decode_predict_request(b'{"instances": [1]}', lookup)
    assert seen == ["other", None]


def test_dtype_lookup_errors_propagate_unchanged() -> None:
    class MissingError(Exception):
        pass

    def lookup(name: str | None) -> dict[str, np.dtype]:
        raise MissingError(name)

    with pytest.raises(MissingError):
        tfs_json.decode_predict_request(b'{"instances": [1], "signature_name": "x"}', lookup)


def test_model_is_looked_up_before_the_body_keys_are_checked() -> None:
    # TF Serving resolves model, version and signature first: an unknown model is NOT_FOUND
    # even when the body has neither 'instances' nor 'inputs'.
    class MissingError(Exception):
        pass

    def lookup(name: str | None) -> dict[str, np.dtype]:
        raise MissingError(name)

    for body in (b"{}", b'{"instances": [1], "inputs": [1]}'):
        with pytest.raises(MissingError):
            tfs_json.decode_predict_request(body, lookup)


def test_surrogate_pairs_are_kept_and_error_bodies_survive_lone_surrogates() -> None:
    # A real pair (an emoji) parses on both paths (orjson, and the NaN fallback).
    assert tfs_json.loads(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}
    assert tfs_json.loads(b'{"a": "\\ud83d\\ude00", "n": NaN}')["a"] == "\U0001f600"
    # An escaped backslash followed by "ud800" is plain text.
    assert tfs_json.loads(b'{"a": "\\\\ud800", "n": NaN}')["a"] == "\\ud800"
    assert json.loads(tfs_json.encode_error("x\ud800y")) == {"error": "x\\ud800y"}


def test_colons_in_strings_are_not_taken_for_duplicate_keys() -> None:
    body = b'{"instances": [1], "signature_name": "a:b:c", "note": {"x": 1, "y": NaN}}'
    request = tfs_json.decode_predict_request(body, IMAGES)
    assert request.signature_name == "a:b:c"


def test_strings_utf8_and_b64() -> None:
    raw = bytes(range(256))
    encoded = base64.b64encode(raw).decode()
    request = decode({"instances": ["héllo", {"b64": encoded}]}, STRINGS)
    assert request.inputs["text"].tolist() == ["héllo".encode(), raw]
    unpadded = base64.b64encode(b"ab").decode().rstrip("=")
    assert decode({"inputs": {"b64": unpadded}}, STRINGS).inputs["text"].item() == b"ab"


def test_b64_ignores_ascii_whitespace_as_absl_does() -> None:
    raw = bytes(range(256))
    wrapped = base64.encodebytes(raw).decode()  # 76-column lines, as the base64 tool writes
    assert "\n" in wrapped.strip()
    assert tfs_json.base64_bytes(wrapped) == raw
    assert tfs_json.base64_bytes(" YW Jj\t") == b"abc"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("YW!j", "character '!' at position 2 is not in the base64 alphabet"),
        ("YW\n!j", "character '!' at position 3"),  # positions count the text as sent
        ("YWJ-", "'-' at position 3 is URL-safe base64"),
        ("YWJ_", "'_' at position 3 is URL-safe base64"),
        ("YQ=x", "padding '=' before position 3, not at the end"),
        ("YQ===", "3 padding characters '=' at the end (at most 2)"),
        ("YWJjZ", "cannot encode whole bytes"),
        ("data:image/png;base64,YWJj", "data URL: send only the base64 text after"),
        ("é", "character 'é' at position 0"),
    ],
)
def test_b64_errors_say_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(CodecError, match=re.escape(reason)):
        tfs_json.base64_bytes(text)
    with pytest.raises(CodecError, match="Unable to base64 decode .*" + re.escape(reason)):
        tfs_json.decode_b64(text)


def test_nan_and_infinity_tokens_are_accepted_for_floats() -> None:
    body = b'{"inputs": {"wide": [[NaN, Infinity, -Infinity, 1, 2]], "deep": [[0,0,0,0,0,0]]}}'
    wide = tfs_json.decode_predict_request(body, HOUSING).inputs["wide"]
    assert math.isnan(wide[0, 0]) and wide[0, 1] == np.inf and wide[0, 2] == -np.inf


def test_float_input_accepts_ints_and_keeps_float32_values() -> None:
    wide = decode({"inputs": {"wide": [[1, 0.1, -3, 1e-3, 2.5]], "deep": [[0] * 6]}}, HOUSING)
    np.testing.assert_array_equal(
        wide.inputs["wide"], np.array([[1, 0.1, -3, 1e-3, 2.5]], np.float32)
    )


@pytest.mark.parametrize(
    ("body", "dtypes", "expected"),
    [
        (b"", IMAGES, "The document is empty"),
        (b"{", IMAGES, "JSON Parse error"),
        (b"[1, 2]", IMAGES, "Is not object"),
        (b'{"instances": [1], "inputs": [1]}', IMAGES, "only one of 'inputs' or 'instances'"),
        (b'{"signature_name": "x"}', IMAGES, "Missing 'inputs' or 'instances' key"),
        (b'{"instances": [1], "signature_name": 3}', IMAGES, "'signature_name' key must be"),
        (b'{"instances": {"images": [1]}}', IMAGES, "'instances' to be an list"),
        (b'{"instances": []}', IMAGES, "No values in 'instances'"),
        (b'{"instances": [[1, 300]]}', IMAGES, "300 is out of range for uint8 [0, 255]"),
        (b'{"instances": [[1, -1]]}', IMAGES, "-1 is out of range for uint8"),
        (b'{"instances": [[1, 2.5]]}', IMAGES, "is not of expected type: uint8"),
        (b'{"instances": [[1, 2.0]]}', IMAGES, "is not of expected type: uint8"),
        (b'{"instances": [[1, true]]}', IMAGES, "Type: True is not of expected type: uint8"),
        (b'{"instances": [[1, null]]}', IMAGES, "Type: Null is not of expected type"),
        (b'{"instances": [[1, "2"]]}', IMAGES, "Type: String is not of expected type"),
        (b'{"instances": [[1, 2], [3]]}', IMAGES, "Expecting shape [2] but got: [1]"),
        (b'{"instances": [[[1], 2]]}', IMAGES, "found at incorrect level"),
        (b'{"instances": [[1, [2]]]}', IMAGES, "Encountered list at unexpected level"),
        (b'{"instances": [[[1, 2], [3]]]}', IMAGES, "unexpected size: 1 at level: 1"),
        (b'{"instances": [1, {"images": 2}]}', IMAGES, "got object at item 1"),
        (b'{"instances": [{"images": 1}, 2]}', IMAGES, "got list at item 1"),
        (b'{"instances": [{"images": 1, "x": 2}]}', IMAGES, "unknown: x"),
        (b'{"inputs": {"images": [1], "x": [2]}}', IMAGES, "Unknown named input(s): x"),
        (b'{"inputs": {"b64": "@@@@"}}', STRINGS, "Unable to base64 decode"),
        (b'{"inputs": [{"b64": "YQ==", "x": 1}]}', STRINGS, "not formatted correctly for base64"),
        (b'{"inputs": [1]}', STRINGS, "is not of expected type: string"),
        (b'{"instances": [[1, 2, 3, 4, 5]]}', HOUSING, "instances is a plain list"),
        (b'{"inputs": [[1, 2, 3, 4, 5]]}', HOUSING, "inputs is a plain value/list"),
        (b'{"inputs": {"wide": [[1, 2, 3, 4, 5]]}}', HOUSING, "Missing named input: deep"),
        (b'{"instances": [{"wide": [1]}]}', HOUSING, "missing: deep"),
        (b'{"inputs": {"wide": 1e39, "deep": 1}}', HOUSING, "without loss of precision"),
        (b'{"inputs": {"wide": 16777217, "deep": 1}}', HOUSING, "without loss of precision"),
        (b'{"inputs": {"wide": [true], "deep": 1}}', HOUSING, "not of expected type: float32"),
        (b'{"inputs": {"wide": [1, 2], "deep": [[1], [2, 3]]}}', HOUSING, "unexpected size"),
        # Escaped lone surrogates: valid JSON syntax, but no UTF-8 string (rapidjson refuses).
        (b'{"instances": [1], "signature_name": "\\ud800"}', IMAGES, "surrogate pair"),
        (b'{"inputs": {"\\udc00": 1, "images": [1]}, "n": NaN}', IMAGES, "surrogate pair"),
        (b'{"instances": [' + b"9" * 5000 + b"]}", IMAGES, "Number too big"),
        # Repeated keys: parsers keep one value silently (orjson the last, TF Serving the first).
        (b'{"instances": [], "instances": [1]}', IMAGES, 'duplicate key: "instances" in the r'),
        (
            b'{"inputs": {"wide": [[1, 2, 3, 4, 5]], "deep": [[0, 0, 0, 0, 0, 0]], "wide": [[0]]}}',
            HOUSING,
            "duplicate key: \"wide\" in the 'inputs' object",
        ),
        (
            b'{"instances": [{"wide": [1], "deep": [2]}, {"deep": [2], "wide": [1], "deep": [3]}]}',
            HOUSING,
            "duplicate key: \"deep\" in element 1 of the 'instances' list",
        ),
        (b'{"inputs": [{"b64": "YQ==", "b64": "Yg=="}]}', STRINGS, 'duplicate key: "b64"'),
        # 1e400 overflows a double: a parse error in rapidjson, not Infinity.
        (b'{"inputs": {"wide": [[1e400, NaN, 0, 0, 0]], "deep": 1}}', HOUSING, "Number too big"),
    ],
)
def test_bad_requests_raise_codec_error_naming_the_problem(
    body: bytes, dtypes: dict[str, np.dtype], expected: str
) -> None:
    with pytest.raises(CodecError) as caught:
        tfs_json.decode_predict_request(body, dtypes)
    assert expected in str(caught.value)


def test_error_messages_quote_at_most_a_short_excerpt() -> None:
    huge = {"instances": [[1] * 5000, [1] * 4999]}
    with pytest.raises(CodecError) as caught:
        decode(huge)
    assert len(str(caught.value)) < 400


def test_integer_ranges_follow_the_target_dtype() -> None:
    dtypes = {"x": np.dtype("int32")}
    assert decode({"inputs": {"x": [2**31 - 1]}}, dtypes).inputs["x"].dtype == np.int32
    with pytest.raises(CodecError, match="out of range for int32"):
        decode({"inputs": {"x": [2**31]}}, dtypes)
    big = {"x": np.dtype("int64")}
    with pytest.raises(CodecError, match="out of range for int64"):
        tfs_json.decode_predict_request(b'{"inputs": {"x": [1, 9223372036854775808]}}', big)
    # Beyond 64 bits JSON parsers (TF Serving's too) read a double: a type error, not a wrap.
    with pytest.raises(CodecError, match="not of expected type: int64"):
        tfs_json.decode_predict_request(b'{"inputs": {"x": [1, 99999999999999999999]}}', big)


def test_bool_inputs() -> None:
    dtypes = {"flag": np.dtype(bool)}
    assert decode({"inputs": [True, False]}, dtypes).inputs["flag"].tolist() == [True, False]
    with pytest.raises(CodecError, match="not of expected type: bool"):
        decode({"inputs": [True, 1]}, dtypes)


# -- responses ------------------------------------------------------------------------------


def test_row_response_single_output_is_a_plain_list() -> None:
    body = tfs_json.encode_predict_response({"main": np.array([1.5, 2.0], np.float32)}, "row")
    assert orjson.loads(body) == {"predictions": [1.5, 2.0]}


def test_row_response_several_outputs_are_objects_per_instance() -> None:
    outputs = {
        "probabilities": np.array([[0.25, 0.75], [1.0, 0.0]], np.float32),
        "class_ids": np.array([1, 0], np.int64),
        "class_names": np.array([b"Bag", b"Coat"], object),
    }
    doc = orjson.loads(tfs_json.encode_predict_response(outputs, tfs_json.ROW))
    assert doc == {
        "predictions": [
            {"probabilities": [0.25, 0.75], "class_ids": 1, "class_names": "Bag"},
            {"probabilities": [1.0, 0.0], "class_ids": 0, "class_names": "Coat"},
        ]
    }


def test_columnar_response() -> None:
    one = tfs_json.encode_predict_response({"main": np.array([[1, 2]], np.int64)}, "columnar")
    assert orjson.loads(one) == {"outputs": [[1, 2]]}
    two = tfs_json.encode_predict_response(
        {"main": np.array([1.0], np.float32), "aux": np.array([2.0], np.float32)}, "columnar"
    )
    assert orjson.loads(two) == {"outputs": {"main": [1.0], "aux": [2.0]}}


def test_float32_written_shortest_with_a_decimal_point() -> None:
    body = tfs_json.encode_predict_response({"x": np.array([0.1, 3.0, 1e-7], np.float32)})
    assert body == b'{"predictions":[0.1,3.0,1e-7]}'
    assert np.array(orjson.loads(body)["predictions"], np.float32).tolist() == (
        np.array([0.1, 3.0, 1e-7], np.float32).tolist()
    )


def test_non_finite_floats_written_as_tf_serving_tokens() -> None:
    outputs = {
        "p": np.array([[np.nan, 0.5], [np.inf, -np.inf]], np.float32),
        "c": np.array([1, 2]),
    }
    row = tfs_json.encode_predict_response(outputs, "row")
    assert b"[NaN,0.5]" in row and b"[Infinity,-Infinity]" in row
    parsed = tfs_json.loads(row)["predictions"]
    assert math.isnan(parsed[0]["p"][0]) and parsed[1]["p"] == [math.inf, -math.inf]
    columnar = tfs_json.encode_predict_response(outputs, "columnar")
    assert b'"p":[[NaN,0.5],[Infinity,-Infinity]]' in columnar


def test_string_outputs_text_bytes_suffix_and_invalid_utf8() -> None:
    outputs = {
        "label": np.array(["é".encode(), b"\xff\xfe"], object),
        "raw_bytes": np.array([b"ok", b"ok"], object),
    }
    doc = orjson.loads(tfs_json.encode_predict_response(outputs, "columnar"))["outputs"]
    assert doc["label"] == ["é", {"b64": base64.b64encode(b"\xff\xfe").decode()}]
    assert doc["raw_bytes"] == [{"b64": "b2s="}, {"b64": "b2s="}]


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ({}, "empty tensor map"),
        ({"a": np.float32(1.0)}, "has no shape information"),
        ({"a": np.zeros((2, 1)), "b": np.zeros(3)}, "inconsistent batch size"),
        ({"a": np.zeros((0, 2))}, "invalid batch size: 0"),
    ],
)
def test_row_response_errors(outputs: dict[str, np.ndarray], expected: str) -> None:
    with pytest.raises(CodecError, match=expected):
        tfs_json.encode_predict_response(outputs, "row")


# -- client side round trips ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", [tfs_json.ROW, tfs_json.COLUMNAR])
def test_request_round_trip_named_and_unnamed(fmt: str) -> None:
    rng = np.random.default_rng(2)
    wide = rng.normal(size=(3, 5)).astype(np.float32)
    deep = rng.normal(size=(3, 6)).astype(np.float32)
    body = tfs_json.encode_predict_request({"wide": wide, "deep": deep}, fmt, "serving_default")
    request = tfs_json.decode_predict_request(body, HOUSING)
    assert request.format == fmt and request.signature_name == "serving_default"
    np.testing.assert_array_equal(request.inputs["wide"], wide)
    np.testing.assert_array_equal(request.inputs["deep"], deep)

    images = rng.integers(0, 256, (2, 28, 28)).astype(np.uint8)
    single = tfs_json.decode_predict_request(tfs_json.encode_predict_request(images, fmt), IMAGES)
    np.testing.assert_array_equal(single.inputs["images"], images)


def test_request_round_trip_bytes_and_nan() -> None:
    texts = np.array([b"\x00\xff", b"plain"], object)
    decoded = decode(tfs_json.encode_predict_request(texts, "columnar"), STRINGS)
    assert decoded.inputs["text"].tolist() == texts.tolist()
    wide = np.array([[np.nan, 1, 2, 3, 4]], np.float32)
    body = tfs_json.encode_predict_request({"wide": wide, "deep": np.zeros((1, 6))}, "row")
    assert np.isnan(decode(body, HOUSING).inputs["wide"][0, 0])


def test_request_row_format_refuses_unequal_batches() -> None:
    with pytest.raises(CodecError, match="same 0-th dimension"):
        tfs_json.encode_predict_request({"wide": np.zeros((2, 5)), "deep": np.zeros((3, 6))})


def test_response_round_trip() -> None:
    outputs = {
        "probabilities": np.array([[0.1, 0.9]], np.float32),
        "class_ids": np.array([1]),
        "class_names": np.array([b"Bag"], object),
        "blob_bytes": np.array([b"\x01"], object),
    }
    for fmt in (tfs_json.ROW, tfs_json.COLUMNAR):
        back = tfs_json.decode_predict_response(tfs_json.encode_predict_response(outputs, fmt))
        assert back["class_names"].tolist() == ["Bag"]
        assert back["blob_bytes"].tolist() == [b"\x01"]
        assert back["class_ids"].tolist() == [1]
        np.testing.assert_array_equal(
            back["probabilities"].astype(np.float32), outputs["probabilities"]
        )
    single = tfs_json.encode_predict_response({"main": np.array([1.0, 2.0])})
    assert tfs_json.decode_predict_response(single, "main")["main"].tolist() == [1.0, 2.0]
    with pytest.raises(CodecError, match="boom"):
        tfs_json.decode_predict_response(b'{"error": "boom"}')


# -- properties -----------------------------------------------------------------------------

_KEYS = st.sampled_from(
    ["instances", "inputs", "signature_name", "b64", "images", "wide", "deep", "text", "x"]
)
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
_JSON = st.recursive(
    _LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=30,
)
_DOCS = st.dictionaries(_KEYS, _JSON, max_size=4) | _JSON


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_DOCS, dtypes=st.sampled_from([IMAGES, HOUSING, STRINGS, {"x": np.dtype(bool)}]))
def test_decoder_raises_only_codec_errors_on_arbitrary_json(
    doc: object, dtypes: dict[str, np.dtype]
) -> None:
    body = json.dumps(doc, allow_nan=True).encode()
    try:
        request = tfs_json.decode_predict_request(body, dtypes)
    except CodecError:
        return
    assert set(request.inputs) == set(dtypes)
    for name, array in request.inputs.items():
        assert array.dtype == dtypes[name]


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=64))
def test_decoder_raises_only_codec_errors_on_arbitrary_bytes(body: bytes) -> None:
    with contextlib.suppress(CodecError):
        tfs_json.decode_predict_request(body, IMAGES)


_NUMBERS = st.integers(min_value=-300, max_value=300) | st.floats(
    min_value=-1e6, max_value=1e6, allow_nan=False
)
_NESTED = st.recursive(
    _NUMBERS | st.booleans(), lambda children: st.lists(children, max_size=3), max_leaves=12
)


@settings(max_examples=400, deadline=None)
@given(
    value=_NESTED,
    dtype=st.sampled_from([np.dtype("uint8"), np.dtype("int64"), np.dtype("float32")]),
)
def test_numpy_fast_path_agrees_with_the_exact_walk(value: object, dtype: np.dtype) -> None:
    """The fast path may only ever give the answer the element-by-element walk gives."""
    body = json.dumps(value).encode()
    may_hold_bools = b"true" in body or b"false" in body
    try:
        expected = tfs_json._walk(value, dtype)
    except CodecError:
        expected = None
    try:
        got = tfs_json.to_ndarray(value, dtype, may_hold_bools=may_hold_bools)
    except CodecError:
        got = None
    if expected is None:
        assert got is None
    else:
        assert got is not None and got.dtype == dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
