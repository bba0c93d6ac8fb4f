"""Request parsing and validation, in one place: bodies -> numpy inputs + parameters.

Everything here raises ``ApiError`` (or ``CodecError``, mapped to 400 by errors.py) with a message
naming the instance, field or parameter, and what was expected versus what was sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from flask import Request

from serving.codecs import CodecError
from serving.codecs.housing import HousingInputError, ModelCardMissingError, features_to_inputs
from serving.codecs.images import (
    INVERT_CHOICES,
    decode_image,
    invert_pixels,
    pixels_to_batch,
    pixels_to_image,
)
from serving.codecs.json_pixels import split_pixel_instances
from serving.codecs.messages import json_kind, quoted
from serving.codecs.tfs_json import base64_bytes
from serving.gateway.errors import ApiError

PARAMETERS = ("top_k", "version", "version_label", "invert", "return_image")
HOUSING_PARAMETERS = ("version", "version_label")
IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/gif", "image/webp", "image/bmp")
IMAGE_TYPES += ("image/tiff", "application/octet-stream")
# No dots or slashes: a label can never look like a path ("..", "a/b"); checked before any
# backend call.
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Params:
    top_k: int | None = None
    version: int | None = None
    version_label: str | None = None
    invert: str | None = None  # None: "auto" for encoded images, "never" for pixel arrays
    return_image: bool = False  # also answer each 28x28 input as the model got it (base64 PNG)


# -- bodies --------------------------------------------------------------------------------


def media_type(request: Request) -> str:
    return request.mimetype  # lower-cased, without parameters such as charset


def is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def unsupported_media_type(mimetype: str, accepted: str) -> ApiError:
    got = f"Content-Type {mimetype!r}" if mimetype else "no Content-Type"
    return ApiError(415, "unsupported_media_type", f"unsupported {got}; send {accepted}")


def parse_json_object(body: bytes, allowed: Iterable[str]) -> dict[str, Any]:
    """The body as a JSON object with only ``allowed`` keys and a non-empty ``instances`` list."""
    if not body:
        raise ApiError(400, "invalid_json", "request body is empty; expected a JSON object")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"malformed JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ApiError(400, "invalid_json", f"expected a JSON object, got {json_kind(document)}")
    instances = document.get("instances")
    objects = (
        [item for item in instances if isinstance(item, dict)]
        if isinstance(instances, list)
        else []
    )
    reject_duplicate_keys(body, len(document) + sum(len(item) for item in objects))
    _check_fields(document, allowed)
    if "instances" not in document:
        raise ApiError(400, "missing_instances", 'the JSON object needs an "instances" list')
    if not isinstance(document["instances"], list):
        kind = json_kind(document["instances"])
        raise ApiError(400, "invalid_instances", f'"instances" must be a list, got {kind}')
    return document


def reject_duplicate_keys(body: bytes, keys: int) -> None:
    """Refuse a JSON body that repeats a key in the top-level object or in an object instance:
    orjson (like most parsers) keeps the last value silently, so ``{"top_k": 1, "top_k": 9}`` or
    ``{"MedInc": "x", "MedInc": 8.3}`` would be half ignored.

    ``keys``: the keys orjson kept at those levels. Every member has one ":" outside strings, so
    when the body holds no more colons than that, no key can have been dropped (cheap: a memchr
    count). Otherwise (a colon in a string, deeper objects, a duplicate) the body is parsed
    again, with a hook that sees every key, to tell which.
    """
    if body.count(b":") <= keys:
        return
    duplicates: list[tuple[str, dict[str, Any]]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) != len(items) and not duplicates:
            seen: set[str] = set()
            key = next(k for k, _ in items if k in seen or seen.add(k))
            duplicates.append((key, obj))
        return obj

    try:
        document = json.loads(body, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return  # orjson read it: a stdlib limit (digits, depth); the later checks decide
    if not duplicates:
        return
    key, obj = duplicates[0]
    where = "the JSON object"
    if obj is not document:
        instances = document.get("instances") if isinstance(document, dict) else None
        index = next(
            (i for i, item in enumerate(instances or ()) if item is obj),
            None,
        )
        where = f"instance {index}" if index is not None else "a nested JSON object"
    raise ApiError(
        400, "invalid_json", f"duplicate key {quoted(key)} in {where}; give each key once"
    )


def _check_fields(document: Mapping[str, Any], allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    unknown = [key for key in document if key not in allowed]
    if unknown:
        raise ApiError(
            400,
            "unknown_field",
            f"unknown field {quoted(unknown[0])}; expected {', '.join(allowed)}",
        )


def check_count(count: int, limit: int, what: str = "instances") -> None:
    if count == 0:
        raise ApiError(400, "empty_instances", f"no {what} to predict; send at least one")
    if count > limit:
        raise ApiError(
            400, "too_many_instances", f"{count} {what} in one request; the limit is {limit}"
        )


# -- parameters ----------------------------------------------------------------------------


def parse_params(
    query: Mapping[str, str],
    body_fields: Mapping[str, Any],
    allowed: tuple[str, ...] = PARAMETERS,
    *,
    body_name: str = "the JSON body",
    body_is_text: bool = False,
) -> Params:
    """Parameters from the query string and the body (JSON fields or form fields), once each.

    Query-string and form values are text (``"3"``); JSON values must have their JSON type.
    """
    unknown = [key for key in query if key not in allowed]
    if unknown:
        raise ApiError(
            400,
            "unknown_parameter",
            f"unknown query parameter {quoted(unknown[0])}; expected {', '.join(allowed)}",
        )
    values: dict[str, Any] = {}
    text: set[str] = set()
    for name in allowed:
        in_query, in_body = name in query, name in body_fields
        for source, where in ((query, "the query string"), (body_fields, body_name)):
            # werkzeug's MultiDicts (query string, form fields) answer only the first value.
            count = len(source.getlist(name)) if hasattr(source, "getlist") else 0
            if count > 1:
                raise ApiError(
                    400, "invalid_parameter", f"{name} given {count} times in {where}; give it once"
                )
        if in_query and in_body:
            raise ApiError(
                400, "invalid_parameter", f"{name} given both in the query string and {body_name}"
            )
        if in_query:
            values[name] = query[name]
            text.add(name)
        elif in_body:
            values[name] = body_fields[name]
            if body_is_text:
                text.add(name)
    version = _version(values.get("version"), "version" in text)
    label = _label(values.get("version_label"))
    if version is not None and label is not None:
        raise ApiError(400, "invalid_parameter", "give version or version_label, not both")
    return Params(
        top_k=_top_k(values.get("top_k"), "top_k" in text),
        version=version,
        version_label=label,
        invert=_invert(values.get("invert")),
        return_image=_flag("return_image", values.get("return_image"), "return_image" in text),
    )


def _as_int(name: str, value: Any, text: bool, minimum: int, maximum: int | None = None) -> int:
    bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
    # [0-9], not \d: int() would also take other scripts' digits ("\uff11" -> 1).
    if text and isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        digits = value.strip().lstrip("+-").lstrip("0")
        if len(digits) > 19:  # beyond every bound here (2**63 - 1 has 19); no int() of it
            raise ApiError(
                400,
                "invalid_parameter",
                f"{name} must be {bound}, got a {len(digits)}-digit number",
            )
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise ApiError(
            400, "invalid_parameter", f"{name} must be an integer, got {json_kind(value)}"
        )
    if number < minimum or (maximum is not None and number > maximum):
        raise ApiError(400, "invalid_parameter", f"{name} must be {bound}, got {number}")
    return number


def _top_k(value: Any, text: bool) -> int | None:
    return None if value is None else _as_int("top_k", value, text, 1, 10)


def _version(value: Any, text: bool) -> int | None:
    return None if value is None else _as_int("version", value, text, 1, 2**63 - 1)


def _label(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _LABEL.fullmatch(value):
        raise ApiError(
            400,
            "invalid_parameter",
            "version_label must be 1..64 letters, digits, '_' or '-' (e.g. 'stable', 'canary'), "
            f"got {json_kind(value)}",
        )
    return value


def _flag(name: str, value: Any, text: bool) -> bool:
    # JSON booleans in a body; the strings "true"/"false" in a query string or form field.
    if value is None:
        return False
    if text and value in ("true", "false"):
        return value == "true"
    if not text and isinstance(value, bool):
        return value
    raise ApiError(
        400, "invalid_parameter", f"{name} must be true or false, got {json_kind(value)}"
    )


def _invert(value: Any) -> str | None:
    if value is None:
        return None
    if value not in INVERT_CHOICES:
        raise ApiError(
            400,
            "invalid_parameter",
            f"invert must be one of {', '.join(INVERT_CHOICES)}, got {json_kind(value)}",
        )
    return value


# -- Fashion-MNIST inputs ------------------------------------------------------------------


#: JSON bodies at least this big try the vectorised pixel reader first; below it (about 11
#: images) orjson + numpy is faster (measured in docs/performance.md).
FAST_PIXELS_BYTES = 32 * 1024


def fashion_json(
    body: bytes, query: Mapping[str, str], max_instances: int, max_pixels: int
) -> tuple[Params, np.ndarray]:
    """A JSON /predict body -> (parameters, uint8 [N, 28, 28])."""
    split = split_pixel_instances(body) if len(body) >= FAST_PIXELS_BYTES else None
    if split is not None:
        fields, images = split
        reject_duplicate_keys(body, len(fields) + 1)  # the pixel span holds no ":"
        _check_fields(fields, ("instances", *PARAMETERS))
        params = parse_params(query, fields)
        check_count(len(images), max_instances)
        return params, _invert_pixels(images, params.invert)
    document = parse_json_object(body, ("instances", *PARAMETERS))
    params = parse_params(query, document)
    check_count(len(document["instances"]), max_instances)
    return params, images_from_json(document, body, params, max_pixels)


def images_from_json(
    document: dict[str, Any], body: bytes, params: Params, max_pixels: int
) -> np.ndarray:
    """JSON instances (pixel arrays and/or ``{"b64": ...}`` objects) -> uint8 [N, 28, 28].

    ``document`` is the parsed JSON object, ``body`` its raw bytes."""
    instances = document["instances"]
    if not any(isinstance(item, dict) for item in instances):
        # Fast path: one vectorised conversion. The raw JSON tells cheaply (memchr-speed scans)
        # whether booleans need the per-element scan and whether every pixel is an integer.
        has_bools = b"true" in body or b"false" in body
        batch = pixels_to_batch(
            instances,
            check_bools=has_bools,
            only_ints=not has_bools and only_integer_pixels(body, document),
        )
        return _invert_pixels(batch, params.invert)
    images = []
    for index, item in enumerate(instances):
        where = f"instance {index}"
        if isinstance(item, dict):
            images.append(_image_from_b64(item, where, params, max_pixels))
        else:
            images.append(_invert_pixels(pixels_to_image(item, where=where), params.invert))
    return np.stack(images)


def only_integer_pixels(body: bytes, document: dict[str, Any]) -> bool:
    """True when the raw JSON cannot hold a float, string or boolean among the instances.

    Conservative: a "." anywhere (floats have one, or an exponent, caught by "e-"/"E-"; a
    positive exponent without a dot is a whole number), and more double quotes than the
    top-level keys and string values account for (a string inside the instances adds two).
    """
    if b"." in body or b"e-" in body or b"E-" in body:
        return False
    expected = sum(2 + (2 if isinstance(value, str) else 0) for value in document.values())
    return body.count(b'"') == expected


def _invert_pixels(pixels: np.ndarray, invert: str | None) -> np.ndarray:
    # Pixel arrays are taken as sent unless invert is given explicitly.
    return pixels if invert is None else invert_pixels(pixels, invert)


def _image_from_b64(item: dict[str, Any], where: str, params: Params, max_pixels: int):
    if set(item) != {"b64"}:
        extra = sorted(set(item) - {"b64"})
        detail = f"unknown key {quoted(extra[0])}" if extra else 'no "b64" key'
        raise ApiError(
            400, "invalid_instance", f'{where}: expected {{"b64": "<base64 image>"}}, {detail}'
        )
    encoded = item["b64"]
    if not isinstance(encoded, str):
        raise ApiError(
            400, "invalid_instance", f"{where}: b64 must be a string, got {json_kind(encoded)}"
        )
    try:
        data = base64_bytes(encoded)
    except CodecError as exc:
        raise ApiError(
            400, "invalid_instance", f"{where}: b64 is not valid base64: {exc}"
        ) from None
    return decode_one_image(data, where, params, max_pixels)


def decode_one_image(data: bytes, where: str, params: Params, max_pixels: int) -> np.ndarray:
    try:
        return decode_image(data, invert=params.invert or "auto", max_pixels=max_pixels)
    except CodecError as exc:
        code = "image_too_large" if "limit" in str(exc) else "invalid_image"
        raise ApiError(400, code, f"{where}: {exc}") from None


# -- housing inputs ------------------------------------------------------------------------


def housing_inputs(
    instances: list[Any],
    input_features: Mapping[str, tuple[str, ...]] | None,
    feature_names: tuple[str, ...] | None,
) -> dict[str, np.ndarray]:
    """Housing instances -> float32 ``{"wide": [N, 5], "deep": [N, 6]}`` (serving.codecs.housing),
    with the codec's errors as the gateway's answers."""
    try:
        return features_to_inputs(instances, input_features, feature_names)
    except ModelCardMissingError as exc:
        # The gateway's setup is at fault, not the request: 500, and say where the card belongs.
        raise ApiError(
            500,
            exc.code,
            f"instance {exc.index}: named features need the housing model card, which the gateway "
            'did not find under MODEL_CARDS_DIR; send {"wide": [...], "deep": [...]} instead',
        ) from None
    except HousingInputError as exc:
        # Not left to errors.py's CodecError handler: that answers every codec error with one
        # code, and these have their own (missing_feature, unknown_feature, invalid_instance).
        raise ApiError(400, exc.code, str(exc)) from None
