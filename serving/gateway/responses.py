"""JSON responses encoded with orjson (numpy arrays and scalars serialised natively)."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    response = Response(
        orjson.dumps(payload, option=_OPTIONS), status=status, mimetype="application/json"
    )
    if headers:
        response.headers.update(headers)
    return response
