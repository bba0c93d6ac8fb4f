"""A tiny in-process PredictionService/ModelService for unit tests of the gRPC client.

It speaks the real wire format (serving.protos) but computes toy outputs, and can be told to fail
with UNAVAILABLE a few times or to answer slowly, which a real server cannot do on demand.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import numpy as np

from serving import protos
from serving.codecs.tensors import ndarray_to_tensor_proto, tensor_proto_to_ndarray

CLASS_NAMES = [f"class {i}" for i in range(10)]
LABELS = {"stable": 1, "canary": 2}


def fake_fashion_outputs(images: np.ndarray) -> dict[str, np.ndarray]:
    """Deterministic toy classifier: logits from row means, softmaxed."""
    logits = images.reshape(len(images), 28, 28)[:, :10, :].mean(axis=2).astype(np.float64) / 25.0
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    class_ids = probabilities.argmax(axis=1).astype(np.int64)
    return {
        "probabilities": probabilities.astype(np.float32),
        "class_ids": class_ids,
        "class_names": np.array([CLASS_NAMES[i].encode() for i in class_ids], dtype=object),
    }


@dataclass
class FakeBehaviour:
    """Knobs the tests turn."""

    fail_unavailable: int = 0  # the next N calls fail with fail_code
    fail_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    delay: float = 0.0  # seconds to sleep before answering
    calls: int = 0
    versions: dict[str, list[int]] = field(
        default_factory=lambda: {"fashion_mnist": [1, 2], "housing": [1]}
    )
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeModelServer:
    def __init__(self) -> None:
        self.behaviour = FakeBehaviour()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {
            "Predict": self._unary(self._predict, protos.PredictRequest),
            "GetModelMetadata": self._unary(self._metadata, protos.GetModelMetadataRequest),
        }
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "tensorflow.serving.PredictionService", handlers
                ),
                grpc.method_handlers_generic_handler(
                    "tensorflow.serving.ModelService",
                    {"GetModelStatus": self._unary(self._status, protos.GetModelStatusRequest)},
                ),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.target = f"127.0.0.1:{self.port}"

    def start(self) -> FakeModelServer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=None)

    def _unary(self, function, request_class):
        def handler(request, context):
            b = self.behaviour
            with b.lock:
                b.calls += 1
                fail = b.fail_unavailable > 0
                if fail:
                    b.fail_unavailable -= 1
            if fail:
                context.abort(b.fail_code, "fake server is warming up")
            if b.delay:
                time.sleep(b.delay)
            return function(request, context)

        return grpc.unary_unary_rpc_method_handler(
            handler,
            request_deserializer=request_class.FromString,
            response_serializer=lambda message: message.SerializeToString(),
        )

    def _resolve(self, spec, context) -> int:
        versions = self.behaviour.versions.get(spec.name)
        if not versions:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {spec.name}")
        if spec.HasField("version"):
            if spec.version.value not in versions:
                context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Specific({spec.name}, {spec.version.value})",
                )
            return spec.version.value
        if spec.version_label:
            if spec.version_label not in LABELS or LABELS[spec.version_label] not in versions:
                context.abort(
                    grpc.StatusCode.NOT_FOUND, f"Unknown version label {spec.version_label!r}"
                )
            return LABELS[spec.version_label]
        return max(versions)

    def _predict(self, request, context):
        version = self._resolve(request.model_spec, context)
        response = protos.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        response.model_spec.signature_name = "serving_default"
        if request.model_spec.name == "fashion_mnist":
            if "images" not in request.inputs:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "input 'images' is missing")
            outputs = fake_fashion_outputs(tensor_proto_to_ndarray(request.inputs["images"]))
        else:
            wide = tensor_proto_to_ndarray(request.inputs["wide"]).astype(np.float32)
            deep = tensor_proto_to_ndarray(request.inputs["deep"]).astype(np.float32)
            outputs = {"main": wide.sum(axis=1), "aux": deep.sum(axis=1)}
        for name, array in outputs.items():
            if not request.output_filter or name in request.output_filter:
                ndarray_to_tensor_proto(array, response.outputs[name])
        return response

    def _metadata(self, request, context):
        version = self._resolve(request.model_spec, context)
        signature_map = protos.SignatureDefMap()
        signature = signature_map.signature_def["serving_default"]
        signature.method_name = "tensorflow/serving/predict"
        info = signature.inputs["images"]
        info.name = "serving_default_images:0"
        info.dtype = 4
        for size in (-1, 28, 28):
            info.tensor_shape.dim.add().size = size
        response = protos.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        any_message = response.metadata["signature_def"]
        any_message.Pack(signature_map)
        return response

    def _status(self, request, context):
        self._resolve(request.model_spec, context)
        response = protos.GetModelStatusResponse()
        for version in self.behaviour.versions[request.model_spec.name]:
            item = response.model_version_status.add()
            item.version = version
            item.state = protos.MODEL_STATE["AVAILABLE"]
        return response
