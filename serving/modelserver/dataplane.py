"""The one data plane under both protocol adapters: resolve the version, validate, batch, run.

The gRPC and REST adapters only translate wire formats; every check (names, dtypes, shapes)
happens here once, so both APIs refuse the same requests with the same messages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from serving.modelserver.batching import Batcher
from serving.modelserver.errors import FailedPrecondition
from serving.modelserver.repository import ModelRepository
from serving.modelserver.servable import Servable, Signature
from serving.modelserver.specs import ModelRef, PredictResult, TensorSpecInfo, VersionState
from serving.modelserver.validation import validate_inputs, validate_output_filter

__all__ = [
    "DataPlane",
    "ModelRef",
    "PredictResult",
    "TensorSpecInfo",
    "VersionState",
]

DEFAULT_SIGNATURE = "serving_default"


def _signature(servable: Servable, signature_name: str) -> Signature:
    signature = servable.signatures.get(signature_name or DEFAULT_SIGNATURE)
    if signature is None:
        known = ", ".join(sorted(servable.signatures))
        raise FailedPrecondition(
            f'Serving signature key "{signature_name}" not found. '
            f"Model '{servable.name}' version {servable.version} has: {known}"
        )
    return signature


class DataPlane:
    """Thread-safe facade over the model repository and the batcher; raises ModelServerError."""

    def __init__(
        self, repository: ModelRepository, batcher: Batcher | None = None, metrics: Any = None
    ) -> None:
        self._repository = repository
        self._batcher = batcher
        self._metrics = metrics  # serving.modelserver.metrics.ServerMetrics or None
        self._inflight = 0
        self._idle = threading.Condition()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no predict is running (graceful shutdown); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)

    def predict(
        self,
        ref: ModelRef,
        inputs: dict[str, np.ndarray],
        signature_name: str = DEFAULT_SIGNATURE,
        output_filter: Sequence[str] = (),
    ) -> PredictResult:
        """Run one request; outputs keep the signature's output names (filtered if asked)."""
        with self._idle:
            self._inflight += 1
        try:
            return self._predict(ref, inputs, signature_name, output_filter)
        finally:
            with self._idle:
                self._inflight -= 1
                if self._inflight == 0:
                    self._idle.notify_all()

    def _predict(
        self,
        ref: ModelRef,
        inputs: dict[str, np.ndarray],
        signature_name: str,
        output_filter: Sequence[str],
    ) -> PredictResult:
        servable = self._repository.resolve(ref)
        signature_name = signature_name or DEFAULT_SIGNATURE
        signature = _signature(servable, signature_name)
        rows = validate_inputs(signature, inputs)
        wanted = validate_output_filter(signature, output_filter)
        if self._batcher is not None and signature.batchable:
            outputs = self._batcher.run(servable, signature, inputs, rows)
        else:
            started = time.perf_counter()
            outputs = signature.run(inputs)
            if self._metrics is not None:
                self._metrics.record_runtime(
                    servable.name, servable.version, "predict", time.perf_counter() - started
                )
        return PredictResult(
            model_name=servable.name,
            version=servable.version,
            signature_name=signature_name,
            outputs={name: outputs[name] for name in wanted},
        )

    def signature_inputs(self, ref: ModelRef, signature_name: str) -> dict[str, TensorSpecInfo]:
        """Inputs of a signature of the version ``ref`` resolves to (dtypes for REST decoding)."""
        servable = self._repository.resolve(ref)
        return dict(_signature(servable, signature_name).inputs)

    def metadata(self, ref: ModelRef) -> tuple[int, Any]:
        """(version, ``tensorflow_serving.apis.get_model_metadata_pb2.SignatureDefMap``)."""
        servable = self._repository.resolve(ref)
        return servable.version, servable.signature_def_map

    def status(self, ref: ModelRef) -> list[VersionState]:
        """Version states of a model (all versions, newest first, or the one ``ref`` names)."""
        return self._repository.status(ref)

    def ready(self) -> bool:
        """True when every configured model has an AVAILABLE version."""
        return self._repository.ready()
