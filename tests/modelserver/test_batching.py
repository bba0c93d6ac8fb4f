"""Dynamic batching: concurrent requests give the answers of unbatched calls, batches really
form (batch-size metric > 1), and a full queue answers UNAVAILABLE like TF Serving."""

from __future__ import annotations

import asyncio
import re
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.codecs.tensors import ndarray_to_tensor_proto, tensor_proto_to_ndarray
from serving.modelserver.batching import QUEUE_FULL, AsyncBatcher, Batcher
from serving.modelserver.config import BatchingConfig, load_batching_config
from serving.modelserver.errors import Internal, InvalidArgument, Unavailable
from serving.modelserver.servable import Signature
from serving.modelserver.specs import TensorSpecInfo
from tests.helpers.modelserver_process import (
    BATCHING_CONFIG,
    ModelServerProcess,
    running_modelserver,
)

CLIENTS = 24
METRICS_PATH = "/monitoring/prometheus/metrics"


@pytest.fixture(scope="module")
def batching_server(models_root: Path) -> Iterator[ModelServerProcess]:
    with running_modelserver(models_root, batching=True) as server:
        yield server


def make_request(index: int) -> predict_pb2.PredictRequest:
    """Request ``index``: alternately fashion_mnist (1-3 images) and housing (1-3 rows)."""
    rng = np.random.default_rng(index)
    rows = 1 + index % 3
    req = predict_pb2.PredictRequest()
    if index % 2:
        req.model_spec.name = "fashion_mnist"
        images = rng.integers(0, 256, (rows, 28, 28), dtype=np.uint8)
        ndarray_to_tensor_proto(images, req.inputs["images"])
    else:
        req.model_spec.name = "housing"
        features = rng.normal(3.0, 1.0, (rows, 8)).astype(np.float32)
        ndarray_to_tensor_proto(features[:, :5].copy(), req.inputs["wide"])
        ndarray_to_tensor_proto(features[:, 2:].copy(), req.inputs["deep"])
    return req


def concurrent_predict(target: str, count: int) -> list[dict[str, np.ndarray]]:
    """``count`` requests from CLIENTS threads released together (so they overlap)."""
    barrier = threading.Barrier(CLIENTS)
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def one(index: int) -> dict[str, np.ndarray]:
            if index < CLIENTS:
                barrier.wait(timeout=60)
            reply = stub.Predict(make_request(index), timeout=60)
            return {k: tensor_proto_to_ndarray(v) for k, v in reply.outputs.items()}

        with ThreadPoolExecutor(CLIENTS) as pool:
            return list(pool.map(one, range(count)))


def batch_sizes(rest_url: str) -> dict[str, set[int]]:
    """Batch sizes seen per model, from :tensorflow:serving:batching:processed_batch_size_v2."""
    with urllib.request.urlopen(rest_url + METRICS_PATH, timeout=30) as response:
        text = response.read().decode()
    sizes: dict[str, set[int]] = {}
    for line in text.splitlines():
        if line.startswith(":tensorflow:serving:batching:processed_batch_size_v2{"):
            model = re.search(r'model_name="([^"]+)"', line)
            size = re.search(r'batch_size="(\d+)"', line)
            if model and size and float(line.rsplit(" ", 1)[1]) > 0:
                sizes.setdefault(model.group(1), set()).add(int(size.group(1)))
    return sizes


@pytest.mark.slow
def test_batched_answers_equal_unbatched_answers(
    batching_server: ModelServerProcess, modelserver: ModelServerProcess
) -> None:
    count = 4 * CLIENTS
    batched = concurrent_predict(batching_server.grpc_target, count)
    unbatched = concurrent_predict(modelserver.grpc_target, count)
    for index, (got, want) in enumerate(zip(batched, unbatched, strict=True)):
        assert set(got) == set(want), index
        for name in want:
            assert got[name].shape == want[name].shape, (index, name)
            if want[name].dtype.kind in "fc":
                # Same rows, same graph; only the float rounding of the matmul kernels depends
                # on how many rows share the call (also true without batching), so allow
                # float32 rounding and nothing more.
                np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
            else:
                np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.slow
def test_concurrent_requests_form_batches(batching_server: ModelServerProcess) -> None:
    for _ in range(5):  # batches form when requests overlap; retry a busy-box miss
        concurrent_predict(batching_server.grpc_target, 2 * CLIENTS)
        sizes = batch_sizes(batching_server.rest_url)
        if max(sizes.get("fashion_mnist", {0})) > 3 and max(sizes.get("housing", {0})) > 3:
            break
    # One request has at most 3 rows: a larger batch merged several requests.
    assert max(sizes["fashion_mnist"]) > 3
    assert max(sizes["housing"]) > 3
    limit = load_batching_config(BATCHING_CONFIG).max_batch_size
    assert max(max(s) for s in sizes.values()) <= limit


