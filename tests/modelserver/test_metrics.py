"""ServerMetrics: TF Serving's metric names and units, and the counts a real server exposes
after predict calls over REST and gRPC."""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time

import grpc
import numpy as np
import orjson
import pytest

from serving.codecs.tensors import ndarray_to_tensor_proto
from serving.modelserver import metrics as m
from serving.modelserver.metrics import ServerMetrics
from serving.protos import PredictionServiceStub, PredictRequest
from tests.helpers.modelserver_process import ModelServerProcess

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Prometheus text exposition -> {(sample name, labels): value}."""
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"unparsable exposition line: {line!r}"
        name, labels, value = match.groups()
        samples[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
    return samples


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def exposition(metrics: ServerMetrics) -> Samples:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain; version=0.0.4")
    return parse(body.decode())


# -- unit -----------------------------------------------------------------------------------


def test_request_count_and_latency_use_tf_serving_names_labels_and_microseconds() -> None:
    metrics = ServerMetrics(process_metrics=False)
    metrics.record_request("fashion_mnist", 1, "predict", "REST", "OK", 0.002)
    metrics.record_request("fashion_mnist", 1, "Predict", "REST", "OK", 0.004)
    metrics.record_request("fashion_mnist", None, "Predict", "GRPC", "NOT_FOUND", 0.001)
    samples = exposition(metrics)
    ok = {"model_name": "fashion_mnist", "version": "1", "API": "Predict", "entrypoint": "REST"}
    assert sample(samples, m.REQUEST_COUNT, **ok, status="OK") == 2
    assert (
        sample(
            samples,
            m.REQUEST_COUNT,
            model_name="fashion_mnist",
            version="",
            API="Predict",
            entrypoint="GRPC",
            status="NOT_FOUND",
        )
        == 1
    )
    assert sample(samples, f"{m.REQUEST_LATENCY}_count", **ok) == 2
    assert sample(samples, f"{m.REQUEST_LATENCY}_sum", **ok) == pytest.approx(6000)
    # Failed requests are counted but, as in TF Serving, not timed.
    failed = {k: v for k, v in ok.items() if k != "entrypoint"}
    assert sample(samples, f"{m.REQUEST_LATENCY}_count", **failed, entrypoint="GRPC") == 0


def test_histogram_buckets_are_cumulative_and_le_inclusive() -> None:
    metrics = ServerMetrics(process_metrics=False)
    for seconds in (5e-6, 10e-6, 11e-6, 3600.0):
        metrics.record_request("housing", 1, "Predict", "GRPC", "OK", seconds)
    samples = exposition(metrics)
    labels = {"model_name": "housing", "version": "1", "API": "Predict", "entrypoint": "GRPC"}
    bucket = f"{m.REQUEST_LATENCY}_bucket"
    assert sample(samples, bucket, **labels, le="10") == 2  # 5 µs and exactly 10 µs
    assert sample(samples, bucket, **labels, le="18") == 3
    assert sample(samples, bucket, **labels, le="+Inf") == 4
    limits = sorted(
        float(dict(key[1])["le"])
        for key in samples
        if key[0] == bucket and dict(key[1])["le"] != "+Inf"
    )
    assert limits == list(m.LATENCY_BUCKETS_US)
    assert len(limits) == 33 and limits[0] == 10


def test_exposition_headers_match_the_sample_names() -> None:
    metrics = ServerMetrics(process_metrics=False)
    metrics.record_request("housing", 1, "Predict", "GRPC", "OK", 0.001)
    metrics.record_load("housing", 1, 0.5, True, path="/models/housing/1")
    text = metrics.exposition()[0].decode()
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    assert "# TYPE :tensorflow:cc:saved_model:load_attempt_count counter" in text
    assert "_total" not in text and "_created" not in text


def test_batch_and_load_metrics() -> None:
    metrics = ServerMetrics(process_metrics=False)
    metrics.record_batch("fashion_mnist", 2, 7)
    metrics.record_batch("fashion_mnist", 2, 7)
    metrics.record_batch("fashion_mnist", 2, 1)
    metrics.record_queuing("fashion_mnist", 0.0005)
    metrics.record_runtime("fashion_mnist", 2, "predict", 0.001)
    metrics.record_load("fashion_mnist", 2, 1.5, True, path="/m/fashion_mnist/2")
    metrics.record_load("fashion_mnist", 3, 0.2, False)
    samples = exposition(metrics)
    op = m.BATCHING_OP_NAME
    assert sample(samples, m.PROCESSED_BATCH_SIZE, model_name="fashion_mnist", op_name=op,
                  batch_size="7") == 2  # fmt: skip
    batch = {"model_name": "fashion_mnist", "version": "2", "op_name": op}
    assert sample(samples, f"{m.BATCH_SIZE}_count", **batch) == 3
    assert sample(samples, f"{m.BATCH_SIZE}_sum", **batch) == 15
    assert sample(samples, f"{m.QUEUING_LATENCY}_sum", thread_pool_name="fashion_mnist") == 500
    runtime = {"model_name": "fashion_mnist", "version": "2", "API": "Predict", "runtime": "TF2"}
    assert sample(samples, f"{m.RUNTIME_LATENCY}_count", **runtime) == 1
    path = "/m/fashion_mnist/2"
    assert sample(samples, m.LOAD_ATTEMPT_COUNT, model_path=path, status="success") == 1
    assert sample(samples, m.LOAD_ATTEMPT_COUNT, model_path="fashion_mnist/3", status="fail") == 1
    assert sample(samples, m.LOAD_LATENCY, model_path=path) == pytest.approx(1.5e6)
    assert sample(samples, m.LOAD_LATENCY, model_path="fashion_mnist/3") == 0


def test_recording_is_thread_safe() -> None:
    metrics = ServerMetrics(process_metrics=False)

    def work() -> None:
        for _ in range(2000):
            metrics.record_request("housing", 1, "Predict", "REST", "OK", 0.001)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    labels = {"model_name": "housing", "version": "1", "API": "Predict", "entrypoint": "REST"}
    assert metrics.value(m.REQUEST_COUNT, {**labels, "status": "OK"}) == 16000
    assert metrics.value(m.REQUEST_LATENCY, labels) == 16000


def test_label_sets_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(m, "MAX_SERIES_PER_METRIC", 3)
    metrics = ServerMetrics(process_metrics=False)
    for i in range(10):
        metrics.record_request(f"scan-{i}", None, "Predict", "REST", "NOT_FOUND", 0.001)
    metrics.record_request("scan-0", None, "Predict", "REST", "NOT_FOUND", 0.001)
    samples = exposition(metrics)
    series = {k: v for k, v in samples.items() if k[0] == m.REQUEST_COUNT}
    assert len(series) == 4
    overflow = dict.fromkeys(
        ("model_name", "version", "API", "entrypoint", "status"), m.OVERFLOW_LABEL
    )
    assert sample(samples, m.REQUEST_COUNT, **overflow) == 7
    first = {"model_name": "scan-0", "version": "", "API": "Predict", "entrypoint": "REST"}
    assert sample(samples, m.REQUEST_COUNT, **first, status="NOT_FOUND") == 2


def test_process_metrics_are_included_by_default() -> None:
    text = ServerMetrics().exposition()[0].decode()
    assert "process_cpu_seconds_total" in text


# -- against the real server ----------------------------------------------------------------


def _scrape(server: ModelServerProcess) -> Samples:
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        conn.request("GET", "/monitoring/prometheus/metrics")
        response = conn.getresponse()
        assert response.status == 200
        return parse(response.read().decode())
    finally:
        conn.close()


def _wait_for_rest(server: ModelServerProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", server.rest_port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"REST port never opened:\n{server.log_tail()}")
            time.sleep(0.1)


@pytest.mark.slow
def test_server_counts_rest_and_grpc_predicts(modelserver: ModelServerProcess) -> None:
    _wait_for_rest(modelserver)
    n = 4
    images = np.random.default_rng(0).integers(0, 256, (2, 28, 28)).astype(np.uint8)
    before = _scrape(modelserver)

    conn = http.client.HTTPConnection("127.0.0.1", modelserver.rest_port, timeout=30)
    try:
        for _ in range(n):
            conn.request(
                "POST",
                "/v1/models/fashion_mnist:predict",
                body=orjson.dumps({"instances": images.tolist()}),
            )
            response = conn.getresponse()
            assert response.status == 200, response.read()
            response.read()
        conn.request("POST", "/v1/models/fashion_mnist:predict", body=b'{"instances": [[300]]}')
        bad = conn.getresponse()
        bad.read()
        assert bad.status == 400
    finally:
        conn.close()

    request = PredictRequest()
    request.model_spec.name = "fashion_mnist"
    ndarray_to_tensor_proto(images, request.inputs["images"])
    with grpc.insecure_channel(modelserver.grpc_target) as channel:
        stub = PredictionServiceStub(channel)
        for _ in range(n):
            stub.Predict(request, timeout=30)

    after = _scrape(modelserver)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    base = {"model_name": "fashion_mnist", "version": "1", "API": "Predict"}
    for entrypoint in ("REST", "GRPC"):
        assert delta(m.REQUEST_COUNT, **base, entrypoint=entrypoint, status="OK") == n
        assert delta(f"{m.REQUEST_LATENCY}_count", **base, entrypoint=entrypoint) == n
        assert delta(f"{m.REQUEST_LATENCY}_bucket", **base, entrypoint=entrypoint, le="+Inf") == n
        assert delta(f"{m.REQUEST_LATENCY}_sum", **base, entrypoint=entrypoint) > 0
    # The refused request is counted under its gRPC code; it never resolved a version.
    refused = {**base, "version": "", "entrypoint": "REST", "status": "INVALID_ARGUMENT"}
    assert delta(m.REQUEST_COUNT, **refused) == 1
    runtime = {**base, "runtime": "TF2"}
    assert delta(f"{m.RUNTIME_LATENCY}_count", **runtime) == 2 * n
    load = [k for k in after if k[0] == m.LOAD_ATTEMPT_COUNT and ("status", "success") in k[1]]
    assert len(load) >= 2  # both models were loaded and counted
