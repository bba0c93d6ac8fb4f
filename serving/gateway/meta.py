"""GET /models, GET /metrics, GET /openapi.json and GET / (a pointer to the docs)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from serving import protos
from serving.codecs.tensors import dtype_name
from serving.gateway import metrics
from serving.gateway.openapi import openapi_document
from serving.gateway.responses import json_response
from serving.gateway.state import state

bp = Blueprint("meta", __name__)


@bp.get("/")
def index() -> Response:
    return json_response(
        {
            "service": "fashion-serving gateway",
            "endpoints": ["/predict", "/predict/housing", "/models", "/healthz", "/readyz"],
            "openapi": "/openapi.json",
            "metrics": "/metrics",
        }
    )


@bp.get("/models")
def models() -> Response:
    gw = state()
    answer = []
    for model in dict.fromkeys((gw.config.fashion_model, gw.config.housing_model)):
        versions = gw.status(model)  # BackendError -> 503/404 via the error handlers
        available = [v["version"] for v in versions if v["state"] == "AVAILABLE"]
        metadata = gw.client.metadata(model) if available else None
        card = gw.catalog.card(model, metadata["model_spec"]["version"] if metadata else None)
        answer.append(
            {
                "name": model,
                "versions": versions,
                "signature": _signature(metadata) if metadata else None,
                "card": card.summary if card else None,
            }
        )
    return json_response({"models": answer})


def _tensor(info: dict[str, Any]) -> dict[str, Any]:
    # "DT_FLOAT" -> "float32": the numpy names the model cards and the docs use.
    dtype = dtype_name(protos.DATA_TYPE.get(info.get("dtype", "DT_INVALID"), 0))
    shape = info.get("tensor_shape", {})
    dims = (
        None
        if shape.get("unknown_rank")
        else [int(d.get("size", -1)) for d in shape.get("dim", [])]
    )
    return {"dtype": dtype, "shape": dims}


def _signature(metadata: dict[str, Any]) -> dict[str, Any]:
    """The served version's ``serving_default`` signature as {inputs, outputs} of dtype/shape."""
    signatures = metadata["signature_def"]
    signature = signatures.get("serving_default") or next(iter(signatures.values()), {})
    return {
        "version": metadata["model_spec"]["version"],
        "name": "serving_default" if "serving_default" in signatures else None,
        "inputs": {k: _tensor(v) for k, v in sorted(signature.get("inputs", {}).items())},
        "outputs": {k: _tensor(v) for k, v in sorted(signature.get("outputs", {}).items())},
    }


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, mimetype=None, content_type=content_type)


@bp.get("/openapi.json")
def openapi() -> Response:
    gw = state()
    return json_response(
        openapi_document(gw.config, gw.catalog.card(gw.config.housing_model, None))
    )
