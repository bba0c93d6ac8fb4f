"""GET /healthz (the process is alive) and GET /readyz (the model server can serve both models)."""

from __future__ import annotations

from flask import Blueprint, Response

from serving.gateway.errors import error_response
from serving.gateway.responses import json_response
from serving.gateway.state import state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    # Liveness only: never calls the model server, so a backend outage does not restart us.
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    gw = state()
    answer = gw.readiness()
    if answer.ready:
        return json_response({"status": "ready", "models": answer.models})
    return error_response(
        503,
        "not_ready",
        answer.reason,
        {"Retry-After": str(gw.config.retry_after_seconds)},
    )