class _BlockingSignature:
    """A stand-in signature whose graph call blocks until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.calls: list[int] = []

    def signature(self) -> Signature:
        def call(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
            self.started.set()
            self.release.wait(30)
            self.calls.append(len(inputs["x"]))
            return {"y": inputs["x"] * 2}

        spec = TensorSpecInfo(np.dtype("float32"), (-1,))
        return Signature("serving_default", {"x": spec}, {"y": spec}, True, call)


class _FakeServable:
    name = "fake"
    version = 1


def test_full_queue_is_unavailable_and_rows_are_split_back() -> None:
    fake = _BlockingSignature()
    signature = fake.signature()
    batcher = Batcher(BatchingConfig(max_batch_size=4, max_enqueued_batches=2, num_batch_threads=1))
    servable: Any = _FakeServable()
    results: dict[int, np.ndarray] = {}

    def submit(i: int, rows: int) -> None:
        x = np.full(rows, i, np.float32)
        results[i] = batcher.run(servable, signature, {"x": x}, rows)["y"]

    try:
        first = threading.Thread(target=submit, args=(0, 1))
        first.start()
        assert fake.started.wait(30)  # the batch thread is now busy with request 0
        waiting = [threading.Thread(target=submit, args=(i, 2)) for i in range(1, 5)]
        for thread in waiting:  # 4 x 2 rows = 8 = max_batch_size * max_enqueued_batches
            thread.start()
        deadline = threading.Event()
        while sum(len(q.tasks) for q in batcher._queues.values()) < 4:
            deadline.wait(0.01)
        with pytest.raises(Unavailable, match=QUEUE_FULL):
            batcher.run(servable, signature, {"x": np.zeros(1, np.float32)}, 1)
        fake.release.set()
        for thread in [first, *waiting]:
            thread.join(30)
        for i in range(5):
            np.testing.assert_array_equal(results[i], np.full(1 if i == 0 else 2, 2 * i))
        assert fake.calls[0] == 1 and max(fake.calls) == 4  # two requests merged per batch
    finally:
        fake.release.set()
        batcher.stop()


def test_many_threads_get_their_own_rows() -> None:
    """Leader/follower hand-offs under contention: every caller gets exactly its rows back."""
    seen_batches: list[int] = []

    def call(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        seen_batches.append(len(inputs["x"]))
        threading.Event().wait(0.0005)  # let other callers queue up meanwhile
        return {"y": inputs["x"] * 2 + 1}

    spec = TensorSpecInfo(np.dtype("float64"), (-1,))
    signature = Signature("serving_default", {"x": spec}, {"y": spec}, True, call)
    batcher = Batcher(
        BatchingConfig(max_batch_size=8, max_enqueued_batches=100, num_batch_threads=2)
    )
    servable: Any = _FakeServable()

    def caller(worker: int) -> bool:
        rng = np.random.default_rng(worker)
        for _ in range(40):
            x = rng.normal(size=int(rng.integers(1, 4)))
            y = batcher.run(servable, signature, {"x": x}, len(x))["y"]
            if not np.array_equal(y, x * 2 + 1):
                return False
        return True

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(caller, range(16), timeout=120))
    batcher.stop()
    assert max(seen_batches) > 3 and max(seen_batches) <= 8
    assert batcher._slots == 2  # every slot came back


# ---------------------------------------------------------------------------------------------
# The asyncio batcher (what the gRPC server uses), driven directly on a loop.


def _run(coroutine: Any) -> Any:
    """``asyncio.run`` in a thread of its own: playwright's sync API (tests/browser) leaves its
    event loop registered as running on the main thread."""
    with ThreadPoolExecutor(1) as runner:
        return runner.submit(asyncio.run, coroutine).result(timeout=120)


def _doubling_signature(calls: list[int], gate: threading.Event | None = None) -> Signature:
    def call(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        if gate is not None:
            gate.wait(30)
        calls.append(len(inputs["x"]))
        if (inputs["x"] < 0).any():
            raise ValueError("negative input")
        return {"y": inputs["x"] * 2}

    spec = TensorSpecInfo(np.dtype("float32"), (-1,))
    return Signature("serving_default", {"x": spec}, {"y": spec}, True, call)


def test_async_batcher_merges_queued_requests_and_splits_rows_back() -> None:
    calls: list[int] = []
    gate = threading.Event()
    signature = _doubling_signature(calls, gate)
    servable: Any = _FakeServable()

    async def scenario() -> list[np.ndarray]:
        with ThreadPoolExecutor(2) as executor:
            batcher = AsyncBatcher(
                BatchingConfig(max_batch_size=8, max_enqueued_batches=4, num_batch_threads=1),
                executor,
            )

            async def one(i: int, rows: int) -> np.ndarray:
                x = np.full(rows, i, np.float32)
                return (await batcher.run(servable, signature, {"x": x}, rows))["y"]

            first = asyncio.ensure_future(one(0, 1))
            await asyncio.sleep(0.05)  # request 0 runs alone; the next ones queue behind it
            rest = [asyncio.ensure_future(one(i, 2)) for i in range(1, 6)]
            await asyncio.sleep(0.05)
            gate.set()
            return await asyncio.wait_for(asyncio.gather(first, *rest), 30)

    results = _run(scenario())
    for i, y in enumerate(results):
        np.testing.assert_array_equal(y, np.full(1 if i == 0 else 2, 2 * i))
    assert calls == [1, 8, 2]  # then 4 requests (8 rows, the limit) merged, then the last one


def test_async_batcher_fails_a_whole_batch_when_the_graph_fails_and_keeps_serving() -> None:
    calls: list[int] = []
    gate = threading.Event()
    signature = _doubling_signature(calls, gate)
    servable: Any = _FakeServable()

    async def scenario() -> tuple[list[Any], np.ndarray]:
        with ThreadPoolExecutor(2) as executor:
            batcher = AsyncBatcher(
                BatchingConfig(max_batch_size=8, max_enqueued_batches=4, num_batch_threads=1),
                executor,
            )

            def run(value: float) -> Any:
                x = np.full(1, value, np.float32)
                return asyncio.ensure_future(batcher.run(servable, signature, {"x": x}, 1))

            blocker = run(1)
            await asyncio.sleep(0.05)
            doomed = [run(2), run(-1), run(3)]  # one bad row fails the graph call of all three
            await asyncio.sleep(0.05)
            gate.set()
            outcomes = await asyncio.wait_for(
                asyncio.gather(blocker, *doomed, return_exceptions=True), 30
            )
            after = await asyncio.wait_for(run(4), 30)  # the batcher still serves
            return outcomes, after["y"]

    outcomes, after = _run(scenario())
    np.testing.assert_array_equal(outcomes[0]["y"], [2])
    for outcome in outcomes[1:]:
        assert isinstance(outcome, Internal) and "negative input" in outcome.message
    np.testing.assert_array_equal(after, [8])


def test_async_batcher_answers_a_batch_whose_first_client_went_away() -> None:
    calls: list[int] = []
    gate = threading.Event()
    signature = _doubling_signature(calls, gate)
    servable: Any = _FakeServable()

    async def scenario() -> list[np.ndarray]:
        with ThreadPoolExecutor(2) as executor:
            batcher = AsyncBatcher(
                BatchingConfig(max_batch_size=8, max_enqueued_batches=4, num_batch_threads=1),
                executor,
            )

            def run(value: float) -> Any:
                x = np.full(1, value, np.float32)
                return asyncio.ensure_future(batcher.run(servable, signature, {"x": x}, 1))

            started = run(1)  # starts the batch, then its client cancels
            others = [run(2), run(3)]  # queued behind it
            await asyncio.sleep(0.05)  # request 1 is in the graph call now
            started.cancel()
            gate.set()
            return [r["y"] for r in await asyncio.wait_for(asyncio.gather(*others), 30)]

    assert [list(y) for y in _run(scenario())] == [[4], [6]]


def test_async_batcher_fails_cleanly_when_the_executor_is_gone() -> None:
    signature = _doubling_signature([])
    servable: Any = _FakeServable()

    async def scenario() -> None:
        executor = ThreadPoolExecutor(1)
        executor.shutdown()
        batcher = AsyncBatcher(
            BatchingConfig(max_batch_size=8, max_enqueued_batches=4, num_batch_threads=1),
            executor,
        )
        x = np.ones(1, np.float32)
        await asyncio.wait_for(batcher.run(servable, signature, {"x": x}, 1), 30)

    with pytest.raises(Internal, match="batched run of model 'fake' failed"):
        _run(scenario())


def test_a_request_larger_than_a_batch_is_refused_as_tf_serving_does() -> None:
    signature = _doubling_signature([])
    servable: Any = _FakeServable()
    config = BatchingConfig(max_batch_size=4, max_enqueued_batches=4, num_batch_threads=1)
    message = "Task size 5 is larger than maximum input batch size 4"
    with pytest.raises(InvalidArgument, match=message):
        Batcher(config).run(servable, signature, {"x": np.ones(5, np.float32)}, 5)
    np.testing.assert_array_equal(
        Batcher(config).run(servable, signature, {"x": np.ones(4, np.float32)}, 4)["y"], [2] * 4
    )

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as executor:
            batcher = AsyncBatcher(config, executor)
            await batcher.run(servable, signature, {"x": np.ones(5, np.float32)}, 5)

    with pytest.raises(InvalidArgument, match=message):
        _run(scenario())


@pytest.mark.slow
def test_oversize_request_is_invalid_argument_over_grpc(
    batching_server: ModelServerProcess,
) -> None:
    limit = load_batching_config(BATCHING_CONFIG).max_batch_size
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "fashion_mnist"
    ndarray_to_tensor_proto(np.zeros((limit + 1, 28, 28), np.uint8), request.inputs["images"])
    with grpc.insecure_channel(batching_server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(request, timeout=60)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == (
            f"Task size {limit + 1} is larger than maximum input batch size {limit}"
        )
        del request.inputs["images"]
        ndarray_to_tensor_proto(np.zeros((limit, 28, 28), np.uint8), request.inputs["images"])
        reply = stub.Predict(request, timeout=60)
        assert tensor_proto_to_ndarray(reply.outputs["probabilities"]).shape == (limit, 10)
