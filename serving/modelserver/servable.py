"""One loaded version of a model: its signatures, their fast call path, and its warmup.

A servable is immutable once loaded; the repository swaps whole servables, so a request that
resolved one keeps a consistent version to the end even if that version is unloaded meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_log_pb2

from serving.codecs import CodecError
from serving.codecs.tensors import tensor_proto_to_ndarray
from serving.modelserver.specs import TensorSpecInfo

log = logging.getLogger("serving.modelserver")

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


class LoadError(Exception):
    """A version that cannot be served; the message goes into GetModelStatus."""


def _spec(tensor_spec: Any) -> TensorSpecInfo:
    dtype = np.dtype(object) if tensor_spec.dtype == tf.string else tensor_spec.dtype.as_numpy_dtype
    shape = tensor_spec.shape
    dims = None if shape.rank is None else tuple(-1 if d is None else int(d) for d in shape)
    return TensorSpecInfo(np.dtype(dtype), dims)


@dataclass(frozen=True)
class Signature:
    """A callable signature with its input/output specs."""

    name: str
    inputs: dict[str, TensorSpecInfo]
    outputs: dict[str, TensorSpecInfo]
    batchable: bool  # every input and output has a leading batch dimension of unknown size
    _call: Callable[[dict[str, np.ndarray]], dict[str, Any]]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on validated inputs; string outputs come back as object arrays."""
        return {name: value.numpy() for name, value in self._call(inputs).items()}


def _fast_call(fn: Any, names: list[str]) -> Callable[[dict[str, np.ndarray]], dict[str, Any]]:
    """The cheapest way to call a loaded signature function.

    ``fn(**kwargs)`` re-binds and re-validates its structured arguments on every call, which
    costs about as much as the graph itself for one image. ``_call_flat`` (TensorFlow's own
    internal entry point for the same function) takes the flat tensors in the order of
    ``fn.inputs``; it is used only when that order provably matches the input names, else the
    public keyword call is kept.
    """
    flat_names = [t.name.split(":")[0] for t in fn.inputs[: len(names)]]
    call_flat = getattr(fn, "_call_flat", None)
    captured = list(getattr(fn, "captured_inputs", ()))
    if call_flat is None or sorted(flat_names) != sorted(names):
        return lambda inputs: fn(**inputs)
    order = flat_names

    def call(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        return call_flat([tf.constant(inputs[name]) for name in order], captured)

    return call


def _read_signature_defs(path: Path) -> Any:
    """The MetaGraphDef signature_defs TF Serving's GetModelMetadata returns."""
    pb = path / "saved_model.pb"
    if not pb.is_file():
        return get_model_metadata_pb2.SignatureDefMap()
    saved = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    for meta_graph in saved.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return get_model_metadata_pb2.SignatureDefMap(signature_def=meta_graph.signature_def)
    raise LoadError(f"{pb} has no MetaGraph tagged 'serve'")


class Servable:
    """A loaded SavedModel version. Build it with :func:`load_servable`."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        loaded: Any,
        signatures: dict[str, Signature],
        signature_def_map: Any,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.signatures = signatures
        self.signature_def_map = signature_def_map
        self._loaded = loaded  # keeps the variables alive while the servable is referenced

    def __repr__(self) -> str:
        return f"Servable({self.name!r}, {self.version})"


def load_servable(name: str, version: int, path: Path) -> Servable:
    """Load a SavedModel directory; raises LoadError with a one-line reason."""
    try:
        loaded = tf.saved_model.load(str(path), tags=["serve"])
        signature_def_map = _read_signature_defs(path)
    except LoadError:
        raise
    except Exception as exc:  # TF raises many types (OSError, ValueError, NotFoundError...)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LoadError(f"cannot load SavedModel from {path}: {first_line}") from exc
    signatures: dict[str, Signature] = {}
    for sig_name, fn in loaded.signatures.items():
        _, kwargs = fn.structured_input_signature
        inputs = {key: _spec(spec) for key, spec in kwargs.items()}
        outputs = {key: _spec(spec) for key, spec in fn.structured_outputs.items()}
        batchable = bool(inputs) and all(
            spec.shape is not None and len(spec.shape) >= 1 and spec.shape[0] == -1
            for spec in (*inputs.values(), *outputs.values())
        )
        signatures[sig_name] = Signature(
            sig_name, inputs, outputs, batchable, _fast_call(fn, list(inputs))
        )
    if not signatures:
        raise LoadError(f"SavedModel at {path} has no signatures to serve")
    return Servable(name, version, path, loaded, signatures, signature_def_map)


def warmup_requests(path: Path) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(signature_name, inputs) of each PredictLog in assets.extra/tf_serving_warmup_requests."""
    file = path / WARMUP_FILE
    if not file.is_file():
        return []
    requests = []
    try:
        records = tf.data.TFRecordDataset(str(file)).take(MAX_WARMUP_RECORDS + 1)
        for index, record in enumerate(records.as_numpy_iterator()):
            if index == MAX_WARMUP_RECORDS:
                raise LoadError(f"{file} has more than {MAX_WARMUP_RECORDS} warmup records")
            entry = prediction_log_pb2.PredictionLog.FromString(record)
            kind = entry.WhichOneof("log_type")
            if kind != "predict_log":
                raise LoadError(f"{file} record {index}: {kind} warmup is not supported")
            request = entry.predict_log.request
            inputs = {k: tensor_proto_to_ndarray(v) for k, v in request.inputs.items()}
            requests.append((request.model_spec.signature_name or "serving_default", inputs))
    except (CodecError, tf.errors.OpError) as exc:
        raise LoadError(f"cannot read warmup records {file}: {exc}") from exc
    return requests
