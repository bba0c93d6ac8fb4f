# ruff: noqa: N818  -- the names are the gRPC status names, fixed by the model-server contract
"""Errors of the local model server, with the gRPC status TF Serving gives for each case.

The data plane raises these; the gRPC adapter aborts with ``code`` and the REST adapter answers
``HTTP_STATUS[code]`` with ``{"error": message}``, as TF Serving's REST front end does.
"""

from __future__ import annotations

import grpc


class ModelServerError(Exception):
    """A request the server refuses; ``message`` names the model/version/input, expected vs got."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


class NotFound(ModelServerError):
    """Unknown model, version, label or signature."""

    code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(ModelServerError):
    """Missing/extra input, wrong dtype or shape, undecodable tensor, unknown output filter."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(ModelServerError):
    """The version exists but is not in a state that can serve (e.g. failed to load)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ModelServerError):
    """No servable version loaded yet, the batch queue is full, or the server is shutting down."""

    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(ModelServerError):
    """An RPC TF Serving has but this server does not (Classify, Regress, MultiInference)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(ModelServerError):
    """The graph call failed for a reason that is not the caller's input."""

    code = grpc.StatusCode.INTERNAL


#: gRPC status -> HTTP status, as TF Serving's REST server maps them
#: (tensorflow_serving/model_servers/http_server.cc, ToHTTPStatusCode).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
