"""serving.tfs_client against an in-process fake PredictionService (wire format is the real one)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import grpc
import numpy as np
import pytest

from serving.tfs_client import (
    BackendUnavailable,
    DeadlineExceeded,
    ModelNotFound,
    TFServingClient,
)

from .fake_modelserver import FakeModelServer, fake_fashion_outputs


@pytest.fixture(scope="module")
def fake():
    server = FakeModelServer().start()
    yield server
    server.stop()


@pytest.fixture
def client(fake):
    fake.behaviour.fail_unavailable = 0
    fake.behaviour.fail_code = grpc.StatusCode.UNAVAILABLE
    fake.behaviour.delay = 0.0
    with TFServingClient(fake.target, timeout=2.0, retries=2, backoff=0.01) as tfs:
        yield tfs


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def test_predict_returns_outputs_and_the_version_that_answered(client):
    images = _images(3)
    prediction = client.predict("fashion_mnist", {"images": images})
    assert prediction.model == "fashion_mnist"
    assert prediction.version == 2  # the fake's latest
    expected = fake_fashion_outputs(images)
    np.testing.assert_allclose(prediction.outputs["probabilities"], expected["probabilities"])
    np.testing.assert_array_equal(prediction.outputs["class_ids"], expected["class_ids"])


def test_version_and_label_select_the_version(client):
    assert client.predict("fashion_mnist", {"images": _images(1)}, version=1).version == 1
    assert client.predict("fashion_mnist", {"images": _images(1)}, label="canary").version == 2
    with pytest.raises(ValueError, match="not both"):
        client.predict("fashion_mnist", {"images": _images(1)}, version=1, label="stable")


def test_output_filter_limits_outputs(client):
    prediction = client.predict(
        "fashion_mnist", {"images": _images(2)}, output_filter=["class_ids"]
    )
    assert set(prediction.outputs) == {"class_ids"}


def test_unknown_model_or_version_is_model_not_found(client):
    with pytest.raises(ModelNotFound, match="nope") as info:
        client.predict("nope", {"images": _images(1)})
    assert info.value.grpc_code.name == "NOT_FOUND"
    with pytest.raises(ModelNotFound, match="fashion_mnist version 7"):
        client.predict("fashion_mnist", {"images": _images(1)}, version=7)


def test_unavailable_is_retried_within_the_bound(client, fake):
    fake.behaviour.fail_unavailable = 2  # retries=2: the third attempt succeeds
    before = fake.behaviour.calls
    assert client.predict("fashion_mnist", {"images": _images(1)}).version == 2
    assert fake.behaviour.calls - before == 3


def test_unavailable_beyond_the_bound_raises(client, fake):
    fake.behaviour.fail_unavailable = 5
    before = fake.behaviour.calls
    with pytest.raises(BackendUnavailable, match="after 3 attempts"):
        client.predict("fashion_mnist", {"images": _images(1)})
    assert fake.behaviour.calls - before == 3


def test_a_call_cancelled_by_the_server_side_counts_as_unavailable(client, fake):
    # A server or proxy going away can reset a stream (CANCELLED) before its GOAWAY: retried
    # like UNAVAILABLE, and reported as unavailable (the gateway's 503), not as a server fault.
    fake.behaviour.fail_code = grpc.StatusCode.CANCELLED
    fake.behaviour.fail_unavailable = 2
    assert client.predict("fashion_mnist", {"images": _images(1)}).version == 2
    fake.behaviour.fail_unavailable = 5
    with pytest.raises(BackendUnavailable, match="after 3 attempts") as info:
        client.predict("fashion_mnist", {"images": _images(1)})
    assert info.value.grpc_code == grpc.StatusCode.CANCELLED


def test_slow_server_raises_deadline_exceeded(client, fake):
    fake.behaviour.delay = 0.5
    with pytest.raises(DeadlineExceeded, match=r"within 0\.1 s"):
        client.predict("fashion_mnist", {"images": _images(1)}, timeout=0.1)


def test_unreachable_server_is_unavailable():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (
        TFServingClient(f"127.0.0.1:{port}", timeout=1.0, backoff=0.01) as tfs,
        pytest.raises(BackendUnavailable, match="unavailable"),
    ):
        tfs.status("fashion_mnist")


def test_status_and_metadata(client):
    assert client.status("fashion_mnist") == [
        {"version": v, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}
        for v in (1, 2)
    ]
    meta = client.metadata("fashion_mnist", version=1)
    assert meta["model_spec"] == {"name": "fashion_mnist", "version": 1}
    images = meta["signature_def"]["serving_default"]["inputs"]["images"]
    assert images["dtype"] == "DT_UINT8"
    assert [int(d["size"]) for d in images["tensor_shape"]["dim"]] == [-1, 28, 28]


def test_channel_is_reused_and_recreated_after_fork(client):
    client.status("housing")
    channel = client._channel
    client.status("housing")
    assert client._channel is channel
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the inherited channel must not be used
        try:
            client._stubs()
            os.write(write, b"new" if client._channel is not channel else b"old")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 3) == b"new"


def test_client_module_does_not_import_tensorflow():
    code = (
        "import sys, serving.tfs_client, serving.codecs.images; print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_server_that_never_completes_the_handshake_is_unavailable():
    # A listening socket nobody accepts from: TCP connects, HTTP/2 never starts. gRPC reports
    # the failed connection attempt as UNAVAILABLE (not DEADLINE_EXCEEDED): 503, not 504.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        target = f"127.0.0.1:{sock.getsockname()[1]}"
        with (
            TFServingClient(target, timeout=0.5) as tfs,
            pytest.raises(BackendUnavailable, match="unavailable"),
        ):
            tfs.predict("fashion_mnist", {"images": _images(1)})


def test_slow_answer_on_a_live_connection_stays_deadline_exceeded(client, fake):
    client.status("housing")  # connection READY
    fake.behaviour.delay = 0.5
    with pytest.raises(DeadlineExceeded):
        client.status("housing", timeout=0.1)
