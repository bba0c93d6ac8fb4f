"""REST adapter semantics over plain HTTP, against an in-process fake data plane.

These pin the HTTP layer (routes, status codes, JSON error bodies, keep-alive, limits, metrics)
without TensorFlow; tests/modelserver/test_rest_conformance.py runs the real server.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from serving.modelserver.errors import InvalidArgument, NotFound
from serving.modelserver.metrics import REQUEST_COUNT, ServerMetrics
from serving.modelserver.rest import RestServer, make_rest_server
from serving.modelserver.specs import ModelRef, PredictResult, TensorSpecInfo, VersionState
from serving.protos import DATA_TYPE, SignatureDefMap

MONITORING_PATH = "/monitoring/prometheus/metrics"
SIGNATURES = {
    "fashion_mnist": {"images": TensorSpecInfo(np.dtype(np.uint8), (-1, 28, 28))},
    "housing": {
        "wide": TensorSpecInfo(np.dtype(np.float32), (-1, 5)),
        "deep": TensorSpecInfo(np.dtype(np.float32), (-1, 6)),
    },
    "broken": {"x": TensorSpecInfo(np.dtype(np.float32), (-1,))},
}
VERSIONS = {"fashion_mnist": [1, 2], "housing": [1], "broken": [1]}
LABELS = {"stable": 1, "canary": 2}
OK_STATUS = {"error_code": "OK", "error_message": ""}


class FakeDataPlane:
    """Answers like the real data plane, computing outputs any test can recompute."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ModelRef, str]] = []

    def _version(self, ref: ModelRef) -> int:
        versions = VERSIONS.get(ref.name)
        if versions is None:
            raise NotFound(f"Servable not found for request: Latest({ref.name})")
        if ref.label is not None:
            if ref.label not in LABELS:
                raise InvalidArgument(f"Unrecognized servable version label: {ref.label}")
            if LABELS[ref.label] not in versions:
                raise NotFound(f"Servable not found: label {ref.label}")
            return LABELS[ref.label]
        if ref.version is not None:
            if ref.version not in versions:
                raise NotFound(
                    f"Servable not found for request: Specific({ref.name}, {ref.version})"
                )
            return ref.version
        return max(versions)

    def signature_inputs(self, ref: ModelRef, signature_name: str) -> dict[str, TensorSpecInfo]:
        self._version(ref)
        self.calls.append(("signature_inputs", ref, signature_name))
        if signature_name != "serving_default":
            raise InvalidArgument(f'Serving signature name: "{signature_name}" not found')
        return SIGNATURES[ref.name]

    def predict(
        self, ref: ModelRef, inputs: dict[str, np.ndarray], signature_name: str = "serving_default"
    ) -> PredictResult:
        version = self._version(ref)
        self.calls.append(("predict", ref, signature_name))
        if ref.name == "broken":
            raise RuntimeError("secret internal detail")
        spec = SIGNATURES[ref.name]
        if set(inputs) != set(spec):
            raise InvalidArgument(f"expected inputs {sorted(spec)}, got {sorted(inputs)}")
        if ref.name == "fashion_mnist":
            images = inputs["images"]
            if images.shape[1:] != (28, 28):
                raise InvalidArgument(f"images: expected [-1,28,28], got {list(images.shape)}")
            batch = images.shape[0]
            probabilities = np.full((batch, 10), 0.1, np.float32)
            class_ids = images.reshape(batch, -1).sum(axis=1) % 10 + 10 * version
            names = np.array([f"class {c}".encode() for c in class_ids], object)
            outputs = {"probabilities": probabilities, "class_ids": class_ids, "class_names": names}
        else:
            outputs = {
                "main": inputs["wide"].sum(axis=1) + inputs["deep"].sum(axis=1),
                "aux": inputs["wide"][:, 0] * 2,
            }
        return PredictResult(ref.name, version, signature_name, outputs)

    def metadata(self, ref: ModelRef) -> tuple[int, Any]:
        version = self._version(ref)
        signature_map = SignatureDefMap()
        signature = signature_map.signature_def["serving_default"]
        signature.method_name = "tensorflow/serving/predict"
        for name, spec in SIGNATURES[ref.name].items():
            info = signature.inputs[name]
            info.name = f"serving_default_{name}:0"
            info.dtype = DATA_TYPE["DT_UINT8" if spec.dtype == np.uint8 else "DT_FLOAT"]
            for size in spec.shape or ():
                info.tensor_shape.dim.add().size = size
        return version, signature_map

    def status(self, ref: ModelRef) -> list[VersionState]:
        if ref.version is None and ref.label is None:
            self._version(ref)
            return [VersionState(v, "AVAILABLE") for v in sorted(VERSIONS[ref.name], reverse=True)]
        return [VersionState(self._version(ref), "AVAILABLE")]

    def ready(self) -> bool:
        return True


