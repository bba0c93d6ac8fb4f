"""gRPC conformance of the local model server, driven only through the official
``tensorflow-serving-api`` stubs and messages (what TF Serving clients use)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.codecs.tensors import ndarray_to_tensor_proto, tensor_proto_to_ndarray
from tests.helpers.modelserver_process import ModelServerProcess, health_status

pytestmark = pytest.mark.slow

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


@pytest.fixture(scope="module")
def channel(modelserver: ModelServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(modelserver.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="module")
def predict_stub(channel: grpc.Channel) -> Any:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel: grpc.Channel) -> Any:
    return model_service_pb2_grpc.ModelServiceStub(channel)


@pytest.fixture(scope="module")
def local_models(models_root: Path) -> dict[str, Any]:
    """The same SavedModels called in-process: the reference answers."""
    import tensorflow as tf

    return {
        name: tf.saved_model.load(str(models_root / name / "1")).signatures["serving_default"]
        for name in ("fashion_mnist", "housing")
    }


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def housing_inputs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(3.0, 1.0, (n, 8)).astype(np.float32)
    return {"wide": features[:, :5].copy(), "deep": features[:, 2:].copy()}


def request(
    name: str,
    inputs: dict[str, np.ndarray],
    *,
    version: int | None = None,
    label: str | None = None,
    signature: str = "",
    output_filter: tuple[str, ...] = (),
) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    req.model_spec.signature_name = signature
    for key, value in inputs.items():
        ndarray_to_tensor_proto(value, req.inputs[key])
    req.output_filter.extend(output_filter)
    return req


def outputs(response: predict_pb2.PredictResponse) -> dict[str, np.ndarray]:
    return {key: tensor_proto_to_ndarray(value) for key, value in response.outputs.items()}


def rpc_error(call: Any, req: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(req, timeout=30)
    return info.value


# ---- Predict --------------------------------------------------------------------------


def test_predict_fashion_mnist_matches_the_savedmodel(
    predict_stub: Any, local_models: dict
) -> None:
    x = images(3)
    response = predict_stub.Predict(request("fashion_mnist", {"images": x}), timeout=30)
    assert response.model_spec.name == "fashion_mnist"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    got = outputs(response)
    assert set(got) == {"probabilities", "class_ids", "class_names"}
    assert got["probabilities"].shape == (3, 10) and got["probabilities"].dtype == np.float32
    assert got["class_ids"].dtype == np.int64
    want = {k: v.numpy() for k, v in local_models["fashion_mnist"](images=x).items()}
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["class_ids"], want["class_ids"])
    assert list(got["class_names"]) == list(want["class_names"])


def test_predict_housing_two_inputs(predict_stub: Any, local_models: dict) -> None:
    x = housing_inputs(4)
    got = outputs(predict_stub.Predict(request("housing", x), timeout=30))
    assert set(got) == {"main", "aux"}
    assert got["main"].shape == (4,) and got["aux"].shape == (4,)
    want = local_models["housing"](**x)
    np.testing.assert_allclose(got["main"], want["main"].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["aux"], want["aux"].numpy(), rtol=1e-5, atol=1e-5)


def _same_answer_as_tensor_content(
    stub: Any, shape: tuple[int, ...], int_val: list[int], pixels: np.ndarray
) -> np.ndarray:
    """Predict once with uint8 ``int_val`` values declared as ``shape`` and once with
    ``pixels`` as tensor_content; asserts both answer the same and returns the probabilities."""
    typed = predict_pb2.PredictRequest()
    typed.model_spec.name = "fashion_mnist"
    tensor = typed.inputs["images"]
    tensor.dtype = 4  # DT_UINT8
    for size in shape:
        tensor.tensor_shape.dim.add().size = size
    tensor.int_val.extend(int_val)
    content = predict_pb2.PredictRequest()
    content.model_spec.name = "fashion_mnist"
    ndarray_to_tensor_proto(pixels, content.inputs["images"])
    a = outputs(stub.Predict(typed, timeout=30))["probabilities"]
    b = outputs(stub.Predict(content, timeout=30))["probabilities"]
    np.testing.assert_array_equal(a, b)
    return a


def test_predict_accepts_values_in_typed_fields(predict_stub: Any) -> None:
    """Clients that fill int_val / float_val instead of tensor_content (e.g. other languages)."""
    pixels = images(1)
    _same_answer_as_tensor_content(predict_stub, (1, 28, 28), pixels.reshape(-1).tolist(), pixels)


def test_a_single_value_fills_the_declared_shape_as_in_tensorflow(predict_stub: Any) -> None:
    filled = np.full((3, 28, 28), 200, np.uint8)
    answer = _same_answer_as_tensor_content(predict_stub, (3, 28, 28), [200], filled)
    assert answer.shape == (3, 10)


def test_output_filter_returns_only_the_named_outputs(predict_stub: Any) -> None:
    req = request("fashion_mnist", {"images": images(2)}, output_filter=("class_ids",))
    got = outputs(predict_stub.Predict(req, timeout=30))
    assert list(got) == ["class_ids"] and got["class_ids"].shape == (2,)


def test_output_filter_unknown_alias(predict_stub: Any) -> None:
    req = request("fashion_mnist", {"images": images(1)}, output_filter=("logits",))
    err = rpc_error(predict_stub.Predict, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "logits" in err.details() and "probabilities" in err.details()


# ---- version and label selection ------------------------------------------------------


def test_select_by_version(predict_stub: Any) -> None:
    response = predict_stub.Predict(request("housing", housing_inputs(1), version=1), timeout=30)
    assert response.model_spec.version.value == 1


def test_unknown_version_is_not_found(predict_stub: Any) -> None:
    err = rpc_error(predict_stub.Predict, request("housing", housing_inputs(1), version=7))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "housing" in err.details() and "7" in err.details()


def test_label_stable_routes_to_version_1(predict_stub: Any) -> None:
    req = request("fashion_mnist", {"images": images(1)}, label="stable")
    assert predict_stub.Predict(req, timeout=30).model_spec.version.value == 1


def test_label_on_a_version_not_on_disk_is_not_found(predict_stub: Any) -> None:
    # models.config: canary -> 2, and the fixture exports only version 1.
    err = rpc_error(
        predict_stub.Predict, request("fashion_mnist", {"images": images(1)}, label="canary")
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "canary" in err.details() and "2" in err.details()


def test_unknown_label_is_invalid_argument_as_in_tf_serving(predict_stub: Any) -> None:
    err = rpc_error(
        predict_stub.Predict, request("fashion_mnist", {"images": images(1)}, label="nightly")
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unrecognized servable version label: nightly" in err.details()


def test_unknown_model_is_not_found(predict_stub: Any) -> None:
    err = rpc_error(predict_stub.Predict, request("mnist", {"images": images(1)}))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "mnist" in err.details()


def test_unknown_signature_is_failed_precondition(predict_stub: Any) -> None:
    err = rpc_error(
        predict_stub.Predict,
        request("fashion_mnist", {"images": images(1)}, signature="predict_images"),
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert 'Serving signature key "predict_images" not found' in err.details()


# ---- input validation -----------------------------------------------------------------


def test_missing_input_is_named(predict_stub: Any) -> None:
    x = housing_inputs(2)
    del x["deep"]
    err = rpc_error(predict_stub.Predict, request("housing", x))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Missing but required: {deep}" in err.details()


def test_extra_input_is_named(predict_stub: Any) -> None:
    x = {"images": images(1), "labels": np.zeros(1, np.int64)}
    err = rpc_error(predict_stub.Predict, request("fashion_mnist", x))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Sent extra: {labels}" in err.details()


def test_wrong_dtype_names_input_and_dtypes(predict_stub: Any) -> None:
    x = {"images": images(1).astype(np.float32)}
    err = rpc_error(predict_stub.Predict, request("fashion_mnist", x))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'images'" in err.details() and "uint8" in err.details()
    assert "float32" in err.details()


@pytest.mark.parametrize("shape", [(1, 28, 27), (28, 28), (1, 784), (1, 28, 28, 1)])
def test_wrong_shape_names_input_and_expected_shape(predict_stub: Any, shape: tuple) -> None:
    x = {"images": np.zeros(shape, np.uint8)}
    err = rpc_error(predict_stub.Predict, request("fashion_mnist", x))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'images'" in err.details()
    assert str(list(shape)) in err.details() and "[?, 28, 28]" in err.details()


def test_batch_size_mismatch_between_inputs(predict_stub: Any) -> None:
    x = housing_inputs(3)
    x["deep"] = x["deep"][:2]
    err = rpc_error(predict_stub.Predict, request("housing", x))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'deep' has 2" in err.details() and "'wide' has 3" in err.details()


def test_huge_declared_shape_with_small_content(predict_stub: Any) -> None:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "fashion_mnist"
    tensor = req.inputs["images"]
    tensor.dtype = 4
    for size in (10**9, 28, 28):
        tensor.tensor_shape.dim.add().size = size
    tensor.tensor_content = b"\0" * 784
    err = rpc_error(predict_stub.Predict, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "images" in err.details()
    # ... and the server is still fine afterwards.
    assert predict_stub.Predict(request("fashion_mnist", {"images": images(1)}), timeout=30)


def test_tensor_content_length_mismatch(predict_stub: Any) -> None:
    req = request("fashion_mnist", {"images": images(2)})
    req.inputs["images"].tensor_content = req.inputs["images"].tensor_content[:-5]
    err = rpc_error(predict_stub.Predict, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "images" in err.details() and "bytes" in err.details()


def test_missing_model_name(predict_stub: Any) -> None:
    err = rpc_error(predict_stub.Predict, request("", {"images": images(1)}))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


# ---- metadata, status, health, unimplemented ------------------------------------------


def test_metadata_signature_def(predict_stub: Any) -> None:
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "housing"
    response = predict_stub.GetModelMetadata(req, timeout=30)
    assert response.model_spec.name == "housing" and response.model_spec.version.value == 1
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(sig_map)
    sig = sig_map.signature_def["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    assert set(sig.inputs) == {"wide", "deep"} and set(sig.outputs) == {"main", "aux"}
    assert [d.size for d in sig.inputs["wide"].tensor_shape.dim] == [-1, 5]
    assert [d.size for d in sig.inputs["deep"].tensor_shape.dim] == [-1, 6]
    assert sig.inputs["wide"].dtype == 1  # DT_FLOAT


def test_metadata_fashion_mnist_dtypes(predict_stub: Any) -> None:
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "fashion_mnist"
    req.model_spec.version_label = "stable"
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    predict_stub.GetModelMetadata(req, timeout=30).metadata["signature_def"].Unpack(sig_map)
    sig = sig_map.signature_def["serving_default"]
    assert sig.inputs["images"].dtype == 4  # DT_UINT8
    assert {k: v.dtype for k, v in sig.outputs.items()} == {
        "probabilities": 1,
        "class_ids": 9,
        "class_names": 7,
    }


def test_metadata_requires_a_known_field(predict_stub: Any) -> None:
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = "housing"
    assert rpc_error(predict_stub.GetModelMetadata, req).code() == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    req.metadata_field.append("graph")
    err = rpc_error(predict_stub.GetModelMetadata, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "graph" in err.details()


def test_status_of_a_loaded_model(model_stub: Any) -> None:
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "fashion_mnist"
    statuses = model_stub.GetModelStatus(req, timeout=30).model_version_status
    assert [(s.version, s.state, s.status.error_code) for s in statuses] == [(1, AVAILABLE, 0)]


def test_status_errors(model_stub: Any) -> None:
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "fashion_mnist"
    req.model_spec.version.value = 5
    err = rpc_error(model_stub.GetModelStatus, req)
    assert err.code() == grpc.StatusCode.NOT_FOUND and "5" in err.details()
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "nope"
    err = rpc_error(model_stub.GetModelStatus, req)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Could not find any versions of model nope"


def test_status_of_a_version_of_an_unknown_model_names_the_version(model_stub: Any) -> None:
    # TF Serving looks the (model, version) pair up directly: same message as for a known model.
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "nope"
    req.model_spec.version.value = 3
    err = rpc_error(model_stub.GetModelStatus, req)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Could not find version 3 of model nope"
    req.model_spec.version_label = "stable"
    err = rpc_error(model_stub.GetModelStatus, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unrecognized servable version label: stable" in err.details()


def test_health_is_serving(modelserver: ModelServerProcess) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health_status(modelserver.grpc_target) == serving
    assert health_status(modelserver.grpc_target, "fashion_mnist") == serving
    assert health_status(modelserver.grpc_target, "housing") == serving


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("Classify", classification_pb2.ClassificationRequest()),
        ("Regress", regression_pb2.RegressionRequest()),
        ("MultiInference", inference_pb2.MultiInferenceRequest()),
    ],
)
def test_classify_regress_multiinference_unimplemented(
    predict_stub: Any, method: str, message: Any
) -> None:
    err = rpc_error(getattr(predict_stub, method), message)
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    assert method in err.details() and "Predict" in err.details()


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("/tensorflow.serving.PredictionService/Predict", b"\xff\xff\xff"),
        # model_spec.name holding invalid UTF-8: proto3 refuses to parse it.
        ("/tensorflow.serving.PredictionService/Predict", b"\x0a\x04\x0a\x02\xff\xfe"),
        ("/tensorflow.serving.PredictionService/GetModelMetadata", b"\x0a\x05abc"),
        ("/tensorflow.serving.ModelService/GetModelStatus", b"\xff"),
    ],
)
def test_undecodable_request_is_internal_like_tf_serving(
    channel: grpc.Channel, modelserver: ModelServerProcess, method: str, body: bytes
) -> None:
    # TF Serving's C++ gRPC answers INTERNAL; grpc.aio's default was UNKNOWN "Unexpected
    # <class 'google.protobuf.message.DecodeError'>" with a traceback logged per call.
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    err = rpc_error(call, body)
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "Failed to parse request" in err.details()
    assert "class" not in err.details()
    # The server is fine afterwards.
    assert health_status(modelserver.grpc_target, "") == health_pb2.HealthCheckResponse.SERVING
