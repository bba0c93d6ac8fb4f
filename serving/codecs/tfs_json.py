"""TF Serving's REST JSON <-> numpy: the one implementation, for the model server and clients.

Follows TF Serving's ``g3doc/api_rest.md`` and ``tensorflow_serving/util/json_tensor.cc``:

* request ``{"signature_name"?, "instances": [...]}`` (row format: one element per example, a
  value/list for a single input or an object of named inputs) or ``{"inputs": ...}`` (columnar:
  a value/list for a single input or an object of named inputs);
* ``{"b64": "..."}`` carries binary strings; strings go out as UTF-8 text, or as ``{"b64": ...}``
  when the output name ends with ``_bytes`` (TF Serving's rule) or the bytes are not UTF-8
  (TF Serving would write invalid JSON there);
* row requests answer ``{"predictions": [...]}`` (values for one output, objects for several),
  columnar ones ``{"outputs": ...}``; NaN/Infinity are written as the bare tokens TF Serving
  writes (``NaN``, ``Infinity``, ``-Infinity``) and accepted in requests.

Conversion is typed by the signature's input dtypes, as in TF Serving (JSON ints become uint8
for a uint8 input), but stricter: a value that does not fit the dtype (300 for uint8) is an
error instead of wrapping around. Every failure is a :class:`CodecError` whose message is safe
to show to the caller. Numbers take a numpy fast path; the element-by-element walk only runs
for strings and to explain a failure.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from serving.codecs import CodecError

ROW = "row"
COLUMNAR = "columnar"

#: TF Serving refuses nothing deeper, but a tensor of more dimensions than this is a mistake
#: (and deep nesting would only cost recursion).
MAX_RANK = 32
#: Longest excerpt of a JSON value quoted in an error message.
_EXCERPT = 120
_B64_KEY = "b64"
_BYTES_SUFFIX = "_bytes"
_STRING_DTYPE = np.dtype(object)
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

DtypeLike = Any
InputDtypes = Mapping[str, DtypeLike]


@dataclass(frozen=True)
class PredictRequestJson:
    """A decoded predict request: ``signature_name`` is None when the body does not name one."""

    signature_name: str | None
    format: str  # ROW or COLUMNAR: the response must use the same one
    inputs: dict[str, np.ndarray]


# --------------------------------------------------------------------------------------------
# Parsing


def loads(body: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON like TF Serving's parser: NaN/Infinity/-Infinity tokens and big numbers are
    accepted. orjson does the common case; the standard library only sees the rare rest."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_error:
        first_error = fast_error
    try:
        text = body.decode("utf-8") if not isinstance(body, str) else body
    except UnicodeDecodeError as exc:
        raise CodecError(f"JSON Parse error: invalid UTF-8 at offset: {exc.start}") from None
    if not text.strip():
        raise CodecError("JSON Parse error: The document is empty")
    try:
        # The standard parser accepts NaN/Infinity/-Infinity and integers beyond 64 bits, which
        # orjson refuses; anything it refuses too is really malformed.
        doc = json.loads(text, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise CodecError(f"JSON Parse error: {exc.msg} at offset: {exc.pos}") from None
    except RecursionError:
        raise CodecError(f"JSON Parse error: {first_error}") from None
    except ValueError:  # an integer beyond Python's 4,300-digit conversion limit
        raise CodecError("JSON Parse error: Number too big to be stored in double.") from None
    # It also accepts escaped lone surrogates ("\ud800"), which orjson and rapidjson refuse:
    # such a str cannot be encoded as UTF-8 again, so it would break every later use.
    if _SURROGATE_ESCAPE.search(text) is not None and not _utf8_encodable(doc):
        raise CodecError("JSON Parse error: The surrogate pair in string is invalid.")
    return doc


def _finite_float(text: str) -> float:
    # 1e400 overflows a double: orjson and rapidjson refuse it, json would make it Infinity.
    value = float(text)
    if math.isinf(value):
        raise CodecError("JSON Parse error: Number too big to be stored in double.")
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _utf8_encodable(doc: Any) -> bool:
    try:
        json.dumps(doc, ensure_ascii=False, allow_nan=True).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def excerpt(value: Any, limit: int = _EXCERPT) -> str:
    """A short JSON rendering of ``value`` for error messages."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        try:
            text = repr(value)
        except RecursionError:  # nested deeper than repr goes: name the kind, not the content
            text = f"<{type(value).__name__} nested too deeply to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def dtype_label(dtype: np.dtype) -> str:
    """TF-style dtype name for messages: ``uint8``, ``float32``, ``string``."""
    return "string" if _is_string(dtype) else dtype.name