def _start(server: RestServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def metrics() -> ServerMetrics:
    return ServerMetrics(process_metrics=False)


@pytest.fixture(scope="module")
def server(metrics: ServerMetrics) -> Iterator[RestServer]:
    server = make_rest_server(FakeDataPlane(), metrics, "127.0.0.1", 0, MONITORING_PATH)
    _start(server)
    yield server
    server.shutdown()


def call(
    server: RestServer,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def call_json(server: RestServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    raw = None if body is None else json.dumps(body).encode()
    status, headers, data = call(server, method, path, raw)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(data)


def assert_error(status: int, doc: Any, expected_status: int, fragment: str) -> None:
    assert status == expected_status, doc
    assert set(doc) == {"error"}
    assert fragment in doc["error"]


# -- status and metadata --------------------------------------------------------------------


def test_model_status_has_tf_serving_shape(server: RestServer) -> None:
    status, doc = call_json(server, "GET", "/v1/models/fashion_mnist")
    assert status == 200
    assert doc == {
        "model_version_status": [
            {
                "version": v,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in ("2", "1")
        ]
    }


@pytest.mark.parametrize(
    ("suffix", "version"), [("/versions/1", "1"), ("/labels/canary", "2"), ("/labels/stable", "1")]
)
def test_model_status_of_one_version(server: RestServer, suffix: str, version: str) -> None:
    status, doc = call_json(server, "GET", f"/v1/models/fashion_mnist{suffix}")
    assert status == 200
    assert [s["version"] for s in doc["model_version_status"]] == [version]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/nope",
        "/v1/models/fashion_mnist/versions/7",
        "/v1/models/housing/labels/canary",
        "/v1/models/nope/metadata",
    ],
)
def test_unknown_model_or_version_is_404(server: RestServer, path: str) -> None:
    status, doc = call_json(server, "GET", path)
    assert_error(status, doc, 404, "")


def test_unknown_label_is_400_like_tf_serving(server: RestServer) -> None:
    status, doc = call_json(server, "GET", "/v1/models/fashion_mnist/labels/beta")
    assert_error(status, doc, 400, "Unrecognized servable version label: beta")


def test_missing_model_name_is_400(server: RestServer) -> None:
    status, doc = call_json(server, "GET", "/v1/models")
    assert_error(status, doc, 400, "Missing model name in request.")


def test_metadata_like_tf_serving(server: RestServer) -> None:
    status, doc = call_json(server, "GET", "/v1/models/housing/versions/1/metadata")
    assert status == 200
    assert doc["model_spec"] == {"name": "housing", "signature_name": "", "version": "1"}
    signature = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["wide"]["dtype"] == "DT_FLOAT"
    dims = signature["inputs"]["wide"]["tensor_shape"]["dim"]
    assert [d["size"] for d in dims] == ["-1", "5"]


def test_percent_encoded_and_case_insensitive_paths(server: RestServer) -> None:
    status, doc = call_json(server, "GET", "/V1/MODELS/fashion%5Fmnist/LABELS/canary/METADATA")
    assert status == 200
    assert doc["model_spec"]["version"] == "2"


# -- predict --------------------------------------------------------------------------------


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28)).astype(np.uint8)


def test_predict_row_format(server: RestServer) -> None:
    images = _images(3)
    status, doc = call_json(
        server, "POST", "/v1/models/fashion_mnist:predict", {"instances": images.tolist()}
    )
    assert status == 200
    predictions = doc["predictions"]
    assert len(predictions) == 3
    expected = images.reshape(3, -1).sum(axis=1) % 10 + 20  # latest version is 2
    assert [p["class_ids"] for p in predictions] == expected.tolist()
    assert [p["class_names"] for p in predictions] == [f"class {c}" for c in expected]
    assert all(len(p["probabilities"]) == 10 for p in predictions)


