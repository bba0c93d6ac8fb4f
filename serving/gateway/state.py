"""Per-process gateway state: config, the gRPC client, model cards and the readiness cache.

One ``GatewayState`` per app (so per gunicorn worker). The gRPC channel inside the client is
created lazily on the first call, i.e. after gunicorn forked the worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from flask import current_app

from serving.gateway import metrics
from serving.gateway.catalog import ModelCatalog
from serving.gateway.coalesce import Coalescer
from serving.gateway.config import GatewayConfig
from serving.tfs_client import BackendError, Prediction, TFServingClient

T = TypeVar("T")

#: Backend calls one worker may have in flight at once (more pipeline, smaller batches).
COALESCE_IN_FLIGHT = 1


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str
    models: dict[str, list[int]]  # model -> AVAILABLE versions


class GatewayState:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.client = TFServingClient(
            config.model_server_grpc,
            timeout=config.timeout_seconds,
            retries=config.retries,
            backoff=config.retry_backoff_seconds,
        )
        # Concurrent predictions of this worker share backend calls (measured: the per-call
        # cost of gRPC in Python, not HTTP, capped throughput; docs/performance.md). None
        # calls the client directly.
        self.coalescer: Coalescer[tuple[str, int]] | None = Coalescer(
            max_rows=max(config.max_instances, 1), max_in_flight=COALESCE_IN_FLIGHT
        )
        models = tuple(dict.fromkeys((config.fashion_model, config.housing_model)))
        self.catalog = ModelCatalog(config.model_cards_dir, models)
        self._ready_lock = threading.Lock()
        self._ready: Readiness | None = None
        self._ready_at = 0.0

    # -- backend calls, timed ----------------------------------------------------------------

    def predict(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int | None,
        label: str | None,
        output_filter: Sequence[str] = (),
    ) -> Prediction:
        if self.coalescer is None:
            return self._timed(
                model,
                "Predict",
                lambda: self.client.predict(
                    model, inputs, version=version, label=label, output_filter=output_filter
                ),
            )
        key = (
            model,
            version,
            label,
            tuple(output_filter),
            tuple((name, a.dtype.str, a.shape[1:]) for name, a in inputs.items()),
        )

        # One deadline per request, waiting in the coalescer included: the batch call gets
        # what is left of its oldest request's budget (the earliest deadline in the batch).
        budget = self.config.timeout_seconds
        deadline = time.monotonic() + budget

        def call(merged: Mapping[str, np.ndarray]) -> tuple[tuple[str, int], Any]:
            answer = self._timed(
                model,
                "Predict",
                lambda: self.client.predict(
                    model,
                    merged,
                    version=version,
                    label=label,
                    output_filter=output_filter,
                    timeout=max(deadline - time.monotonic(), 1e-3),
                ),
            )
            return (answer.model, answer.version), answer.outputs

        (name, answered), outputs = self.coalescer.run(key, inputs, call, timeout=budget)
        return Prediction(model=name, version=answered, outputs=outputs)

    def status(self, model: str) -> list[dict[str, Any]]:
        return self._timed(model, "GetModelStatus", lambda: self.client.status(model))

    @staticmethod
    def _timed(model: str, rpc: str, backend_call: Callable[[], T]) -> T:
        """``backend_call()``, observed once in the backend histogram: per gRPC call (a coalesced
        call serving many requests counts once, and time queued behind a busy call is not
        backend time; it shows in the request duration)."""
        start = time.perf_counter()
        outcome = "OK"
        try:
            return backend_call()
        except BackendError as exc:
            outcome = exc.grpc_code.name if exc.grpc_code is not None else "ERROR"
            raise
        finally:
            metrics.child(metrics.BACKEND_SECONDS, model, rpc, outcome).observe(
                time.perf_counter() - start
            )

    # -- readiness -----------------------------------------------------------------------------

    def readiness(self) -> Readiness:
        """Whether the model server answers and every required model has an AVAILABLE version;
        the answer is reused for ``ready_cache_seconds`` so frequent probes stay cheap."""
        now = time.monotonic()
        cached = self._ready
        if cached is not None and now - self._ready_at < self.config.ready_cache_seconds:
            return cached
        with self._ready_lock:  # one probe at a time; the others reuse its answer
            if self._ready is not None and time.monotonic() - self._ready_at < (
                self.config.ready_cache_seconds
            ):
                return self._ready
            answer = self._probe()
            self._ready, self._ready_at = answer, time.monotonic()
            return answer

    def _probe(self) -> Readiness:
        available: dict[str, list[int]] = {}
        for model in self.config.required_models:
            try:
                versions = self.status(model)
            except BackendError as exc:
                return Readiness(False, exc.message, available)
            ok = sorted(v["version"] for v in versions if v["state"] == "AVAILABLE")
            if not ok:
                states = ", ".join(f"{v['version']}: {v['state']}" for v in versions) or "none"
                return Readiness(
                    False, f"model {model!r} has no AVAILABLE version ({states})", available
                )
            available[model] = ok
        return Readiness(True, "", available)


def state() -> GatewayState:
    """The state of the current app."""
    return current_app.extensions["gateway"]
