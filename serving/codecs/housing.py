"""Housing instances -> the housing model's inputs ``{"wide": float32 [N, 5], "deep": float32
[N, 6]}``: the one conversion, used by the gateway (/predict/housing) and the gRPC client.

An instance is either the 8 named raw features, split into the inputs by the model card's
``input_features``, or the inputs themselves, ``{"wide": [...], "deep": [...]}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from serving.codecs import CodecError
from serving.codecs.messages import json_kind, quoted


class HousingInputError(CodecError):
    """A housing instance that cannot be converted. ``code`` (``invalid_instance``,
    ``missing_feature``, ``unknown_feature``) is the gateway's stable error code for it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ModelCardMissingError(HousingInputError):
    """Named features arrived without a model card to split them (instance ``index``).

    Its own class because it is the server's fault, not the input's: the gateway answers 500.
    """

    def __init__(self, index: int) -> None:
        super().__init__(
            "model_card_missing",
            f"instance {index}: named features need the housing model card; "
            'send {"wide": [...], "deep": [...]} instead',
        )
        self.index = index


def features_to_inputs(
    instances: list[Any],
    input_features: Mapping[str, tuple[str, ...]] | None,
    feature_names: tuple[str, ...] | None,
) -> dict[str, np.ndarray]:
    """Housing instances -> float32 ``{"wide": [N, 5], "deep": [N, 6]}``, split with the model
    card's ``input_features`` and checked against its ``feature_names`` (both None: no card)."""
    # Without a model card only the {"wide", "deep"} form works; the model server checks widths.
    known = input_features is not None
    input_features = input_features or {"wide": (), "deep": ()}
    inputs = tuple(input_features)  # e.g. ("wide", "deep")
    names = tuple(feature_names or dict.fromkeys(f for fs in input_features.values() for f in fs))
    columns: dict[str, list[list[float]]] = {name: [] for name in inputs}
    for index, item in enumerate(instances):
        where = f"instance {index}"
        if not isinstance(item, dict):
            raise HousingInputError(
                "invalid_instance",
                f"{where}: expected an object of features, got {json_kind(item)}",
            )
        if item and all(key in inputs for key in item):
            for name in inputs:
                width = len(input_features[name]) if known else None
                columns[name].append(_input_row(item, name, width, where))
            continue
        if not known:
            raise ModelCardMissingError(index)
        missing = [name for name in names if name not in item]
        unknown = [key for key in item if key not in names]
        if unknown:
            raise HousingInputError(
                "unknown_feature",
                f"{where}: unknown feature {quoted(unknown[0])}; expected the features "
                f"{', '.join(names)} or the inputs {', '.join(inputs)}",
            )
        if missing:
            raise HousingInputError(
                "missing_feature",
                f"{where}: missing feature {missing[0]!r} (needs {', '.join(names)})",
            )
        for name in names:
            _check_number(item[name], f"{where}: feature {name!r}", finite=True)
        for name in inputs:
            columns[name].append([item[feature] for feature in input_features[name]])
    return {name: _float32(rows, name) for name, rows in columns.items()}


def _input_row(item: dict[str, Any], name: str, width: int | None, where: str) -> list[float]:
    if name not in item:
        raise HousingInputError("missing_feature", f"{where}: missing input {name!r}")
    row = item[name]
    if not isinstance(row, list) or (width is not None and len(row) != width):
        got = f"a list of {len(row)}" if isinstance(row, list) else json_kind(row)
        raise HousingInputError(
            "invalid_instance", f"{where}: {name!r} must be a list of {width} numbers, got {got}"
        )
    for position, value in enumerate(row):
        _check_number(value, f"{where}: {name}[{position}]")
    return row


#: Values from here on round to infinity in float32 (its largest value plus half a step).
_FLOAT32_OVERFLOW = 2.0**128 - 2.0**103


def _check_number(value: Any, where: str, *, finite: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HousingInputError(
            "invalid_instance", f"{where} must be a number, got {json_kind(value)}"
        )
    # Named features are checked here, by name: after the split into wide/deep, _float32 could
    # only name a column (a feature can be in both inputs).
    if finite and not abs(value) < _FLOAT32_OVERFLOW:
        raise HousingInputError("invalid_instance", f"{where} is {value}, not a finite float32")


def _float32(rows: list[list[float]], name: str) -> np.ndarray:
    try:
        with np.errstate(over="ignore"):
            array = np.asarray(rows, dtype=np.float64).astype(np.float32)
    except ValueError:
        lengths = sorted({len(row) for row in rows})
        raise HousingInputError(
            "invalid_instance", f"{name!r} rows have different lengths {lengths}"
        ) from None
    bad = ~np.isfinite(array)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise HousingInputError(
            "invalid_instance",
            f"instance {row}: {name}[{column}] is {rows[row][column]}, not a finite float32",
        )
    return array
