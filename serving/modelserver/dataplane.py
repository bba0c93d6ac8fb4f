"""The one data plane under both protocol adapters: resolve the version, validate, batch, run.

The gRPC and REST adapters only translate wire formats; every check (names, dtypes, shapes)
happens here once, so both APIs refuse the same requests with the same messages.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np

from serving.modelserver.batching import AsyncBatcher, Batcher
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
        self,
        repository: ModelRepository,
        batcher: Batcher | None = None,
        metrics: Any = None,
        *,
        async_batcher: AsyncBatcher | None = None,
        executor: Executor | None = None,
    ) -> None:
        self._repository = repository
        self._batcher = batcher  # threaded callers (REST)
        self._async_batcher = async_batcher  # the asyncio gRPC server
        self._executor = executor  # where the asyncio server runs unbatched graph calls
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

    def _prepare(
        self,
        ref: ModelRef,
        inputs: dict[str, np.ndarray],
        signature_name: str,
        output_filter: Sequence[str],
    ) -> tuple[Servable, Signature, str, int, list[str]]:
        servable = self._repository.resolve(ref)
        signature_name = signature_name or DEFAULT_SIGNATURE
        signature = _signature(servable, signature_name)
        rows = validate_inputs(signature, inputs)
        wanted = validate_output_filter(signature, output_filter)
        return servable, signature, signature_name, rows, wanted

    def _run_unbatched(
        self, servable: Servable, signature: Signature, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        outputs = signature.run(inputs)
        if self._metrics is not None:
            self._metrics.record_runtime(
                servable.name, servable.version, "predict", time.perf_counter() - started
            )
        return outputs

    def _predict(
        self,
        ref: ModelRef,
        inputs: dict[str, np.ndarray],
        signature_name: str,
        output_filter: Sequence[str],
    ) -> PredictResult:
        servable, signature, signature_name, rows, wanted = self._prepare(
            ref, inputs, signature_name, output_filter
        )
        if self._batcher is not None and signature.batchable:
            outputs = self._batcher.run(servable, signature, inputs, rows)
        else:
            outputs = self._run_unbatched(servable, signature, inputs)
        return PredictResult(
            servable.name, servable.version, signature_name, {n: outputs[n] for n in wanted}
        )

    async def predict_async(
        self,
        ref: ModelRef,
        inputs: dict[str, np.ndarray],
        signature_name: str = DEFAULT_SIGNATURE,
        output_filter: Sequence[str] = (),
    ) -> PredictResult:
        """``predict`` for the asyncio gRPC server: checks run on the loop (they are cheap),
        the graph call in the executor or through the async batcher. Loop thread only."""
        if self._executor is None:
            raise RuntimeError("DataPlane was built without an executor for async calls")
        with self._idle:
            self._inflight += 1
        try:
            servable, signature, signature_name, rows, wanted = self._prepare(
                ref, inputs, signature_name, output_filter
            )
            if self._async_batcher is not None and signature.batchable:
                outputs = await self._async_batcher.run(servable, signature, inputs, rows)
            else:
                loop = asyncio.get_running_loop()
                outputs = await loop.run_in_executor(
                    self._executor, self._run_unbatched, servable, signature, inputs
                )
            return PredictResult(
                servable.name, servable.version, signature_name, {n: outputs[n] for n in wanted}
            )
        finally:
            with self._idle:
                self._inflight -= 1
                if self._inflight == 0:
                    self._idle.notify_all()

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