def _is_string(dtype: np.dtype) -> bool:
    return dtype.kind in "OSU"


def _is_b64_object(value: Any) -> bool:
    # TF Serving: an object with exactly one key "b64" whose value is a string.
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(_B64_KEY), str)


def _is_named_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64_object(value)


_BASE64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_ASCII_SPACE = " \t\n\r\f\v"  # what absl::ascii_isspace skips
_DROP_ASCII_SPACE = str.maketrans("", "", _ASCII_SPACE)


def base64_bytes(text: str) -> bytes:
    """Standard-alphabet base64, padding optional, ASCII whitespace anywhere ignored (as
    absl::Base64Unescape, which TF Serving uses: line-wrapped output of ``base64`` decodes).
    ``CodecError`` says what is wrong and where, so one implementation serves the model
    server's ``{"b64": ...}`` and the gateway's."""
    stripped = text.translate(_DROP_ASCII_SPACE)
    padded = stripped + "=" * (-len(stripped) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise CodecError(_base64_problem(text)) from None


def _base64_problem(text: str) -> str:
    """Why ``base64_bytes`` refused ``text``; positions count characters of ``text`` as sent."""
    start = len(text) - len(text.lstrip())
    if text.startswith("data:", start) and ";base64," in text[start : start + 100]:
        prefix = text[start : text.index(";base64,") + len(";base64,")]
        return f"it is a data URL: send only the base64 text after {prefix!r}"
    padding = 0
    for position, char in enumerate(text):
        if char in _ASCII_SPACE:
            continue
        if char == "=":
            padding += 1
            continue
        if padding:
            return f"padding '=' before position {position}, not at the end"
        if char in _BASE64_ALPHABET:
            continue
        if char in "-_":
            return (
                f"{char!r} at position {position} is URL-safe base64; "
                f"use the standard alphabet ('+' and '/')"
            )
        return f"character {char!r} at position {position} is not in the base64 alphabet"
    if padding > 2:
        return f"{padding} padding characters '=' at the end (at most 2)"
    return "its length cannot encode whole bytes (a character too many or missing)"


def decode_b64(text: str) -> bytes:
    """TF Serving's ``{"b64": ...}`` value -> bytes, with TF Serving's message on failure."""
    try:
        return base64_bytes(text)
    except CodecError as exc:
        raise CodecError(f"Unable to base64 decode {excerpt({_B64_KEY: text})}: {exc}") from None


# --------------------------------------------------------------------------------------------
# JSON value -> ndarray of a given dtype


def _dense_shape(value: Any) -> list[int]:
    """TF Serving's GetDenseTensorShape: follow the first element of each nested list."""
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if len(shape) > MAX_RANK:
            raise CodecError(f"JSON value nests lists more than {MAX_RANK} levels deep")
        if not value:
            break
        value = value[0]
    return shape


def _leaf_converter(dtype: np.dtype) -> Callable[[Any], Any]:
    """A function turning one JSON leaf into a Python value of ``dtype``, or raising."""
    label = dtype_label(dtype)

    def type_error(value: Any) -> CodecError:
        return CodecError(
            f"JSON Value: {excerpt(value)} Type: {_json_type(value)} is not of expected type: "
            f"{label}"
        )

    if _is_string(dtype):

        def to_bytes(value: Any) -> bytes:
            if isinstance(value, str):
                return value.encode("utf-8")
            if isinstance(value, dict):
                if not _is_b64_object(value):
                    raise CodecError(
                        f"JSON Value: {excerpt(value)} not formatted correctly for base64 data"
                    )
                return decode_b64(value[_B64_KEY])
            raise type_error(value)

        return to_bytes

    if dtype.kind == "b":

        def to_bool(value: Any) -> bool:
            if value is True or value is False:
                return value
            raise type_error(value)

        return to_bool

    if dtype.kind in "iu":
        info = np.iinfo(dtype)

        def to_int(value: Any) -> int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise type_error(value)
            if not info.min <= value <= info.max:
                raise CodecError(
                    f"JSON Value: {value} is out of range for {label} [{info.min}, {info.max}]"
                )
            return value

        return to_int

    if dtype.kind == "f":
        finfo = np.finfo(dtype)
        max_int = (1 << (finfo.nmant + 1)) - 1  # largest integer the type holds exactly

        def to_float(value: Any) -> float:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise type_error(value)
            if isinstance(value, int):
                if abs(value) > max_int:
                    raise _lossy(value, label)
                return float(value)
            if math.isfinite(value) and abs(value) > float(finfo.max):
                raise _lossy(value, label)
            return value

        return to_float

    raise CodecError(f"Conversion of JSON values to {label} is not supported")


def _lossy(value: Any, label: str) -> CodecError:
    return CodecError(
        f"Cannot convert JSON value: {excerpt(value)} to {label} without loss of precision."
    )


def _walk(value: Any, dtype: np.dtype) -> np.ndarray:
    """The exact, element-by-element conversion, with TF Serving's errors for ragged lists."""
    shape = _dense_shape(value)
    rank = len(shape)
    convert = _leaf_converter(dtype)
    flat: list[Any] = []

    def fill(node: Any, level: int) -> None:
        if not isinstance(node, list):
            if level != rank:
                # Levels count the lists around a value (TF Serving prints level + 1 here).
                raise CodecError(
                    f"JSON Value: {excerpt(node)} found at incorrect level: {level} in the "
                    f"JSON DOM. Expected at level: {rank}"
                )
            flat.append(convert(node))
            return
        if level >= rank:
            raise CodecError(f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(node) != shape[level]:
            raise CodecError(
                f"Encountered list at unexpected size: {len(node)} at level: {level} "
                f"expected size: {shape[level]}"
            )
        for child in node:
            fill(child, level + 1)

    fill(value, 0)
    if _is_string(dtype):
        array = np.empty(len(flat), dtype=_STRING_DTYPE)
        array[:] = flat
        return array.reshape(shape)
    return np.array(flat, dtype=dtype).reshape(shape)


def _fast_numeric(value: Any, dtype: np.dtype, may_hold_bools: bool) -> np.ndarray | None:
    """numpy's C conversion when it gives the same answer as the exact walk, else None.

    numpy silently turns ``[1, true]`` into ints and ``[1, 2.5]`` into floats, so the result
    is only trusted when its kind proves every leaf had the right JSON type: no bool tokens in
    the body for numeric dtypes, only integers for integer dtypes, and values in range.
    """
    if may_hold_bools and dtype.kind != "b":
        return None
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):  # ragged lists, mixed nesting
        return None
    kind = array.dtype.kind
    if array.size == 0:
        # np.array([[]]) is float64; an empty tensor of the right shape is all we need.
        return array.astype(dtype) if kind in "biuf" else None
    if dtype.kind == "b":
        return array if kind == "b" else None
    if kind not in "iu" and not (kind == "f" and dtype.kind == "f"):
        return None
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            return None
        return array.astype(dtype, copy=False)
    finfo = np.finfo(dtype)
    if kind in "iu":
        max_int = (1 << (finfo.nmant + 1)) - 1
        if array.min() < -max_int or array.max() > max_int:
            return None
    elif dtype.itemsize < 8:
        with np.errstate(invalid="ignore"):
            magnitude = np.abs(array)
            if (magnitude[np.isfinite(magnitude)] > float(finfo.max)).any():
                return None
    return array.astype(dtype, copy=False)


def to_ndarray(value: Any, dtype: DtypeLike, *, may_hold_bools: bool = True) -> np.ndarray:
    """Convert one JSON value (scalar or nested lists) into an array of ``dtype``."""
    dtype = np.dtype(dtype)
    if not _is_string(dtype):
        array = _fast_numeric(value, dtype, may_hold_bools)
        if array is not None:
            return array
    return _walk(value, dtype)


# --------------------------------------------------------------------------------------------
# Predict request decoding


def _as_dtype(value: Any) -> np.dtype:
    # A dtype, a scalar type or name, or a spec object with a ``.dtype`` (TensorSpecInfo).
    if isinstance(value, (np.dtype, type, str)):
        return np.dtype(value)
    return np.dtype(value.dtype)


def _resolve_dtypes(
    input_dtypes: InputDtypes | Callable[[str | None], InputDtypes], signature_name: str | None
) -> dict[str, np.dtype]:
    mapping = input_dtypes(signature_name) if callable(input_dtypes) else input_dtypes
    dtypes = {name: _as_dtype(d) for name, d in mapping.items()}
    if not dtypes:
        raise CodecError(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    return dtypes


def decode_predict_request(
    body: bytes | str | Mapping[str, Any],
    input_dtypes: InputDtypes | Callable[[str | None], InputDtypes],
) -> PredictRequestJson:
    """Decode a ``:predict`` body into named input arrays.

    ``input_dtypes`` maps each signature input to its dtype (numpy dtype, or anything with a
    ``.dtype``), or is a function of the request's ``signature_name`` (None when absent)
    returning that mapping, so the signature can be looked up only after parsing, as TF
    Serving does. Errors from that function propagate unchanged.
    """
    if isinstance(body, Mapping):
        doc: Any = body
        may_hold_bools = True
    else:
        doc = loads(body)
        raw = body.encode() if isinstance(body, str) else bytes(body)
        # JSON spells booleans only as these tokens; without them numpy's fast path is exact.
        may_hold_bools = b"true" in raw or b"false" in raw
        if isinstance(doc, dict):
            _reject_duplicate_keys(raw, doc)
    signature_name = request_signature_name(doc)
    # As TF Serving: the model, version and signature are looked up before the body's keys are
    # checked, so an unknown model is NOT_FOUND whatever the body holds.
    dtypes = _resolve_dtypes(input_dtypes, signature_name)
    has_instances = "instances" in doc
    has_inputs = "inputs" in doc
    if has_instances and has_inputs:
        raise CodecError(
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"
        )
    if not has_instances and not has_inputs:
        raise CodecError("Missing 'inputs' or 'instances' key")

    if has_instances:
        inputs = _decode_instances(doc["instances"], dtypes, may_hold_bools)
        return PredictRequestJson(signature_name, ROW, inputs)
    inputs = _decode_inputs(doc["inputs"], dtypes, may_hold_bools)
    return PredictRequestJson(signature_name, COLUMNAR, inputs)


def _reject_duplicate_keys(raw: bytes, doc: dict[str, Any]) -> None:
    """Refuse a body that repeats a key in any object. The JSON parsers keep one of the values
    silently (orjson the last, rapidjson's FindMember the first), so ``{"inputs": {"wide": a,
    "wide": b, ...}}`` would be answered for a value the caller may not have meant; TF Serving
    answers it for ``a`` (columnar) or for a mix of ``a`` and ``b`` (row objects).

    Cheap proof first: every object member has one ":" outside strings, so when the body holds
    no more colons than the members kept at the levels a predict body uses (the request
    object, ``inputs``, the ``instances`` objects), nothing was dropped. Otherwise (a colon in a
    string, b64 or deeper objects, a duplicate) the body is parsed again with a hook that sees
    every key.
    """
    kept = len(doc)
    inputs = doc.get("inputs")
    if isinstance(inputs, dict):
        kept += len(inputs)
    instances = doc.get("instances")
    if isinstance(instances, list):
        kept += sum(len(item) for item in instances if isinstance(item, dict))
    if raw.count(b":") <= kept:
        return
    found: list[tuple[str, dict[str, Any]]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) != len(items) and not found:
            seen: set[str] = set()
            found.append((next(k for k, _ in items if k in seen or seen.add(k)), obj))
        return obj

    try:
        reparsed = json.loads(raw, object_pairs_hook=pairs)
    except (ValueError, RecursionError):  # loads() accepted it: a stdlib limit, not a duplicate
        return
    if not found:
        return
    key, obj = found[0]
    where = "a nested JSON object"
    if obj is reparsed:
        where = "the request object"
    elif obj is reparsed.get("inputs"):
        where = "the 'inputs' object"
    elif isinstance(reparsed.get("instances"), list):
        for index, item in enumerate(reparsed["instances"]):
            if item is obj:
                where = f"element {index} of the 'instances' list"
    raise CodecError(
        f"JSON object has a duplicate key: {excerpt(key)} in {where}; give each key once"
    )


def _decode_instances(
    instances: Any, dtypes: dict[str, np.dtype], may_hold_bools: bool
) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise CodecError("Expecting 'instances' to be an list/array")
    if not instances:
        raise CodecError("No values in 'instances' array")
    names = sorted(dtypes)
    if not _is_named_object(instances[0]):
        if len(names) > 1:
            raise CodecError(
                "instances is a plain list, but expecting list of objects as multiple input "
                f"tensors required as per tensorinfo_map (inputs: {', '.join(names)})"
            )
        for index, item in enumerate(instances):
            if _is_named_object(item):
                raise CodecError(
                    f"Expecting value/list but got object at item {index} of input list"
                )
        name = names[0]
        return {name: _stack_instances(instances, name, dtypes[name], may_hold_bools, False)}

    expected = set(names)
    for index, item in enumerate(instances):
        if not _is_named_object(item):
            raise CodecError(f"Expecting object but got list at item {index} of input list")
        if item.keys() != expected:
            unknown = sorted(set(item) - expected)
            missing = sorted(expected - set(item))
            details = []
            if missing:
                details.append(f"missing: {', '.join(missing)}")
            if unknown:
                details.append(f"unknown: {', '.join(unknown)}")
            raise CodecError(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{excerpt(item)} must only have keys: {','.join(names)} ({'; '.join(details)})"
            )
    return {
        name: _stack_instances(
            [item[name] for item in instances], name, dtypes[name], may_hold_bools, True
        )
        for name in names
    }


def _stack_instances(
    items: list[Any], name: str, dtype: np.dtype, may_hold_bools: bool, named: bool
) -> np.ndarray:
    """Batch one input's per-instance values: shape [len(items), *instance shape]."""
    if not _is_string(dtype):
        array = _fast_numeric(items, dtype, may_hold_bools)
        if array is not None:
            return array
    # Exact path: each instance alone, so the error says which one is wrong and how.
    arrays = []
    first_shape: tuple[int, ...] | None = None
    for index, item in enumerate(items):
        key = f" key: {name}" if named else ""
        try:
            array = to_ndarray(item, dtype, may_hold_bools=may_hold_bools)
        except CodecError as exc:
            raise CodecError(
                f"Failed to process element: {index}{key} of 'instances' list. Error: {exc}"
            ) from None
        if first_shape is None:
            first_shape = array.shape
        elif array.shape != first_shape:
            raise CodecError(
                f"Failed to process element: {index}{key} of 'instances' list. Error: "
                f"Expecting shape {_shape_text(first_shape)} but got: {_shape_text(array.shape)}"
            )
        arrays.append(array)
    return np.stack(arrays)


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(size) for size in shape) + "]"


def _decode_inputs(
    inputs: Any, dtypes: dict[str, np.dtype], may_hold_bools: bool
) -> dict[str, np.ndarray]:
    names = sorted(dtypes)
    if not _is_named_object(inputs):
        if len(names) > 1:
            raise CodecError(
                "inputs is a plain value/list, but expecting an object as multiple input "
                f"tensors required as per tensorinfo_map (inputs: {', '.join(names)})"
            )
        name = names[0]
        return {name: _with_input_name(inputs, name, dtypes[name], may_hold_bools)}
    missing = [name for name in names if name not in inputs]
    if missing:
        raise CodecError(f"Missing named input: {missing[0]} in 'inputs' object.")
    unknown = sorted(set(inputs) - set(names))
    if unknown:
        # TF Serving silently ignores these; a misspelt optional input deserves an error.
        raise CodecError(
            f"Unknown named input(s): {', '.join(unknown)} in 'inputs' object; the signature's "
            f"inputs are: {', '.join(names)}"
        )
    return {
        name: _with_input_name(inputs[name], name, dtypes[name], may_hold_bools) for name in names
    }


def _with_input_name(value: Any, name: str, dtype: np.dtype, may_hold_bools: bool) -> np.ndarray:
    try:
        return to_ndarray(value, dtype, may_hold_bools=may_hold_bools)
    except CodecError as exc:
        raise CodecError(f"Failed to process input: {name}. Error: {exc}") from None


# --------------------------------------------------------------------------------------------
# ndarray -> JSON


def _string_leaf(value: Any, as_b64: bool) -> Any:
    if isinstance(value, str):
        if not as_b64:
            return value
        value = value.encode("utf-8")
    elif not isinstance(value, (bytes, bytearray)):
        value = str(value).encode("utf-8")
    if not as_b64:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass  # TF Serving would emit invalid JSON here; base64 keeps the bytes intact
    return {_B64_KEY: base64.b64encode(value).decode("ascii")}


def _nest(flat: list[Any], shape: tuple[int, ...]) -> Any:
    """Row-major flat list -> nested lists of ``shape``."""
    if not shape:
        return flat[0]
    for size in reversed(shape[1:]):
        flat = [flat[i : i + size] for i in range(0, len(flat), size)]
    return flat


def _float_token(value: Any) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    # str() of a numpy float is its shortest round-trip repr (0.2, not 0.2000000029...).
    text = str(value)
    if "." not in text and "e" not in text and "n" not in text:
        text += ".0"
    return text


def _nonfinite_fragment(array: np.ndarray) -> orjson.Fragment:
    tokens = [_float_token(v) for v in array.reshape(-1)]
    nested = _nest(tokens, array.shape)

    def render(node: Any) -> str:
        if isinstance(node, list):
            return "[" + ",".join(render(child) for child in node) + "]"
        return node

    return orjson.Fragment(render(nested).encode("ascii"))


def to_jsonable(array: Any, name: str = "") -> Any:
    """Something orjson writes as TF Serving writes this tensor (numpy arrays pass through)."""
    array = np.asarray(array)
    if _is_string(array.dtype):
        as_b64 = name.endswith(_BYTES_SUFFIX)
        flat = [_string_leaf(v, as_b64) for v in array.reshape(-1).tolist()]
        return _nest(flat, array.shape)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return _nonfinite_fragment(array)
    if array.dtype.kind not in "biuf":
        raise CodecError(f"Failed to write JSON value for tensor type: {array.dtype}")
    return array


def _rows(array: np.ndarray, name: str) -> list[Any]:
    """Per-example values of a batched output, for the row format."""
    if _is_string(array.dtype) or (array.dtype.kind == "f" and not np.isfinite(array).all()):
        return [to_jsonable(row, name) for row in array]
    return list(array)


def _batch_size(outputs: Mapping[str, np.ndarray]) -> int:
    batch = 0
    for name, array in outputs.items():
        if array.ndim == 0:
            raise CodecError(f"Tensor name: {name} has no shape information ")
        if array.shape[0] < 1:
            raise CodecError(f"Tensor name: {name} has invalid batch size: {array.shape[0]}")
        if batch and array.shape[0] != batch:
            raise CodecError(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}"
            )
        batch = array.shape[0]
    return batch


