"""The bench's "ceiling" server: real gRPC, checks and batching, graph output from a cache."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np

from serving.codecs.tensors import ndarray_to_tensor_proto, tensor_proto_to_ndarray
from serving.protos import PredictionServiceStub, PredictRequest
from tests.bench.modelserver import CACHED_GRAPH_SERVER
from tests.helpers.modelserver_process import running_modelserver


def _probabilities(stub: PredictionServiceStub, images: np.ndarray) -> np.ndarray:
    request = PredictRequest()
    request.model_spec.name = "fashion_mnist"
    ndarray_to_tensor_proto(images, request.inputs["images"])
    return tensor_proto_to_ndarray(stub.Predict(request, timeout=30).outputs["probabilities"])


def test_ceiling_server_repeats_the_first_answer_and_still_checks_inputs(
    models_root: Path,
) -> None:
    rng = np.random.default_rng(7)
    first, other = (rng.integers(0, 256, (1, 28, 28), dtype=np.uint8) for _ in range(2))
    with (
        running_modelserver(models_root, batching=True, module=CACHED_GRAPH_SERVER) as cached,
        grpc.insecure_channel(cached.grpc_target) as channel,
    ):
        stub = PredictionServiceStub(channel)
        answer = _probabilities(stub, first)
        assert answer.shape == (1, 10) and abs(float(answer.sum()) - 1) < 1e-5
        assert np.array_equal(_probabilities(stub, other), answer)  # cached, not computed
        assert np.array_equal(
            _probabilities(stub, np.concatenate([other] * 3)), answer.repeat(3, 0)
        )
        request = PredictRequest()
        request.model_spec.name = "fashion_mnist"
        ndarray_to_tensor_proto(first.reshape(1, 784), request.inputs["images"])
        try:
            stub.Predict(request, timeout=30)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT  # the real checks still run
        else:
            raise AssertionError("a wrongly shaped input was answered")
