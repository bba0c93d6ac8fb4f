"""Admission control: a per-worker cap on prediction requests in flight (``GATEWAY_MAX_INFLIGHT``).

Past the cap a prediction is refused at once with 503 ``overloaded`` + ``Retry-After`` instead of
waiting behind the others: under overload latency stays bounded and clients learn to back off.
Only the prediction routes are limited; health probes, metrics and metadata always get through.

The cap counts requests inside the app. With gevent workers (the default) every accepted
connection can be in the app, so the cap applies directly and is on by default (128). With
gthread workers the app never sees more than ``GATEWAY_THREADS`` requests per worker (the rest
wait in gunicorn's unbounded thread-pool queue), so the cap bites only when ``GATEWAY_THREADS``
is larger than it: then the extra threads take requests off that queue and refuse them in well
under a millisecond. 0 turns it off.
"""

from __future__ import annotations

import threading

from flask import Flask, Response, g, request

from serving.gateway.config import GatewayConfig
from serving.gateway.errors import error_response

#: Flask endpoints the cap applies to (blueprint "predict").
LIMITED_ENDPOINTS = frozenset({"predict.predict_fashion", "predict.predict_housing"})


class Admission:
    """A counter with a ceiling; thread-safe (and greenlet-safe once gevent has patched locks)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self.in_flight >= self.limit:
                return False
            self.in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


def install(app: Flask, config: GatewayConfig) -> None:
    """Register the hooks when ``config.max_inflight`` > 0. Install it after the metrics hooks
    (refusals are counted like any answer) and after authentication (unauthenticated requests
    must not take a slot)."""
    if config.max_inflight <= 0:
        return
    admission = Admission(config.max_inflight)
    retry_after = {"Retry-After": str(config.retry_after_seconds)}
    message = (
        f"the gateway is at its limit of {config.max_inflight} predictions in flight per worker; "
        f"retry after {config.retry_after_seconds} s"
    )

    @app.before_request
    def _admit() -> Response | None:
        if request.endpoint not in LIMITED_ENDPOINTS:
            return None
        if not admission.try_enter():
            return error_response(503, "overloaded", message, retry_after)
        g.admitted = True
        return None

    @app.teardown_request
    def _release(_error: BaseException | None) -> None:
        if g.pop("admitted", False):
            admission.leave()
