"""REST conformance against a real ``python -m serving.modelserver`` (session fixture), over
plain HTTP: TF Serving's JSON shapes, both models, both formats, version/label selection,
the error cases, and outputs equal to calling the exported SavedModel directly."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from serving.codecs import tfs_json
from tests.helpers.modelserver_process import ModelServerProcess

pytestmark = pytest.mark.slow

OK_STATUS = {"error_code": "OK", "error_message": ""}


class Client:
    """One keep-alive HTTP connection to the server's REST port."""

    def __init__(self, server: ModelServerProcess) -> None:
        self.server = server
        parts = urlsplit(server.rest_url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], bytes]:
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        except ConnectionError as exc:
            pytest.fail(
                f"REST {self.server.rest_url} unreachable ({exc}):\n{self.server.log_tail()}"
            )
        return response.status, dict(response.getheaders()), response.read()

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, headers, data = self.call(method, path, body)
        assert headers["Content-Type"] == "application/json", data[:200]
        return status, tfs_json.loads(data)


def wait_for_rest(server: ModelServerProcess, timeout: float = 60.0) -> None:
    """gRPC health can turn SERVING a moment before the REST socket is bound."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", server.rest_port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or server.process.poll() is not None:
                pytest.fail(f"REST port never opened:\n{server.log_tail()}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def client(modelserver: ModelServerProcess) -> Iterator[Client]:
    wait_for_rest(modelserver)
    client = Client(modelserver)
    yield client
    client.conn.close()


@pytest.fixture(scope="module")
def saved_models(models_root: Path) -> dict[str, Any]:
    """The exported SavedModels' serving signatures, called in-process for reference outputs."""
    import tensorflow as tf

    return {
        name: tf.saved_model.load(str(models_root / name / "1")).signatures["serving_default"]
        for name in ("fashion_mnist", "housing")
    }


def reference(saved_models: dict[str, Any], model: str, **inputs: np.ndarray) -> dict[str, Any]:
    outputs = saved_models[model](**inputs)
    return {name: tensor.numpy() for name, tensor in outputs.items()}


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28)).astype(np.uint8)


def housing_inputs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype(np.float32), rng.normal(size=(n, 6)).astype(np.float32)


def assert_fashion_outputs(columns: dict[str, list[Any]], expected: dict[str, Any]) -> None:
    np.testing.assert_allclose(
        np.array(columns["probabilities"], np.float32),
        expected["probabilities"],
        rtol=1e-5,
        atol=1e-6,
    )
    assert columns["class_ids"] == expected["class_ids"].tolist()
    assert columns["class_names"] == [n.decode() for n in expected["class_names"].tolist()]


def assert_housing_outputs(columns: dict[str, list[Any]], expected: dict[str, Any]) -> None:
    for name in ("main", "aux"):
        np.testing.assert_allclose(
            np.array(columns[name], np.float32).reshape(-1),
            expected[name].reshape(-1),
            rtol=1e-5,
            atol=1e-5,
        )


# -- status and metadata --------------------------------------------------------------------


@pytest.mark.parametrize("model", ["fashion_mnist", "housing"])
def test_status_like_tf_serving(client: Client, model: str) -> None:
    expected = {
        "model_version_status": [{"version": "1", "state": "AVAILABLE", "status": OK_STATUS}]
    }
    assert client.json("GET", f"/v1/models/{model}") == (200, expected)
    assert client.json("GET", f"/v1/models/{model}/versions/1") == (200, expected)
    assert client.json("GET", f"/v1/models/{model}/labels/stable") == (200, expected)


def test_metadata_fashion_mnist(client: Client) -> None:
    status, doc = client.json("GET", "/v1/models/fashion_mnist/metadata")
    assert status == 200
    assert doc["model_spec"] == {"name": "fashion_mnist", "signature_name": "", "version": "1"}
    signature = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    images_info = signature["inputs"]["images"]
    assert images_info["dtype"] == "DT_UINT8"
    assert [d["size"] for d in images_info["tensor_shape"]["dim"]] == ["-1", "28", "28"]
    outputs = signature["outputs"]
    assert {name: info["dtype"] for name, info in outputs.items()} == {
        "probabilities": "DT_FLOAT",
        "class_ids": "DT_INT64",
        "class_names": "DT_STRING",
    }


def test_metadata_housing_by_label(client: Client) -> None:
    status, doc = client.json("GET", "/v1/models/housing/labels/stable/metadata")
    assert status == 200
    assert doc["model_spec"]["version"] == "1"
    inputs = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert {n: [d["size"] for d in i["tensor_shape"]["dim"]] for n, i in inputs.items()} == {
        "wide": ["-1", "5"],
        "deep": ["-1", "6"],
    }


# -- predict equals the SavedModel ----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/fashion_mnist:predict",
        "/v1/models/fashion_mnist/versions/1:predict",
        "/v1/models/fashion_mnist/labels/stable:predict",
    ],
)
def test_fashion_row_format_equals_saved_model(
    client: Client, saved_models: dict[str, Any], path: str
) -> None:
    batch = images(5, seed=1)
    status, doc = client.json("POST", path, {"instances": batch.tolist()})
    assert status == 200, doc
    predictions = doc["predictions"]
    assert len(predictions) == 5
    assert set(predictions[0]) == {"probabilities", "class_ids", "class_names"}
    columns = {name: [p[name] for p in predictions] for name in predictions[0]}
    assert_fashion_outputs(columns, reference(saved_models, "fashion_mnist", images=batch))


def test_fashion_columnar_and_b64_free_signature(
    client: Client, saved_models: dict[str, Any]
) -> None:
    batch = images(3, seed=2)
    status, doc = client.json(
        "POST", "/v1/models/fashion_mnist:predict", {"inputs": {"images": batch.tolist()}}
    )
    assert status == 200, doc
    assert_fashion_outputs(doc["outputs"], reference(saved_models, "fashion_mnist", images=batch))


