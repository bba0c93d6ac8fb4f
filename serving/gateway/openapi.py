"""The OpenAPI 3.1 document of the gateway (GET /openapi.json).

tests/gateway/test_openapi.py validates real responses against these schemas and checks that the
documented paths/methods are exactly the app's routes, so this document cannot drift silently.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from serving.gateway.catalog import CardInfo
from serving.gateway.config import GatewayConfig
from serving.gateway.security import document_security
from training.data.housing import DEEP_FEATURES, FEATURE_NAMES, WIDE_FEATURES

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_PIXEL = {"type": "integer", "minimum": 0, "maximum": 255}
_VERSION = {"type": "integer", "minimum": 1}
_LABEL = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "examples": ["stable", "canary"]}
_TOP_K = {"type": "integer", "minimum": 1, "maximum": 10}
_INVERT = {"type": "string", "enum": ["auto", "always", "never"]}
_RETURN_IMAGE = {"type": "boolean", "default": False}
_BACKEND_ERRORS = {
    "500": _error("Unexpected error, logged by the gateway (internal; model_card_missing)."),
    "502": _error("The model server answered something unusable (backend_error)."),
    "503": _error(
        "The model server is unreachable or overloaded (backend_unavailable); see Retry-After."
    ),
    "504": _error("The model server did not answer within the deadline (backend_timeout)."),
}


def _schemas(
    max_instances: int, features: tuple[str, ...], widths: tuple[int, int]
) -> dict[str, Any]:
    class_score = {
        "type": "object",
        "required": ["class_id", "class_name", "probability"],
        "additionalProperties": False,
        "properties": {
            "class_id": {"type": "integer", "minimum": 0, "maximum": 9},
            "class_name": {"type": ["string", "null"]},
            "probability": {"type": "number", "minimum": 0, "maximum": 1},
        },
    }
    tensor = {
        "type": "object",
        "required": ["dtype", "shape"],
        "properties": {
            "dtype": {"type": "string"},
            "shape": {"type": ["array", "null"], "items": {"type": "integer"}},
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "additionalProperties": False,
                    "properties": {
                        "code": {"type": "string", "examples": ["invalid_input"]},
                        "message": {"type": "string"},
                    },
                }
            },
        },
        "PixelImage": {
            "description": "28x28 rows of integers 0..255, or 784 integers (row-major).",
            "oneOf": [
                {
                    "type": "array",
                    "minItems": 28,
                    "maxItems": 28,
                    "items": {"type": "array", "minItems": 28, "maxItems": 28, "items": _PIXEL},
                },
                {"type": "array", "minItems": 784, "maxItems": 784, "items": _PIXEL},
            ],
        },
        "B64Image": {
            "type": "object",
            "required": ["b64"],
            "additionalProperties": False,
            "properties": {
                "b64": {
                    "type": "string",
                    "contentEncoding": "base64",
                    "description": "A PNG/JPEG/GIF/BMP/WEBP/TIFF file, base64-encoded (standard "
                    "alphabet; padding optional; line breaks and other ASCII whitespace ignored).",
                }
            },
        },
        "PredictRequest": {
            "type": "object",
            "required": ["instances"],
            "additionalProperties": False,
            "properties": {
                "instances": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": max_instances,
                    "items": {"oneOf": [_ref("PixelImage"), _ref("B64Image")]},
                },
                "top_k": _TOP_K,
                "version": _VERSION,
                "version_label": _LABEL,
                "invert": _INVERT,
                "return_image": _RETURN_IMAGE,
            },
        },
        "ClassScore": class_score,
        "FashionPrediction": {
            "type": "object",
            "required": ["class_id", "class_name", "probability", "probabilities"],
            "additionalProperties": False,
            "properties": {
                **class_score["properties"],
                "probabilities": {
                    "type": "array",
                    "minItems": 10,
                    "maxItems": 10,
                    "items": {"type": "number", "minimum": 0, "maximum": 1},
                    "description": "All class probabilities, ordered by class id; they sum to 1.",
                },
                "top_k": {
                    "type": "array",
                    "items": _ref("ClassScore"),
                    "description": "Only with top_k: the k most probable classes, best first.",
                },
                "image_png": {
                    "type": "string",
                    "contentEncoding": "base64",
                    "description": "Only with return_image: the 28x28 input as the model got it "
                    "(after the gateway's conversion), a base64 grayscale PNG.",
                },
            },
        },
        "PredictResponse": {
            "type": "object",
            "required": ["model", "version", "predictions"],
            "additionalProperties": False,
            "properties": {
                "model": {"type": "string"},
                "version": {"type": "integer", "description": "The version that answered."},
                "predictions": {
                    "type": "array",
                    "items": _ref("FashionPrediction"),
                    "description": "One per instance, in request order.",
                },
            },
        },
        "HousingFeatures": {
            "type": "object",
            "additionalProperties": False,
            "required": list(features),
            "properties": {name: {"type": "number"} for name in features},
        },
        "HousingInputs": {
            "type": "object",
            "additionalProperties": False,
            "required": ["wide", "deep"],
            "properties": {
                "wide": {
                    "type": "array",
                    "items": {"type": "number"},
                    "minItems": widths[0],
                    "maxItems": widths[0],
                },
                "deep": {
                    "type": "array",
                    "items": {"type": "number"},
                    "minItems": widths[1],
                    "maxItems": widths[1],
                },
            },
        },
        "HousingRequest": {
            "type": "object",
            "required": ["instances"],
            "additionalProperties": False,
            "properties": {
                "instances": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": max_instances,
                    "items": {"oneOf": [_ref("HousingFeatures"), _ref("HousingInputs")]},
                },
                "version": _VERSION,
                "version_label": _LABEL,
            },
        },
        "HousingResponse": {
            "type": "object",
            "required": ["model", "version", "unit", "predictions"],
            "additionalProperties": False,
            "properties": {
                "model": {"type": "string"},
                "version": {"type": "integer"},
                "unit": {"const": "100k USD"},
                "predictions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["main", "aux"],
                        "additionalProperties": False,
                        "properties": {
                            "main": {"type": "number", "description": "Main head, in $100k."},
                            "aux": {"type": "number", "description": "Auxiliary head, in $100k."},
                        },
                    },
                },
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ok"}},
        },
        "Ready": {
            "type": "object",
            "required": ["status", "models"],
            "properties": {
                "status": {"const": "ready"},
                "models": {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": {"type": "integer"}},
                    "description": "Model name -> its AVAILABLE versions.",
                },
            },
        },
        "Models": {
            "type": "object",
            "required": ["models"],
            "properties": {
                "models": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "versions", "signature", "card"],
                        "properties": {
                            "name": {"type": "string"},
                            "versions": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["version", "state", "error_code", "error_message"],
                                    "properties": {
                                        "version": {"type": "integer"},
                                        "state": {"type": "string"},
                                        "error_code": {"type": "string"},
                                        "error_message": {"type": "string"},
                                    },
                                },
                            },
                            "signature": {
                                "type": ["object", "null"],
                                "properties": {
                                    "version": {"type": "integer"},
                                    "inputs": {"type": "object", "additionalProperties": tensor},
                                    "outputs": {"type": "object", "additionalProperties": tensor},
                                },
                            },
                            "card": {"type": ["object", "null"]},
                        },
                    },
                }
            },
        },
        "Index": {"type": "object", "required": ["endpoints"]},
    }


@lru_cache(maxsize=4)
def _document(
    max_instances: int,
    max_body_bytes: int,
    features: tuple[str, ...],
    widths: tuple[int, int],
    auth: bool = False,
    metrics_require_key: bool = False,
) -> dict[str, Any]:
    selection = [
        _query("version", "Ask for this model version.", _VERSION),
        _query("version_label", "Ask for the version with this label.", _LABEL),
    ]
    fashion_query = [
        _query("top_k", "Also return the k most probable classes.", _TOP_K),
        *selection,
        _query(
            "invert",
            "auto: invert images with a light background (default for files); always; never "
            "(default for pixel arrays).",
            _INVERT,
        ),
        _query(
            "return_image",
            "true: also return each 28x28 input as the model got it (image_png).",
            _RETURN_IMAGE,
        ),
    ]
    input_errors = {
        "400": _error("Bad input; the message names the instance/field and what was expected."),
        "404": _error("Unknown model version or version label (model_not_found)."),
        "413": _error(f"Body larger than {max_body_bytes} bytes (payload_too_large)."),
        "415": _error(
            "Unsupported Content-Type, or a Content-Encoding other than identity "
            "(unsupported_media_type)."
        ),
        **_BACKEND_ERRORS,
    }
    binary = {"schema": {"type": "string", "format": "binary"}}
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "fashion-serving gateway",
            "version": "1.0.0",
            "description": "Fashion-MNIST classification and California housing regression in "
            "front of a TF Serving-compatible model server. See docs/gateway.md.",
        },
        "paths": {
            "/predict": {
                "post": {
                    "summary": "Classify Fashion-MNIST images",
                    "parameters": fashion_query,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": _ref("PredictRequest")},
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "description": "One or more image files under any field "
                                    "name; optional fields top_k, version, version_label, invert, "
                                    "return_image.",
                                    "additionalProperties": {"type": "string", "format": "binary"},
                                }
                            },
                            "image/png": binary,
                            "image/jpeg": binary,
                        },
                    },
                    "responses": {"200": _json("One prediction per image.", "PredictResponse")}
                    | input_errors,
                }
            },
            "/predict/housing": {
                "post": {
                    "summary": "Predict California median house values",
                    "parameters": selection,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("HousingRequest")}},
                    },
                    "responses": {"200": _json("One prediction per house.", "HousingResponse")}
                    | input_errors,
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: the gateway process answers",
                    "responses": {"200": _json("Alive.", "Health")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: the model server answers and every model has an "
                    "AVAILABLE version (cached ~1 s)",
                    "responses": {
                        "200": _json("Ready.", "Ready"),
                        "503": _error("Not ready (not_ready); the message says why."),
                    },
                }
            },
            "/models": {
                "get": {
                    "summary": "Status, signature and model card of the served models",
                    "responses": {"200": _json("The served models.", "Models")} | _BACKEND_ERRORS,
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text exposition format)",
                    "responses": {
                        "200": {
                            "description": "Metrics of all workers.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/": {
                "get": {
                    "summary": "Index of the endpoints",
                    "responses": {"200": _json("Endpoints.", "Index")},
                }
            },
        },
        "components": {"schemas": _schemas(max_instances, features, widths)},
    }
    # API keys (serving/gateway/security.py): securitySchemes and 401/403 when they are on.
    return document_security(document, auth=auth, metrics_require_key=metrics_require_key)


def openapi_document(config: GatewayConfig, housing_card: CardInfo | None = None) -> dict[str, Any]:
    """The document for this configuration; housing feature names and input widths come from
    the housing model card when the gateway has one."""
    # Without a card (no housing model exported yet), the training job's feature order.
    features, widths = tuple(FEATURE_NAMES), (len(WIDE_FEATURES), len(DEEP_FEATURES))
    if housing_card is not None and housing_card.input_features:
        inputs = housing_card.input_features
        features = housing_card.feature_names or tuple(
            dict.fromkeys(f for names in inputs.values() for f in names)
        )
        widths = (len(inputs.get("wide", ())), len(inputs.get("deep", ())))
    return _document(
        config.max_instances,
        config.max_body_bytes,
        tuple(features),
        widths,
        bool(config.api_keys),
        config.metrics_require_key,
    )
