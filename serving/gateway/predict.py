"""POST /predict (Fashion-MNIST) and POST /predict/housing."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from flask import Blueprint, Response, g, request

from serving.codecs.images import encode_png
from serving.gateway import metrics
from serving.gateway.errors import ApiError
from serving.gateway.parsing import (
    HOUSING_PARAMETERS,
    IMAGE_TYPES,
    PARAMETERS,
    Params,
    check_count,
    decode_one_image,
    fashion_json,
    housing_inputs,
    is_json,
    media_type,
    parse_json_object,
    parse_params,
    quoted,
    unsupported_media_type,
)
from serving.gateway.responses import json_response
from serving.gateway.state import state

bp = Blueprint("predict", __name__)

_ACCEPTED = "application/json, multipart/form-data, or an image/png or image/jpeg body"
_EMPTY_QUERY: dict[str, str] = {}


def _query() -> Any:
    # Parsing the query string costs a few microseconds; most requests have none.
    return request.args if request.query_string else _EMPTY_QUERY


def _check_content_encoding() -> None:
    # Bodies are read as sent: a gzip-compressed JSON or image body would otherwise be refused
    # as malformed JSON / an undecodable image, which misleads (RFC 9110: 415).
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if coding and coding != "identity":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"unsupported Content-Encoding {quoted(coding)}; send the body uncompressed",
        )


@bp.post("/predict")
def predict_fashion() -> Response:
    gw = state()
    config = gw.config
    g.model = config.fashion_model
    _check_content_encoding()
    mimetype = media_type(request)
    if is_json(mimetype):
        params, images = fashion_json(
            request.get_data(), _query(), config.max_instances, config.max_image_pixels
        )
    elif mimetype == "multipart/form-data":
        params, images = _images_from_multipart(config.max_instances, config.max_image_pixels)
    elif mimetype in IMAGE_TYPES:
        params = parse_params(_query(), {})
        data = request.get_data()
        if not data:
            raise ApiError(400, "invalid_image", "request body is empty; expected an image")
        images = decode_one_image(data, "body", params, config.max_image_pixels)[np.newaxis]
    else:
        raise unsupported_media_type(mimetype, _ACCEPTED)
    metrics.child(metrics.INSTANCES, config.fashion_model).observe(len(images))

    card = gw.catalog.card(config.fashion_model, params.version, load=False)
    outputs = ("probabilities",) if card and card.class_names else ("probabilities", "class_names")
    prediction = gw.predict(
        config.fashion_model,
        {"images": images},
        version=params.version,
        label=params.version_label,
        output_filter=outputs,
    )
    g.version = prediction.version
    probabilities = prediction.outputs.get("probabilities")
    if (
        probabilities is None
        or probabilities.shape[:1] != (len(images),)
        or probabilities.ndim != 2
    ):
        got = None if probabilities is None else list(probabilities.shape)
        raise ApiError(
            502, "backend_error", f"model answered probabilities of shape {got}, expected [N, 10]"
        )
    card = gw.catalog.card(config.fashion_model, prediction.version)
    names = card.class_names if card and card.class_names else None
    predictions = _fashion_predictions(
        probabilities, names, prediction.outputs.get("class_names"), params.top_k
    )
    if params.return_image:
        # The input after the gateway's conversion: lets the demo page show what the model saw.
        for item, image in zip(predictions, images, strict=True):
            item["image_png"] = base64.b64encode(encode_png(image)).decode("ascii")
    return json_response(
        {"model": config.fashion_model, "version": prediction.version, "predictions": predictions}
    )


def _images_from_multipart(max_instances: int, max_pixels: int) -> tuple[Params, np.ndarray]:
    # werkzeug's parser is silent by default: a missing boundary or a malformed or truncated body
    # would read as "no files at all". Parsed here with errors on, to say what is wrong.
    parser = request.make_form_data_parser()
    parser.silent = False
    try:
        _stream, form, file_dict = parser.parse(
            request.stream, request.mimetype, request.content_length, request.mimetype_params
        )
    except ValueError as exc:
        boundary = request.mimetype_params.get("boundary")
        if not boundary:
            message = "multipart/form-data without a boundary parameter in its Content-Type"
        else:
            # werkzeug says in which state its parser stopped; PREAMBLE: no boundary line at all.
            detail = (
                f"no part starts with the boundary line --{boundary}"
                if "PREAMBLE" in str(exc)
                else f"it ends before the closing boundary line --{boundary}--"
                if "State." in str(exc)
                else str(exc)
            )
            message = f"malformed or truncated multipart/form-data body: {detail}"
        raise ApiError(400, "invalid_multipart", message) from None
    files = list(file_dict.items(multi=True))
    params = parse_params(_query(), form, body_name="the form fields", body_is_text=True)
    unknown = [key for key in form if key not in PARAMETERS]
    if unknown:
        raise ApiError(
            400,
            "unknown_field",
            f"unknown form field {quoted(unknown[0])}; send image files and optionally "
            f"{', '.join(PARAMETERS)}",
        )
    check_count(len(files), max_instances, "image files")
    images = []
    for index, (field, storage) in enumerate(files):
        data = storage.read()
        where = f"file {index} ({quoted(field)}" + (
            f", {quoted(storage.filename)})" if storage.filename else ")"
        )
        if not data:
            raise ApiError(400, "invalid_image", f"{where}: the file is empty")
        images.append(decode_one_image(data, where, params, max_pixels))
    return params, np.stack(images)


def _fashion_predictions(
    probabilities: np.ndarray,
    names: tuple[str, ...] | None,
    model_names: np.ndarray | None,
    top_k: int | None,
) -> list[dict[str, Any]]:
    class_ids = probabilities.argmax(axis=1)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k] if top_k else None
    predictions = []
    for i, class_id in enumerate(class_ids.tolist()):
        row = probabilities[i]
        if names is not None and class_id < len(names):
            class_name = names[class_id]
        elif model_names is not None:
            raw = model_names[i]
            class_name = raw.decode() if isinstance(raw, bytes) else str(raw)
        else:
            class_name = None
        item: dict[str, Any] = {
            "class_id": class_id,
            "class_name": class_name,
            "probability": row[class_id],
            "probabilities": row,
        }
        if order is not None:
            item["top_k"] = [
                {
                    "class_id": k,
                    "class_name": names[k] if names is not None and k < len(names) else None,
                    "probability": row[k],
                }
                for k in order[i].tolist()
            ]
        predictions.append(item)
    return predictions


@bp.post("/predict/housing")
def predict_housing() -> Response:
    gw = state()
    config = gw.config
    g.model = config.housing_model
    _check_content_encoding()
    mimetype = media_type(request)
    if not is_json(mimetype):
        raise unsupported_media_type(mimetype, "application/json")
    document = parse_json_object(request.get_data(), ("instances", *HOUSING_PARAMETERS))
    params = parse_params(_query(), document, HOUSING_PARAMETERS)
    instances = document["instances"]
    check_count(len(instances), config.max_instances)
    card = gw.catalog.card(config.housing_model, params.version, load=False)
    inputs = housing_inputs(
        instances,
        card.input_features if card else None,
        card.feature_names if card else None,
    )
    metrics.child(metrics.INSTANCES, config.housing_model).observe(len(instances))
    prediction = gw.predict(
        config.housing_model, inputs, version=params.version, label=params.version_label
    )
    g.version = prediction.version
    outputs = []
    for name in ("main", "aux"):
        values = prediction.outputs.get(name)
        if values is None or values.size != len(instances):
            got = None if values is None else list(values.shape)
            raise ApiError(
                502, "backend_error", f"model answered {name!r} of shape {got}, expected [N]"
            )
        outputs.append(values.reshape(-1))  # float32: orjson prints the shortest repr
    return json_response(
        {
            "model": config.housing_model,
            "version": prediction.version,
            "unit": "100k USD",
            "predictions": [{"main": m, "aux": a} for m, a in zip(*outputs, strict=True)],
        }
    )