def dumps(document: Any) -> bytes:
    """orjson with numpy support: the serializer for every TF Serving JSON document."""
    try:
        return orjson.dumps(document, option=_DUMPS_OPTIONS)
    except TypeError as exc:
        raise CodecError(f"Failed to write JSON: {exc}") from None


def encode_predict_response(outputs: Mapping[str, Any], format: str = ROW) -> bytes:
    """``{"predictions": ...}`` (row) or ``{"outputs": ...}`` (columnar), as TF Serving."""
    if not outputs:
        raise CodecError("Cannot convert empty tensor map to JSON")
    arrays = {name: np.asarray(outputs[name]) for name in sorted(outputs)}
    if format == COLUMNAR:
        if len(arrays) == 1:
            ((name, array),) = arrays.items()
            return dumps({"outputs": to_jsonable(array, name)})
        return dumps({"outputs": {name: to_jsonable(a, name) for name, a in arrays.items()}})
    if format != ROW:
        raise CodecError(f"Invalid request format: {format!r}")
    batch = _batch_size(arrays)
    if len(arrays) == 1:
        ((name, array),) = arrays.items()
        return dumps({"predictions": to_jsonable(array, name)})
    rows = {name: _rows(array, name) for name, array in arrays.items()}
    predictions = [{name: rows[name][i] for name in rows} for i in range(batch)]
    return dumps({"predictions": predictions})