def test_fashion_single_instance_object_form(client: Client, saved_models: dict[str, Any]) -> None:
    batch = images(1, seed=3)
    status, doc = client.json(
        "POST", "/v1/models/fashion_mnist:predict", {"instances": [{"images": batch[0].tolist()}]}
    )
    assert status == 200, doc
    expected = reference(saved_models, "fashion_mnist", images=batch)
    assert doc["predictions"][0]["class_ids"] == int(expected["class_ids"][0])


def test_housing_named_objects_and_columnar(client: Client, saved_models: dict[str, Any]) -> None:
    wide, deep = housing_inputs(4)
    expected = reference(saved_models, "housing", wide=wide, deep=deep)
    instances = [{"wide": w.tolist(), "deep": d.tolist()} for w, d in zip(wide, deep, strict=True)]
    status, doc = client.json("POST", "/v1/models/housing:predict", {"instances": instances})
    assert status == 200, doc
    rows = doc["predictions"]
    assert set(rows[0]) == {"main", "aux"}
    assert_housing_outputs({n: [r[n] for r in rows] for n in ("main", "aux")}, expected)

    body = {
        "inputs": {"wide": wide.tolist(), "deep": deep.tolist()},
        "signature_name": "serving_default",
    }
    status, doc = client.json("POST", "/v1/models/housing:predict", body)
    assert status == 200, doc
    assert_housing_outputs(doc["outputs"], expected)


def test_client_encoder_round_trip(client: Client, saved_models: dict[str, Any]) -> None:
    """The shared codec's client side talks to the server (what load tests and clients use)."""
    wide, deep = housing_inputs(2, seed=5)
    body = tfs_json.encode_predict_request({"wide": wide, "deep": deep})
    status, _, data = client.call("POST", "/v1/models/housing:predict", body)
    assert status == 200
    outputs = tfs_json.decode_predict_response(data)
    assert_housing_outputs(outputs, reference(saved_models, "housing", wide=wide, deep=deep))


# -- errors ---------------------------------------------------------------------------------


def _image_rows(value: int) -> list[list[int]]:
    rows = [[0] * 28 for _ in range(28)]
    rows[3][4] = value
    return rows


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v1/models/nope:predict", {"instances": [1]}, 404, "nope"),
        ("/v1/models/fashion_mnist/versions/9:predict", {"instances": [1]}, 404, "9"),
        ("/v1/models/fashion_mnist/labels/canary:predict", {"instances": [1]}, 404, "2"),
        ("/v1/models/fashion_mnist/labels/beta:predict", {"instances": [1]}, 400, "beta"),
        ("/v1/models/housing:predict", {"inputs": {"wide": [[0] * 5]}}, 400, "deep"),
        (
            "/v1/models/housing:predict",
            {"inputs": {"wide": [[0] * 5], "deep": [[0] * 6], "extra": [1]}},
            400,
            "extra",
        ),
        ("/v1/models/housing:predict", {"instances": [[0] * 5]}, 400, "list of objects"),
        ("/v1/models/fashion_mnist:predict", {"instances": [_image_rows(300)]}, 400, "300"),
        ("/v1/models/fashion_mnist:predict", {"instances": [_image_rows(-1)]}, 400, "-1"),
        ("/v1/models/fashion_mnist:predict", {"instances": [[[0.5] * 28] * 28]}, 400, "uint8"),
        ("/v1/models/fashion_mnist:predict", {"instances": [[[0] * 27] * 28]}, 400, "28"),
        (
            "/v1/models/housing:predict",
            {"inputs": {"wide": [[0] * 4], "deep": [[0] * 6]}},
            400,
            "wide",
        ),
        (
            "/v1/models/housing:predict",
            {"inputs": {"wide": [[0] * 5] * 2, "deep": [[0] * 6] * 3}},
            400,
            "",
        ),
        (
            "/v1/models/fashion_mnist:predict",
            {"inputs": [{"b64": base64.b64encode(b"x").decode()}]},
            400,
            "uint8",
        ),
        (
            "/v1/models/fashion_mnist:predict",
            {"instances": [1], "signature_name": "nope"},
            400,
            "nope",
        ),
        ("/v1/models/fashion_mnist:predict", b'{"instances": [', 400, "JSON Parse error"),
        ("/v1/models/fashion_mnist:predict", b"", 400, "empty"),
        ("/v1/models/fashion_mnist:classify", {"examples": [{"x": 1}]}, 400, "classification"),
        ("/v1/models/housing:regress", {"examples": [{"x": 1.0}]}, 400, "regression"),
    ],
)
def test_errors_are_json_with_tf_serving_status(
    client: Client, path: str, body: Any, status: int, fragment: str
) -> None:
    got, headers, data = client.call("POST", path, body)
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(data)
    assert got == status, doc
    assert set(doc) == {"error"} and fragment in doc["error"]
    assert "Traceback" not in doc["error"]


def test_unknown_model_status_and_paths(client: Client) -> None:
    assert client.json("GET", "/v1/models/nope")[0] == 404
    assert client.json("GET", "/v1/models/fashion_mnist/versions/2")[0] == 404
    assert client.json("GET", "/v2/anything")[0] == 404
    assert client.json("GET", "/v1/models/fashion_mnist:predict")[0] == 405


def test_wrong_inner_shape_names_the_input(client: Client) -> None:
    status, doc = client.json(
        "POST", "/v1/models/fashion_mnist:predict", {"inputs": images(1).reshape(1, 784).tolist()}
    )
    assert status == 400
    assert "images" in doc["error"]