@pytest.mark.parametrize(("suffix", "version"), [("/versions/1", 1), ("/labels/canary", 2)])
def test_predict_selects_version_and_label(server: RestServer, suffix: str, version: int) -> None:
    images = _images(1)
    status, doc = call_json(
        server, "POST", f"/v1/models/fashion_mnist{suffix}:predict", {"inputs": images.tolist()}
    )
    assert status == 200
    assert doc["outputs"]["class_ids"] == [int(images.sum()) % 10 + 10 * version]


def test_predict_named_objects_for_two_inputs(server: RestServer) -> None:
    wide = [[1, 2, 3, 4, 5], [0, 0, 0, 0, 1]]
    deep = [[1] * 6, [0.5] * 6]
    instances = [{"wide": w, "deep": d} for w, d in zip(wide, deep, strict=True)]
    status, doc = call_json(server, "POST", "/v1/models/housing:predict", {"instances": instances})
    assert status == 200
    assert doc == {"predictions": [{"main": 21.0, "aux": 2.0}, {"main": 4.0, "aux": 0.0}]}
    status, doc = call_json(
        server, "POST", "/v1/models/housing:predict", {"inputs": {"wide": wide, "deep": deep}}
    )
    assert status == 200
    assert doc == {"outputs": {"main": [21.0, 4.0], "aux": [2.0, 0.0]}}


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v1/models/fashion_mnist:predict", b"{not json", 400, "JSON Parse error"),
        ("/v1/models/fashion_mnist:predict", b"", 400, "The document is empty"),
        ("/v1/models/fashion_mnist:predict", b'{"instances": [[300]]}', 400, "out of range"),
        ("/v1/models/fashion_mnist:predict", b'{"instances": [[1]]}', 400, "expected [-1,28,28]"),
        ("/v1/models/housing:predict", b'{"inputs": {"wide": [[1]]}}', 400, "Missing named"),
        (
            "/v1/models/fashion_mnist:predict",
            b'{"instances": [1], "signature_name": "nope"}',
            400,
            'signature name: "nope"',
        ),
        ("/v1/models/nope:predict", b'{"instances": [1]}', 404, "nope"),
        ("/v1/models/fashion_mnist/versions/9:predict", b'{"instances": [1]}', 404, "9"),
        ("/v1/models/fashion_mnist/labels/x:predict", b'{"instances": [1]}', 400, "label: x"),
        # The model is looked up before the body's keys are checked, as TF Serving does.
        ("/v1/models/nope:predict", b"{}", 404, "nope"),
        ("/v1/models/fashion_mnist/versions/9:predict", b'{"x": 1}', 404, "9"),
        # Escaped lone surrogates are a parse error (they were a 500: not encodable as UTF-8).
        (
            "/v1/models/fashion_mnist:predict",
            b'{"instances": [1], "signature_name": "\\ud800"}',
            400,
            "surrogate pair",
        ),
        ("/v1/models/housing:predict", b'{"instances": [{"\\udc00": 1}]}', 400, "surrogate"),
        ("/v1/models/housing:classify", b'{"signature_name": "\\ud800"}', 400, "surrogate"),
        # A repeated input name was answered for the last value (TF Serving: the first).
        (
            "/v1/models/housing:predict",
            b'{"inputs": {"wide": [[1, 2, 3, 4, 5]], "deep": [[0, 0, 0, 0, 0, 0]], "wide": [[0]]}}',
            400,
            "duplicate key: \"wide\" in the 'inputs' object",
        ),
    ],
)
def test_predict_errors(
    server: RestServer, path: str, body: bytes, status: int, fragment: str
) -> None:
    got, headers, data = call(server, "POST", path, body)
    assert headers["Content-Type"] == "application/json"
    assert_error(got, json.loads(data), status, fragment)


def test_internal_errors_do_not_leak_details(server: RestServer) -> None:
    status, _, data = call(server, "POST", "/v1/models/broken:predict", b'{"inputs": [1]}')
    assert status == 500
    message = json.loads(data)["error"]
    assert "secret" not in message and "Traceback" not in message