def encode_error(message: str) -> bytes:
    """TF Serving's error body: ``{"error": "<message>"}``."""
    try:
        return orjson.dumps({"error": message})
    except TypeError:  # lone surrogates are not UTF-8: escape them rather than fail
        return orjson.dumps({"error": message.encode("utf-8", "backslashreplace").decode()})


# --------------------------------------------------------------------------------------------
# Client side: building requests and reading answers


def encode_predict_request(
    inputs: Mapping[str, Any] | Any,
    format: str = ROW,
    signature_name: str | None = None,
) -> bytes:
    """A ``:predict`` body. ``inputs`` is one array (a single-input signature, written as a
    plain list) or a mapping of named arrays (written as objects). Arrays are batched along
    axis 0 for the row format. Bytes become ``{"b64": ...}``, str stays text."""
    doc: dict[str, Any] = {}
    if signature_name is not None:
        doc["signature_name"] = signature_name
    named = isinstance(inputs, Mapping)
    if format == COLUMNAR:
        if named:
            doc["inputs"] = {name: _request_jsonable(v) for name, v in inputs.items()}
        else:
            doc["inputs"] = _request_jsonable(inputs)
    elif format == ROW:
        if named:
            arrays = {name: np.asarray(v) for name, v in inputs.items()}
            sizes = {a.shape[0] if a.ndim else None for a in arrays.values()}
            if len(sizes) != 1 or None in sizes:
                raise CodecError(
                    "row format needs every input batched with the same 0-th dimension, got "
                    + ", ".join(f"{n}: {list(a.shape)}" for n, a in arrays.items())
                )
            rows = {name: _request_rows(a) for name, a in arrays.items()}
            (batch,) = sizes
            doc["instances"] = [{name: rows[name][i] for name in rows} for i in range(batch)]
        else:
            doc["instances"] = _request_jsonable(inputs)
    else:
        raise CodecError(f"Invalid request format: {format!r}")
    return dumps(doc)


