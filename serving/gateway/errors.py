"""Every error the gateway answers, in one place: ``{"error": {"code": ..., "message": ...}}``.

Routes raise ``ApiError`` (or let ``CodecError`` / ``BackendError`` propagate); the handlers
registered here turn them, and Flask/werkzeug's own HTTP errors, into JSON. Unexpected exceptions
become a 500 without a trace (logged server side). Requests gunicorn refuses before the app runs
get the same body from ``serving/gateway/workers.py`` (``error_body``).
"""

from __future__ import annotations

import logging

import orjson
from flask import Flask, Response
from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkSize, NoMoreData
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from serving.codecs import CodecError
from serving.tfs_client import (
    BackendError,
    BackendUnavailable,
    DeadlineExceeded,
    InvalidRequest,
    ModelNotFound,
)

log = logging.getLogger("serving.gateway")


class ApiError(Exception):
    """An error with an HTTP status, a stable machine-readable code and a readable message."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


#: The message of every 500: the details go to the log only.
INTERNAL_MESSAGE = "internal error; the gateway logged the details"


def unsupported_coding_message(coding: str) -> str:
    """The message of a 501 ``unsupported_transfer_encoding``; ``coding`` arrives quoted."""
    return f"unsupported Transfer-Encoding {coding}; send chunked or a Content-Length"


def error_body(code: str, message: str) -> bytes:
    """The JSON body of every error answer."""
    return orjson.dumps({"error": {"code": code, "message": message}})


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    response = Response(error_body(code, message), status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# Werkzeug's HTTP errors -> our codes (the status stays werkzeug's).
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    431: "headers_too_large",
}


def backend_error_to_api(error: BackendError, retry_after: int) -> ApiError:
    """Map a model-server failure to the HTTP answer users get."""
    if isinstance(error, ModelNotFound):
        return ApiError(404, "model_not_found", error.message)
    if isinstance(error, InvalidRequest):
        return ApiError(400, "rejected_by_model", error.message)
    if isinstance(error, BackendUnavailable):
        return ApiError(
            503, "backend_unavailable", error.message, {"Retry-After": str(retry_after)}
        )
    if isinstance(error, DeadlineExceeded):
        return ApiError(504, "backend_timeout", error.message)
    return ApiError(502, "backend_error", error.message)


def register_error_handlers(app: Flask, *, retry_after: int, max_body_bytes: int) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        return error_response(error.status, error.code, error.message, error.headers)

    @app.errorhandler(CodecError)
    def _codec_error(error: CodecError) -> Response:
        return error_response(400, "invalid_input", str(error))

    @app.errorhandler(BackendError)
    def _backend_error(error: BackendError) -> Response:
        api = backend_error_to_api(error, retry_after)
        if api.status >= 500:
            log.warning("backend error: %s", error.message)
        return error_response(api.status, api.code, api.message, api.headers)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(error: RequestEntityTooLarge) -> Response:
        return error_response(
            413,
            "payload_too_large",
            f"request body is larger than {max_body_bytes} bytes or has too many form parts",
        )

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = _HTTP_CODES.get(status, f"http_{status}")
        if status == 404:
            message = "no such endpoint; see GET /openapi.json"
        elif status == 405:
            allowed = sorted(error.valid_methods or []) if hasattr(error, "valid_methods") else []
            message = f"method not allowed; allowed: {', '.join(allowed)}"
        else:
            message = error.description or error.name
        response = error_response(status, code, message)
        for name, value in error.get_headers():
            if name.lower() == "allow":
                response.headers[name] = value
        return response

    # gunicorn decodes a chunked body only while the app reads it, so broken framing surfaces
    # here as an OSError (a 500 otherwise), not in gunicorn's own 400 path. The messages are
    # fixed: gunicorn's would quote body bytes.
    @app.errorhandler(InvalidChunkSize)
    @app.errorhandler(ChunkMissingTerminator)
    @app.errorhandler(NoMoreData)
    def _bad_chunked_body(error: OSError) -> Response:
        if isinstance(error, InvalidChunkSize):
            problem = "a chunk size is not a hexadecimal number"
        elif isinstance(error, ChunkMissingTerminator):
            problem = "a chunk does not end with CRLF"
        else:
            problem = "the body ended before its last (zero-size) chunk"
        return error_response(
            400, "invalid_chunked_encoding", f"malformed chunked request body: {problem}"
        )

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal", INTERNAL_MESSAGE)