@pytest.mark.parametrize(
    ("verb", "fragment"),
    [("classify", "Expected classification signature"), ("regress", "Expected regression")],
)
def test_classify_and_regress_refused_for_predict_signatures(
    server: RestServer, verb: str, fragment: str
) -> None:
    body = {"examples": [{"x": 1.0}]}
    status, doc = call_json(server, "POST", f"/v1/models/housing:{verb}", body)
    assert_error(status, doc, 400, fragment)
    status, doc = call_json(server, "POST", f"/v1/models/housing:{verb}", {"inputs": [1]})
    assert_error(status, doc, 400, "key 'examples' is expected")
    status, doc = call_json(server, "POST", f"/v1/models/nope:{verb}", body)
    assert_error(status, doc, 404, "nope")


# -- HTTP layer -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/v1/models/fashion_mnist:predict", 405, "POST"),
        ("POST", "/v1/models/fashion_mnist", 405, "GET, HEAD"),
        ("PUT", "/v1/models/fashion_mnist/metadata", 405, "GET, HEAD"),
        ("DELETE", "/v1/models/fashion_mnist:predict", 405, "POST"),
        ("POST", MONITORING_PATH, 405, "GET, HEAD"),
        ("GET", "/v2/models/fashion_mnist", 404, None),
        ("GET", "/", 404, None),
        ("POST", "/v1/models/fashion_mnist/versions/x:predict", 404, None),
    ],
)
def test_unknown_paths_and_methods(
    server: RestServer, method: str, path: str, status: int, allow: str | None
) -> None:
    got, headers, data = call(server, method, path, b"{}" if method != "GET" else None)
    assert got == status
    assert headers["Content-Type"] == "application/json"
    assert "error" in json.loads(data)
    assert headers.get("Allow") == allow


def test_unsupported_http_method_answers_json(server: RestServer) -> None:
    status, _, data = call(server, "BREW", "/v1/models/fashion_mnist")
    assert status == 405
    assert "BREW" in json.loads(data)["error"]


def test_head_has_headers_only(server: RestServer) -> None:
    status, headers, data = call(server, "HEAD", "/v1/models/fashion_mnist")
    assert status == 200 and data == b""
    assert int(headers["Content-Length"]) > 0


def test_keep_alive_serves_several_requests_on_one_connection(server: RestServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/v1/models/housing")
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        assert sock is not None
        for _ in range(3):
            conn.request("POST", "/v1/models/housing:predict", body=b"{oops")
            response = conn.getresponse()
            response.read()
            assert response.status == 400
            assert conn.sock is sock
    finally:
        conn.close()


def test_chunked_request_body(server: RestServer) -> None:
    body = json.dumps({"inputs": _images(1).tolist()}).encode()
    chunks = iter([body[:100], body[100:]])
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", "/v1/models/fashion_mnist:predict", body=chunks, encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 200, response.read()
        assert "outputs" in json.loads(response.read())
    finally:
        conn.close()


def test_body_over_the_limit_is_413_and_not_read() -> None:
    server = make_rest_server(FakeDataPlane(), None, "127.0.0.1", 0, max_body_bytes=1000)
    _start(server)
    try:
        status, headers, data = call(
            server, "POST", "/v1/models/fashion_mnist:predict", b"[" * 5000
        )
        assert status == 413
        assert "limit of 1000 bytes" in json.loads(data)["error"]
        assert headers.get("Connection") == "close"
        # The server is still healthy for the next client.
        assert call(server, "GET", "/v1/models/housing")[0] == 200
    finally:
        server.shutdown()


def test_expect_100_continue_over_the_limit_gets_413_without_continue() -> None:
    server = make_rest_server(FakeDataPlane(), None, "127.0.0.1", 0, max_body_bytes=1000)
    _start(server)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/models/housing:predict HTTP/1.1\r\nHost: x\r\n"
                b"Expect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
            )
            reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 413"), reply
        assert b"100 Continue" not in reply
        assert b"limit of 1000 bytes" in reply
    finally:
        server.shutdown()


@pytest.mark.parametrize("size", [b"-1", b"-5", b"+5", b"0x5", b"1_0", b""])
def test_chunk_sizes_other_than_hex_digits_are_400(server: RestServer, size: bytes) -> None:
    # "-1" used to reach rfile.read(-1): the rest of the stream read into memory, no limit.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/models/housing:predict HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + size + b"\r\n"
        )
        sock.settimeout(5)
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400"), reply
    assert b"Malformed chunked request body" in reply


