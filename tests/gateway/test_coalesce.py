"""serving.gateway.coalesce: concurrent requests share backend calls, each gets its own rows."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import numpy as np
import pytest
from prometheus_client import REGISTRY

from serving.gateway.coalesce import Coalescer
from serving.gateway.config import GatewayConfig
from serving.gateway.state import GatewayState
from serving.tfs_client import BackendError, BackendUnavailable, Prediction


class GatedBackend:
    """Doubles its input; the first call blocks until released, so others pile up behind it."""

    def __init__(self) -> None:
        self.calls: list[int] = []  # rows per call
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_with: BaseException | None = None
        self.lock = threading.Lock()

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> tuple[str, dict[str, np.ndarray]]:
        with self.lock:
            self.calls.append(len(inputs["x"]))
            first = len(self.calls) == 1
        if first:
            self.entered.set()
            assert self.release.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        return f"call{len(self.calls)}", {"y": inputs["x"] * 2, "n": np.arange(len(inputs["x"]))}


def run_in_threads(coalescer: Coalescer, backend: GatedBackend, requests: list[tuple]) -> list:
    """Start one request that occupies the backend, queue ``requests`` behind it, release."""
    results: list = [None] * (len(requests) + 1)

    def worker(i: int, key: object, x: np.ndarray) -> None:
        try:
            results[i] = coalescer.run(key, {"x": x}, backend)
        except BaseException as exc:
            results[i] = exc

    first = threading.Thread(target=worker, args=(0, "k", np.array([[100]])))
    first.start()
    assert backend.entered.wait(10)
    threads = [
        threading.Thread(target=worker, args=(i + 1, key, x)) for i, (key, x) in enumerate(requests)
    ]
    for t in threads:
        t.start()
    # Wait until every request is queued (the coalescer's queue holds them).
    for _ in range(1000):
        if len(coalescer._queue) == len(requests):
            break
        time.sleep(0.01)
    backend.release.set()
    for t in (first, *threads):
        t.join(10)
    return results


def test_a_lone_request_is_one_call_with_its_own_answer() -> None:
    backend = GatedBackend()
    backend.release.set()
    meta, outputs = Coalescer(max_rows=8).run("k", {"x": np.array([[1], [2]])}, backend)
    assert backend.calls == [2]
    assert meta == "call1"
    np.testing.assert_array_equal(outputs["y"], [[2], [4]])


def test_requests_queued_behind_a_busy_call_share_one_call_and_get_their_rows() -> None:
    backend = GatedBackend()
    coalescer = Coalescer(max_rows=64)
    requests = [("k", np.array([[i], [i + 1000]])) for i in range(5)]
    results = run_in_threads(coalescer, backend, requests)
    assert backend.calls == [1, 10]  # the busy one, then all five merged
    for i, (_key, x) in enumerate(requests, start=1):
        meta, outputs = results[i]
        assert meta == "call2"
        np.testing.assert_array_equal(outputs["y"], x * 2)
        assert len(outputs["n"]) == 2


def test_different_keys_are_never_merged() -> None:
    backend = GatedBackend()
    coalescer = Coalescer(max_rows=64)
    requests = [("a", np.array([[1]])), ("b", np.array([[2]])), ("a", np.array([[3]]))]
    results = run_in_threads(coalescer, backend, requests)
    assert sorted(backend.calls[1:]) == [1, 2]  # "a" twice together, "b" alone
    for i, (_key, x) in enumerate(requests, start=1):
        np.testing.assert_array_equal(results[i][1]["y"], x * 2)


def test_batches_respect_max_rows() -> None:
    backend = GatedBackend()
    coalescer = Coalescer(max_rows=4)
    requests = [("k", np.zeros((3, 1), dtype=int) + i) for i in range(3)]
    results = run_in_threads(coalescer, backend, requests)
    assert backend.calls[1:] == [3, 3, 3]
    for i, (_key, x) in enumerate(requests, start=1):
        np.testing.assert_array_equal(results[i][1]["y"], x * 2)


def test_a_backend_error_reaches_every_request_of_the_batch() -> None:
    backend = GatedBackend()
    backend.fail_with = BackendUnavailable("model server down")
    coalescer = Coalescer(max_rows=64)
    results = run_in_threads(coalescer, backend, [("k", np.array([[1]]))] * 3)
    assert all(isinstance(r, BackendUnavailable) for r in results)
    # The coalescer recovers: the next request makes a fresh call.
    backend.fail_with = None
    assert coalescer.run("k", {"x": np.array([[7]])}, backend)[1]["y"].tolist() == [[14]]


def test_a_backend_answer_without_one_row_per_input_row_is_a_backend_error() -> None:
    backend = GatedBackend()

    def scalar_answer(inputs: Mapping[str, np.ndarray]) -> tuple[str, dict[str, np.ndarray]]:
        backend(inputs)
        return "m", {"y": np.array(1.0)}

    coalescer = Coalescer(max_rows=64)
    results: list = []

    def worker() -> None:
        try:
            results.append(coalescer.run("k", {"x": np.array([[1]])}, scalar_answer))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    threads[0].start()
    assert backend.entered.wait(10)
    for t in threads[1:]:
        t.start()
    for _ in range(1000):
        if len(coalescer._queue) == 2:
            break
        time.sleep(0.01)
    backend.release.set()
    for t in threads:
        t.join(10)
    # The first ran alone and gets the answer as it is; the merged two get a clear error.
    assert sum(isinstance(r, tuple) for r in results) == 1
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 2 and all(isinstance(e, BackendError) for e in errors)
    assert "one row per input row" in str(errors[0])


def test_many_threads_all_get_their_own_answer() -> None:
    """No lost or crossed answers under real contention (no gating)."""
    coalescer = Coalescer(max_rows=16, max_in_flight=2)
    calls: list[int] = []

    def backend(inputs: Mapping[str, np.ndarray]) -> tuple[str, dict[str, np.ndarray]]:
        calls.append(len(inputs["x"]))
        return "m", {"y": inputs["x"] + 1}

    errors: list[str] = []

    def worker(i: int) -> None:
        for j in range(50):
            x = np.array([[i * 1000 + j]])
            _, out = coalescer.run("k", {"x": x}, backend)
            if out["y"].tolist() != [[i * 1000 + j + 1]]:
                errors.append(f"{i}/{j}: {out['y'].tolist()}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sum(calls) == 16 * 50
    assert max(calls) <= 16


@pytest.mark.parametrize("kwargs", [{"max_rows": 0}, {"max_rows": 4, "max_in_flight": 0}])
def test_bad_limits_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=">= 1"):
        Coalescer(**kwargs)


class GatedClient:
    """A TFServingClient stand-in for GatewayState: the first Predict blocks until released."""

    def __init__(self) -> None:
        self.rows: list[int] = []  # rows per call
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict(self, model: str, inputs: Mapping[str, np.ndarray], **_kwargs) -> Prediction:
        self.rows.append(len(inputs["images"]))
        if len(self.rows) == 1:
            self.entered.set()
            assert self.release.wait(10)
        return Prediction(model=model, version=3, outputs={"y": inputs["images"] + 1})


def _backend_count(model: str) -> float:
    labels = {"model": model, "rpc": "Predict", "outcome": "OK"}
    return REGISTRY.get_sample_value("gateway_backend_duration_seconds_count", labels) or 0.0


def test_the_backend_histogram_counts_calls_not_the_requests_they_carry() -> None:
    state = GatewayState(GatewayConfig())
    client = state.client = GatedClient()  # type: ignore[assignment]
    model = "coalesce_metric_test"
    before = _backend_count(model)
    answers: dict[int, np.ndarray] = {}

    def request(i: int) -> None:
        answer = state.predict(model, {"images": np.array([[i]])}, version=None, label=None)
        answers[i] = answer.outputs["y"]

    first = threading.Thread(target=request, args=(0,))
    first.start()
    assert client.entered.wait(10)
    queued = [threading.Thread(target=request, args=(i,)) for i in range(1, 6)]
    for t in queued:
        t.start()
    for _ in range(1000):  # all five wait behind the blocked call
        if state.coalescer is not None and len(state.coalescer._queue) == 5:
            break
        time.sleep(0.01)
    client.release.set()
    for t in (first, *queued):
        t.join(10)
    assert {i: a.tolist() for i, a in answers.items()} == {i: [[i + 1]] for i in range(6)}
    assert client.rows == [1, 5]  # six requests, two gRPC calls
    assert _backend_count(model) - before == 2