def _request_jsonable(value: Any) -> Any:
    array = np.asarray(value)
    if array.dtype.kind == "S" or (
        array.dtype.kind == "O" and any(isinstance(v, bytes) for v in array.reshape(-1).tolist())
    ):
        flat = [
            {_B64_KEY: base64.b64encode(v).decode("ascii")}
            if isinstance(v, (bytes, bytearray))
            else str(v)
            for v in array.reshape(-1).tolist()
        ]
        return _nest(flat, array.shape)
    return to_jsonable(array)


def _request_rows(array: np.ndarray) -> list[Any]:
    if array.dtype.kind in "OSU" or (array.dtype.kind == "f" and not np.isfinite(array).all()):
        return [_request_jsonable(row) for row in array]
    return list(array)


def _from_json_value(value: Any) -> np.ndarray:
    """A JSON value of an answer -> array (b64 objects -> bytes, text -> str)."""
    leaf = value
    while isinstance(leaf, list) and leaf:
        leaf = leaf[0]
    if isinstance(leaf, (str, dict)):
        shape = _dense_shape(value)
        flat: list[Any] = []

        def collect(node: Any) -> None:
            if isinstance(node, list):
                for child in node:
                    collect(child)
            else:
                flat.append(decode_b64(node[_B64_KEY]) if _is_b64_object(node) else node)

        collect(value)
        array = np.empty(len(flat), dtype=_STRING_DTYPE)
        array[:] = flat
        try:
            return array.reshape(shape)
        except ValueError:
            raise CodecError(f"answer holds a ragged tensor: {excerpt(value)}") from None
    try:
        return np.array(value)
    except ValueError:
        raise CodecError(f"answer holds a ragged tensor: {excerpt(value)}") from None


