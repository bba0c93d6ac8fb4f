"""Hostile input to the local model server (its REST and gRPC APIs), beyond tests/modelserver.

tests/modelserver already covers: wrong dtype, one huge declared shape, a tensor_content length
mismatch, a too-large body (413 before reading), percent-encoded paths, bad Content-Length. Here:
unicode and path traversal in model names / labels / versions in REST paths, deeply nested and
hostile JSON bodies, and property-based gRPC requests (random dtypes, shapes up to 2**40, content
of any length, hostile names) — every answer a clean client error, never INTERNAL, and the server
still serving afterwards. Uses the session's ``live_stack`` (the real model server).
"""

from __future__ import annotations

import os
import socket

import grpc
import numpy as np
import orjson
import pytest
import urllib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving import protos
from serving.codecs.tensors import ndarray_to_tensor_proto

EXAMPLES = int(os.environ.get("SECURITY_PROPERTY_EXAMPLES", "100"))
CLIENT_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # a message over gRPC's size limit
}


@pytest.fixture(scope="module")
def rest(live_stack):
    pool = urllib3.PoolManager(maxsize=2, retries=False, timeout=30.0)

    def call(method: str, path: str, body: bytes | None = None):
        # Raw paths: urllib3 sends them as given (no normalisation of "..").
        reply = pool.urlopen(
            method,
            live_stack.rest_url + path,
            body=body,
            headers={"Content-Type": "application/json"},
            redirect=False,
        )
        return reply.status, reply.headers, reply.data

    return call


@pytest.fixture(scope="module")
def stub(live_stack):
    channel = grpc.insecure_channel(live_stack.grpc_target)
    yield protos.PredictionServiceStub(channel)
    channel.close()


def _assert_rest_error(status: int, headers, body: bytes, *allowed: int) -> str:
    assert status in allowed, (status, body[:300])
    assert headers["Content-Type"].startswith("application/json")
    document = orjson.loads(body)
    assert isinstance(document, dict) and isinstance(document.get("error"), str), document
    assert "Traceback" not in document["error"]
    return document["error"]


def _good_predict(rest) -> None:
    body = orjson.dumps({"instances": np.zeros((1, 28, 28), np.uint8).tolist()})
    status, _headers, data = rest("POST", "/v1/models/fashion_mnist:predict", body)
    assert status == 200, data[:300]


# -- REST: names, labels and versions in the path ---------------------------------------------

HOSTILE_NAMES = [
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252fetc",
    "..%5c..%5cwindows",
    "fashion_mnist%00",
    "fashion_mnist%2f..%2fhousing",
    "%E2%80%AEtsinm_noihsaf",  # right-to-left override
    "%E6%A8%A1%E5%9E%8B",  # unicode
    "%EF%BD%86ashion_mnist",  # fullwidth f
    "%ff%fe",  # not UTF-8
    "a" * 2000,
    "~root",
    "%2Ftmp",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda n: n[:30])
def test_hostile_model_names_in_rest_paths(rest, name):
    body = orjson.dumps({"instances": [[0] * 784]})
    for method, path, data in (
        ("GET", f"/v1/models/{name}", None),
        ("GET", f"/v1/models/{name}/metadata", None),
        ("GET", f"/v1/models/{name}/versions/1", None),
        ("POST", f"/v1/models/{name}:predict", body),
        ("POST", f"/v1/models/{name}/labels/stable:predict", body),
    ):
        _assert_rest_error(*rest(method, path, data), 400, 404)
    _good_predict(rest)


@pytest.mark.parametrize(
    "suffix",
    [
        "/labels/..%2f..%2fetc:predict",
        "/labels/%2e%2e:predict",
        "/labels/%E7%A8%B3%E5%AE%9A:predict",
        "/labels/stable%00:predict",
        "/versions/..%2f1:predict",
        "/versions/-1:predict",
        "/versions/99999999999999999999999:predict",
        "/versions/%EF%BC%91:predict",  # fullwidth 1
        "/versions/1/../2:predict",
        "/../housing:predict",
        "/versions/1%2f..%2f2:predict",
    ],
)
def test_hostile_labels_and_versions_in_rest_paths(rest, suffix):
    body = orjson.dumps({"instances": [[0] * 784]})
    _assert_rest_error(*rest("POST", f"/v1/models/fashion_mnist{suffix}", body), 400, 404)


