"""TF Serving's message classes and gRPC stubs, without importing tensorflow.

Importing ``tensorflow_serving.apis`` drags in ``tensorflow`` (about 0.5 GB of RSS and seconds of
start-up per process). The gateway and the clients only need the wire format, so the classes are
built here from a FileDescriptorSet dumped once from the installed ``tensorflow-serving-api``
(``python -m serving.protos.build``). A private descriptor pool keeps them from clashing with
the generated modules when both live in one process (the model server, the tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_DESCRIPTOR_SET = Path(__file__).with_name("tfs_apis.binpb")


def _load_pool() -> descriptor_pool.DescriptorPool:
    file_set = descriptor_pb2.FileDescriptorSet.FromString(_DESCRIPTOR_SET.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file_proto in file_set.file:
        pool.Add(file_proto)
    return pool


POOL = _load_pool()


def message_class(full_name: str) -> type:
    """The message class for a fully qualified proto name, e.g. ``tensorflow.TensorProto``."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


PredictRequest = message_class("tensorflow.serving.PredictRequest")
PredictResponse = message_class("tensorflow.serving.PredictResponse")
GetModelMetadataRequest = message_class("tensorflow.serving.GetModelMetadataRequest")
GetModelMetadataResponse = message_class("tensorflow.serving.GetModelMetadataResponse")
SignatureDefMap = message_class("tensorflow.serving.SignatureDefMap")
GetModelStatusRequest = message_class("tensorflow.serving.GetModelStatusRequest")
GetModelStatusResponse = message_class("tensorflow.serving.GetModelStatusResponse")
ModelVersionStatus = message_class("tensorflow.serving.ModelVersionStatus")
ModelSpec = message_class("tensorflow.serving.ModelSpec")
TensorProto = message_class("tensorflow.TensorProto")
PredictionLog = message_class("tensorflow.serving.PredictionLog")

_DATA_TYPE = POOL.FindEnumTypeByName("tensorflow.DataType")
#: DataType enum name -> number, e.g. ``DATA_TYPE["DT_FLOAT"] == 1``.
DATA_TYPE: dict[str, int] = {value.name: value.number for value in _DATA_TYPE.values}
DATA_TYPE_NAME: dict[int, str] = {number: name for name, number in DATA_TYPE.items()}

_MODEL_STATE = POOL.FindEnumTypeByName("tensorflow.serving.ModelVersionStatus.State")
#: ModelVersionStatus.State number -> name, e.g. ``30 -> "AVAILABLE"``.
MODEL_STATE_NAME: dict[int, str] = {value.number: value.name for value in _MODEL_STATE.values}
MODEL_STATE: dict[str, int] = {name: number for number, name in MODEL_STATE_NAME.items()}


class _ServiceStub:
    """A client stub with one callable per RPC of a service in the pool (unary-unary only)."""

    _service_name = ""

    def __init__(self, channel: grpc.Channel) -> None:
        service = POOL.FindServiceByName(self._service_name)
        for method in service.methods:
            request_class = message_factory.GetMessageClass(method.input_type)
            response_class = message_factory.GetMessageClass(method.output_type)
            callable_ = channel.unary_unary(
                f"/{service.full_name}/{method.name}",
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            setattr(self, method.name, callable_)

    def __getattr__(self, name: str) -> Any:  # only reached for unknown RPC names
        raise AttributeError(f"{self._service_name} has no RPC {name!r}")


class PredictionServiceStub(_ServiceStub):
    """``tensorflow.serving.PredictionService``: Predict, GetModelMetadata, Classify, ..."""

    _service_name = "tensorflow.serving.PredictionService"


class ModelServiceStub(_ServiceStub):
    """``tensorflow.serving.ModelService``: GetModelStatus, HandleReloadConfigRequest."""

    _service_name = "tensorflow.serving.ModelService"
