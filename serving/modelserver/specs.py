"""Plain value types shared by the repository, the data plane and the protocol adapters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModelRef:
    """Which model a request asks for: latest (neither set), a ``version`` or a ``label``."""

    name: str
    version: int | None = None
    label: str | None = None

    def describe(self) -> str:
        if self.version is not None:
            return f"model {self.name!r} version {self.version}"
        if self.label is not None:
            return f"model {self.name!r} version label {self.label!r}"
        return f"model {self.name!r}"


@dataclass(frozen=True)
class TensorSpecInfo:
    """One signature input/output: numpy dtype (``object`` for strings) and shape (-1 unknown)."""

    dtype: np.dtype
    shape: tuple[int, ...] | None  # None: unknown rank

    def describe(self) -> str:
        name = "string" if self.dtype == np.dtype(object) else self.dtype.name
        shape = "unknown" if self.shape is None else str(list(self.shape))
        return f"{name} {shape}"


@dataclass(frozen=True)
class VersionState:
    """One version of a model as GetModelStatus reports it."""

    version: int
    state: str  # "START" | "LOADING" | "AVAILABLE" | "UNLOADING" | "END"
    error_code: int = 0  # gRPC status code value; 0 = OK
    error_message: str = ""


@dataclass
class PredictResult:
    """The answer of one Predict: which version answered and the (filtered) outputs."""

    model_name: str
    version: int
    signature_name: str
    outputs: dict[str, np.ndarray]