def test_raw_traversal_request_lines(live_stack):
    port = int(live_stack.rest_url.rsplit(":", 1)[1])
    for target in (
        "/../../etc/passwd",
        "/v1/models/../../../etc/passwd",
        "//etc/passwd",
        "/v1/models/fashion_mnist/../../../etc/passwd/metadata",
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status = int(answer.split(b" ", 2)[1])
        assert status in (400, 404), answer[:300]
        assert b"root:" not in answer


# -- REST: hostile bodies -------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_bodies(rest, depth):
    for body in (
        b"[" * depth + b"]" * depth,
        b'{"instances": ' + b"[" * depth + b"]" * depth + b"}",
        b'{"inputs": {"images": ' + b"[" * depth + b"0" + b"]" * depth + b"}}",
        b'{"instances": [' + b'{"a":' * depth + b"1" + b"}" * depth + b"]}",
        b'{"instances": ' + b"[" * depth,
    ):
        _assert_rest_error(*rest("POST", "/v1/models/fashion_mnist:predict", body), 400)
    _good_predict(rest)


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[NaN]]}',
        b'{"instances": "\\ud800"}',
        b'{"instances": [[1e999]]}',
        b'{"instances": [[' + b"9" * 5000 + b"]]}",
        b'{"signature_name": {"a": 1}, "instances": [[0]]}',
        b'{"instances": [{"images": {"b64": "!!!"}}]}',
        b'{"inputs": {"images": [[[0]]]}, "instances": [[0]]}',
        b"\xef\xbb\xbf" + b'{"instances": [[0]]}',  # UTF-8 BOM
        b'{"instances": [[0]]}' + b"\x00" * 10,
        b"\x00\x00\x00\x00",
    ],
)
def test_hostile_json_bodies(rest, body):
    _assert_rest_error(*rest("POST", "/v1/models/fashion_mnist:predict", body), 400)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    segments=st.lists(
        st.text(min_size=1, max_size=12).map(
            lambda text: "".join(f"%{b:02X}" for b in text.encode("utf-8", "surrogatepass"))
        )
        | st.sampled_from(["..", ".", "fashion_mnist", "versions", "labels", "1", "metadata"]),
        min_size=1,
        max_size=5,
    ),
    verb=st.sampled_from(["", ":predict", ":classify", ":regress", ":nothing"]),
)
def test_rest_paths_property(rest, segments, verb):
    path = "/v1/models/" + "/".join(segments) + verb
    method = "POST" if verb else "GET"
    status, headers, data = rest(method, path, b'{"instances": [[0]]}' if verb else None)
    assert status < 500, (path, status, data[:300])
    if status >= 400:
        _assert_rest_error(status, headers, data, status)


# -- gRPC: property-based malformed tensors -------------------------------------------------------

_NAMES = st.sampled_from(["fashion_mnist", "housing", "", "../housing", "fashion_mnist\x00"]) | (
    st.text(max_size=10)
)
_INPUTS = st.sampled_from(["images", "wide", "deep", "", "images\x00"]) | st.text(max_size=6)


@st.composite
def _tensors(draw):
    proto = protos.TensorProto()
    proto.dtype = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 14, 19, 23, 99, -1, 2**30]))
    for size in draw(st.lists(st.integers(-2, 2**40) | st.sampled_from([28, 1, 0]), max_size=4)):
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_shape.unknown_rank = draw(st.booleans())
    proto.tensor_content = draw(st.binary(max_size=4096) | st.just(b"\0" * 784))
    proto.float_val.extend(draw(st.lists(st.floats(allow_nan=True), max_size=4)))
    proto.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4)))
    proto.string_val.extend(draw(st.lists(st.binary(max_size=6), max_size=3)))
    return proto


@st.composite
def _requests(draw):
    request = protos.PredictRequest()
    request.model_spec.name = draw(_NAMES)
    choice = draw(st.sampled_from(["none", "version", "label"]))
    if choice == "version":
        request.model_spec.version.value = draw(st.integers(-(2**63), 2**63 - 1))
    elif choice == "label":
        request.model_spec.version_label = draw(st.text(max_size=8))
    request.model_spec.signature_name = draw(
        st.sampled_from(["", "serving_default", "x", "../serving_default"])
    )
    for name in draw(st.lists(_INPUTS, max_size=3, unique=True)):
        request.inputs[name].CopyFrom(draw(_tensors()))
    request.output_filter.extend(draw(st.lists(st.text(max_size=6), max_size=2)))
    return request


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=_requests())
def test_grpc_predict_with_malformed_tensors(stub, request):
    try:
        stub.Predict(request, timeout=30)
    except grpc.RpcError as error:
        assert error.code() in CLIENT_ERRORS, (error.code(), error.details(), request)
        assert "Traceback" not in (error.details() or "")


def test_grpc_specific_malformed_requests_then_still_serving(stub, rest):
    def predict_error(request) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(request, timeout=30)
        return raised.value.code()

    def base(dims, content, dtype=4):
        request = protos.PredictRequest()
        request.model_spec.name = "fashion_mnist"
        tensor = request.inputs["images"]
        tensor.dtype = dtype
        for size in dims:
            tensor.tensor_shape.dim.add(size=size)
        tensor.tensor_content = content
        return request

    cases = [
        base([0, 2**40, 2**40], b""),  # zero elements, absurd dimensions
        base([2**40, 28, 28], b"\0" * 784),  # huge declared shape, small content
        base([1, 28, 28], b"\0" * 783),  # one byte short
        base([1, 28, 28], b"\0" * 785),  # one byte long
        base([1, 28, 28], b"\0" * 784 * 4, dtype=1),  # float32 where uint8 is expected
        base([1, 28, 28], b"\0" * 784 * 8, dtype=9),  # int64
        base([1, 28, 28], b"", dtype=7),  # string
        base([1, 28, 28, 1], b"\0" * 784),  # rank 4
        base([-1, 28, 28], b"\0" * 784),  # negative dimension
    ]
    for request in cases:
        assert predict_error(request) == grpc.StatusCode.INVALID_ARGUMENT, request
    # Still serving: gRPC and REST answer a valid request.
    good = protos.PredictRequest()
    good.model_spec.name = "fashion_mnist"
    ndarray_to_tensor_proto(np.zeros((2, 28, 28), np.uint8), good.inputs["images"])
    reply = stub.Predict(good, timeout=30)
    assert reply.outputs["probabilities"].tensor_shape.dim[0].size == 2
    _good_predict(rest)