def decode_predict_response(
    body: bytes | str | Mapping[str, Any], single_output_name: str = "output"
) -> dict[str, np.ndarray]:
    """Read a ``:predict`` answer into named arrays. TF Serving drops the name when the
    signature has one output; it is then returned under ``single_output_name``.
    An ``{"error": ...}`` body raises CodecError with that message."""
    doc = body if isinstance(body, Mapping) else loads(body)
    if not isinstance(doc, Mapping):
        raise CodecError(f"answer is not a JSON object: {excerpt(doc)}")
    if "error" in doc:
        raise CodecError(str(doc["error"]))
    if "predictions" in doc:
        predictions = doc["predictions"]
        if not isinstance(predictions, list):
            raise CodecError("'predictions' is not a list")
        if predictions and _is_named_object(predictions[0]):
            names = list(predictions[0])
            try:
                return {n: _from_json_value([row[n] for row in predictions]) for n in names}
            except (KeyError, TypeError):
                raise CodecError("'predictions' objects do not all have the same keys") from None
        return {single_output_name: _from_json_value(predictions)}
    if "outputs" in doc:
        outputs = doc["outputs"]
        if _is_named_object(outputs):
            return {name: _from_json_value(value) for name, value in outputs.items()}
        return {single_output_name: _from_json_value(outputs)}
    raise CodecError("answer has neither 'predictions' nor 'outputs'")


def request_signature_name(doc: Any) -> str | None:
    """The ``signature_name`` of a request body (predict, classify, regress), checked as TF
    Serving does: the body must be a JSON object and the name, when given, a string."""
    if not isinstance(doc, dict):
        raise CodecError(f"JSON Value: {excerpt(doc)} Is not object")
    signature_name = doc.get("signature_name")
    if signature_name is not None and not isinstance(signature_name, str):
        raise CodecError(
            f"JSON Value: {excerpt(signature_name)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return signature_name
