"""Checks of a Predict request against a signature, before the graph runs.

TF Serving passes inputs to the graph unchecked and reports what the kernel says (e.g.
"Matrix size-incompatible: In[0]: [1,783]..."). Here every refusal names the input and the
expected vs received dtype/shape. Messages keep TF Serving's wording where it has one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from serving.modelserver.errors import InvalidArgument
from serving.modelserver.servable import Signature
from serving.modelserver.specs import TensorSpecInfo

_OBJECT = np.dtype(object)


def _names(names: object) -> str:
    return "{" + ",".join(sorted(names)) + "}"  # type: ignore[call-overload]


def _dtype_name(dtype: np.dtype) -> str:
    return "string" if dtype == _OBJECT or dtype.kind in "SU" else dtype.name


def _check_names(signature: Signature, inputs: dict[str, np.ndarray]) -> None:
    sent, wanted = set(inputs), set(signature.inputs)
    if sent == wanted:
        return
    raise InvalidArgument(
        f"input size does not match signature: {len(sent)}!={len(wanted)} "
        f"len({_names(sent)}) != len({_names(wanted)}). Sent extra: {_names(sent - wanted)}. "
        f"Missing but required: {_names(wanted - sent)}."
    )


def _check_one(name: str, array: np.ndarray, spec: TensorSpecInfo) -> np.ndarray:
    if spec.dtype == _OBJECT:
        if array.dtype.kind not in "OS":
            raise InvalidArgument(
                f"input '{name}' expects dtype string, got {_dtype_name(array.dtype)}"
            )
    elif array.dtype != spec.dtype:
        raise InvalidArgument(
            f"input '{name}' expects dtype {spec.dtype.name}, got {_dtype_name(array.dtype)}"
        )
    if spec.shape is None:
        return array
    shape = array.shape
    if len(shape) != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
    ):
        expected = [("?" if d == -1 else d) for d in spec.shape]
        raise InvalidArgument(
            f"input '{name}' has shape {list(shape)} but the signature expects "
            f"{expected} (? = any size)".replace("'?'", "?")
        )
    return array


def validate_inputs(signature: Signature, inputs: dict[str, np.ndarray]) -> int:
    """Check names, dtypes and shapes; returns the batch size (rows), or -1 if not batched."""
    _check_names(signature, inputs)
    for name, array in inputs.items():
        _check_one(name, array, signature.inputs[name])
    if not signature.batchable:
        return -1
    rows = {name: array.shape[0] for name, array in inputs.items()}
    if len(set(rows.values())) > 1:
        detail = ", ".join(f"'{k}' has {v}" for k, v in sorted(rows.items()))
        raise InvalidArgument(
            f"inputs must have the same batch size (0th dimension), but {detail} rows"
        )
    return next(iter(rows.values()))


def validate_output_filter(signature: Signature, output_filter: Sequence[str]) -> list[str]:
    """The output names to return, in request order (all outputs when the filter is empty)."""
    if not output_filter:
        return list(signature.outputs)
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise InvalidArgument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {_names(signature.outputs)}."
            )
        if alias in seen:
            raise InvalidArgument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return list(output_filter)