def test_gzip_request_body_is_inflated_like_tf_serving(server: RestServer) -> None:
    # TF Serving's net_http inflates Content-Encoding: gzip bodies (auto_uncompress_input).
    body = json.dumps({"inputs": {"wide": [[1] * 5], "deep": [[2] * 6]}}).encode()
    headers = {"Content-Encoding": "gzip"}
    status, _, data = call(
        server, "POST", "/v1/models/housing:predict", gzip.compress(body), headers
    )
    assert status == 200, data
    assert json.loads(data) == {"outputs": {"main": [17.0], "aux": [2.0]}}
    status, _, data = call(server, "POST", "/v1/models/housing:predict", body, headers)
    assert status == 400 and "Failed to uncompress" in json.loads(data)["error"]
    truncated = gzip.compress(body)[:-12]
    status, _, data = call(server, "POST", "/v1/models/housing:predict", truncated, headers)
    assert status == 400 and "Failed to uncompress" in json.loads(data)["error"]


def test_gzip_bomb_is_413() -> None:
    server = make_rest_server(FakeDataPlane(), None, "127.0.0.1", 0, max_body_bytes=1000)
    _start(server)
    try:
        bomb = gzip.compress(b" " * 200_000)
        assert len(bomb) < 1000
        status, _, data = call(
            server, "POST", "/v1/models/housing:predict", bomb, {"Content-Encoding": "gzip"}
        )
        assert status == 413
        assert "Uncompressed request body exceeds the limit of 1000 bytes" in data.decode()
    finally:
        server.shutdown()


def test_invalid_content_length_is_400(server: RestServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/models/housing:predict HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n"
        )
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400")
    assert b'"error"' in reply


def test_metrics_endpoint_and_request_counts(server: RestServer, metrics: ServerMetrics) -> None:
    labels = {
        "model_name": "housing",
        "version": "1",
        "API": "Predict",
        "entrypoint": "REST",
        "status": "OK",
    }
    before = metrics.value(REQUEST_COUNT, labels) or 0
    body = {"inputs": {"wide": [[0] * 5], "deep": [[0] * 6]}}
    for _ in range(3):
        assert call_json(server, "POST", "/v1/models/housing:predict", body)[0] == 200
    bad = {**labels, "version": "", "status": "INVALID_ARGUMENT"}
    bad_before = metrics.value(REQUEST_COUNT, bad) or 0
    assert call(server, "POST", "/v1/models/housing:predict", b"{")[0] == 400
    assert metrics.value(REQUEST_COUNT, labels) == before + 3
    assert metrics.value(REQUEST_COUNT, bad) == bad_before + 1

    status, headers, data = call(server, "GET", MONITORING_PATH)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = data.decode()
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert (
        ':tensorflow:serving:request_count{API="Predict",entrypoint="REST",model_name="housing",'
        f'status="OK",version="1"}} {before + 3:.1f}'
    ) in text


def test_metrics_path_is_404_when_monitoring_is_off() -> None:
    server = make_rest_server(FakeDataPlane(), ServerMetrics(), "127.0.0.1", 0, None)
    _start(server)
    try:
        status, _, data = call(server, "GET", MONITORING_PATH)
        assert status == 404 and "error" in json.loads(data)
    finally:
        server.shutdown()


def test_failing_metrics_exposition_is_a_json_500() -> None:
    class BrokenMetrics(ServerMetrics):
        def exposition(self) -> tuple[bytes, str]:
            raise RuntimeError("secret")

    server = make_rest_server(FakeDataPlane(), BrokenMetrics(), "127.0.0.1", 0, MONITORING_PATH)
    _start(server)
    try:
        status, _, data = call(server, "GET", MONITORING_PATH)
        assert status == 500
        assert "secret" not in json.loads(data)["error"]
        assert call(server, "GET", "/v1/models/housing")[0] == 200
    finally:
        server.shutdown()


def test_client_resets_leave_no_trace_on_stderr(
    server: RestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"GET /v1/models/housing HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        # SO_LINGER 0: close with a RST, as load generators do at the end of a run.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    assert call(server, "GET", "/v1/models/housing")[0] == 200  # the server is unharmed
    time.sleep(0.2)  # let the handler threads see the resets before reading stderr
    assert "Traceback" not in capsys.readouterr().err


def test_shutdown_without_serving_does_not_hang() -> None:
    server = make_rest_server(FakeDataPlane(), None, "127.0.0.1", 0)
    server.shutdown()
