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
from tensorflow.core.protobuf import config_pb2
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


def _spec(info: Any) -> TensorSpecInfo:
    """A SignatureDef TensorInfo -> numpy dtype (``object`` for strings) and shape."""
    dtype = tf.as_dtype(info.dtype)
    numpy_dtype = np.dtype(object) if dtype == tf.string else np.dtype(dtype.as_numpy_dtype)
    shape = info.tensor_shape
    dims = None if shape.unknown_rank else tuple(int(d.size) for d in shape.dim)
    return TensorSpecInfo(numpy_dtype, dims)


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
        return self._call(inputs)


def session_config(intra_op_threads: int = 0, inter_op_threads: int = 0) -> Any:
    """TF Serving's ``--tensorflow_{intra,inter}_op_parallelism`` as a session ConfigProto.

    0 lets TensorFlow choose; a negative inter-op value runs every op in the calling thread
    (TensorFlow's ConfigProto semantics).
    """
    return tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=intra_op_threads,
        inter_op_parallelism_threads=inter_op_threads,
        allow_soft_placement=True,
    )


def _session_call(
    session: Any, signature_def: Any
) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """One ``Session`` callable for a SignatureDef, as TF Serving runs signatures.

    TF Serving feeds and fetches the SignatureDef's tensor names in one ``Session::Run``; this
    is the same through TensorFlow's C callable API (``TF_SessionMakeCallable``): feeds and
    fetches are resolved once, and a call is one C call that gives up the GIL for the whole run.
    ``Session.make_callable`` with feeds falls back to ``Session.run``, whose Python feed and
    fetch handling cost ≈0.5 ms per call against ≈0.08 ms here (one image; docs/modelserver.md).
    """
    input_names = list(signature_def.inputs)
    output_names = list(signature_def.outputs)
    options = config_pb2.CallableOptions(
        feed=[signature_def.inputs[n].name for n in input_names],
        fetch=[signature_def.outputs[n].name for n in output_names],
    )
    # BaseSession's own entry point for this API (what tf.keras 2 used for its training loops).
    run = session._make_callable_from_options(options)

    def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(output_names, run(*[inputs[n] for n in input_names]), strict=True))

    return call


class Servable:
    """A loaded SavedModel version. Build it with :func:`load_servable`."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        session: Any,
        signatures: dict[str, Signature],
        signature_def_map: Any,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.signatures = signatures
        self.signature_def_map = signature_def_map
        # Owns the graph and variables; TensorFlow closes it when the last request holding
        # this servable lets go (closing it on unload would fail requests still running).
        self._session = session

    def __repr__(self) -> str:
        return f"Servable({self.name!r}, {self.version})"


def load_servable(name: str, version: int, path: Path, config: Any = None) -> Servable:
    """Load a SavedModel directory into a graph and session of its own (``config``: a
    ConfigProto, see :func:`session_config`); raises LoadError with a one-line reason."""
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=config)
    try:
        with graph.as_default():
            meta_graph = _load_meta_graph(session, path)
        signatures = {
            sig_name: _signature(session, sig_name, signature_def)
            for sig_name, signature_def in meta_graph.signature_def.items()
            if not sig_name.startswith("__")  # TF's own entries (__saved_model_init_op)
        }
        if not signatures:
            raise LoadError(f"SavedModel at {path} has no signatures to serve")
    except LoadError:
        session.close()
        raise
    except Exception as exc:  # TF raises many types (OSError, ValueError, NotFoundError...)
        session.close()
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LoadError(f"cannot load SavedModel from {path}: {first_line}") from exc
    # GetModelMetadata answers the whole map, __saved_model_init_op included, as TF Serving does.
    signature_def_map = get_model_metadata_pb2.SignatureDefMap(
        signature_def=meta_graph.signature_def
    )
    return Servable(name, version, path, session, signatures, signature_def_map)


def _load_meta_graph(session: Any, path: Path) -> Any:
    # TensorFlow's v1 loader: the Python face of the C++ LoadSavedModel that TF Serving uses
    # (restore the variables, run the init ops, return the MetaGraphDef tagged "serve").
    from tensorflow.python.saved_model.loader_impl import SavedModelLoader

    return SavedModelLoader(str(path)).load(session, ["serve"])


def _signature(session: Any, sig_name: str, signature_def: Any) -> Signature:
    for kind, infos in (("input", signature_def.inputs), ("output", signature_def.outputs)):
        for key, info in infos.items():
            encoding = info.WhichOneof("encoding")
            if encoding != "name":
                raise LoadError(
                    f"signature '{sig_name}' {kind} '{key}' is a {encoding} tensor; "
                    f"only dense tensors are served"
                )
    inputs = {key: _spec(info) for key, info in signature_def.inputs.items()}
    outputs = {key: _spec(info) for key, info in signature_def.outputs.items()}
    batchable = bool(inputs) and all(
        spec.shape is not None and len(spec.shape) >= 1 and spec.shape[0] == -1
        for spec in (*inputs.values(), *outputs.values())
    )
    return Signature(sig_name, inputs, outputs, batchable, _session_call(session, signature_def))


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
