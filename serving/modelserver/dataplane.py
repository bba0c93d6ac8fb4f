"""The one data plane under both protocol adapters: resolve the version, validate, batch, run.

The gRPC and REST adapters only translate wire formats; every check (names, dtypes, shapes)
happens here once, so both APIs refuse the same requests with the same messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from serving.modelserver.errors import InvalidArgument
from serving.modelserver.specs import ModelRef, PredictResult, TensorSpecInfo, VersionState

__all__ = [
    "DataPlane",
    "ModelRef",
    "PredictResult",
    "TensorSpecInfo",
    "VersionState",
]


class DataPlane:
    """Thread-safe facade over the model repository and the batcher; raises ModelServerError."""

    def __init__(self, repository: Any, batcher: Any = None, metrics: Any = None) -> None:
        self._repository = repository
        self._batcher = batcher
        self._metrics = metrics

    def predict(
        self,
        ref: ModelRef,
        inputs: dict[str, np.ndarray],
        signature_name: str = "serving_default",
        output_filter: Sequence[str] = (),
    ) -> PredictResult:
        """Run one request; outputs keep the signature's output names (filtered if asked)."""
        raise InvalidArgument("not implemented yet")

    def signature_inputs(self, ref: ModelRef, signature_name: str) -> dict[str, TensorSpecInfo]:
        """Inputs of a signature of the version ``ref`` resolves to (dtypes for REST decoding)."""
        raise InvalidArgument("not implemented yet")

    def metadata(self, ref: ModelRef) -> tuple[int, Any]:
        """(version, ``tensorflow_serving.apis.get_model_metadata_pb2.SignatureDefMap``)."""
        raise InvalidArgument("not implemented yet")

    def status(self, ref: ModelRef) -> list[VersionState]:
        """Version states of a model (all versions, or the one ``ref`` names)."""
        raise InvalidArgument("not implemented yet")

    def ready(self) -> bool:
        """True when every configured model has an AVAILABLE version."""
        return False
