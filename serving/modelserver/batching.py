"""Dynamic batching: concurrent Predict calls for one servable+signature become one graph call.

Per-call overhead dominates this model (≈0.2 ms per call, ≈2 µs per extra image), so merging
is the lever. The batcher has no threads of its own and never waits on purpose
(leader/follower): a request that finds fewer than ``num_batch_threads`` batches running runs
one itself, taking everything queued for its signature (up to ``max_batch_size`` rows), its own
request included. Requests that arrive while all slots are busy queue up; when a leader has
its own answer it hands its slot to the oldest waiting request, whose thread runs the next
batch with everything queued meanwhile. A lone client thus pays no hand-off and no fixed
delay, and under load batches grow by themselves. ``batch_timeout_micros`` is an upper bound
that is never reached on purpose, not a wait (docs/modelserver.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.modelserver.config import BatchingConfig
from serving.modelserver.errors import Internal, InvalidArgument, ModelServerError, Unavailable
from serving.modelserver.servable import Servable, Signature

log = logging.getLogger("serving.modelserver")

QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


def _check_task_size(rows: int, max_batch_size: int) -> None:
    # As TF Serving's batch scheduler: a request with more rows than one batch holds is refused,
    # not split (splitting is TF Serving's opt-in enable_large_batch_splitting). Running it
    # alone would hide from tests a request that the production server fails.
    if rows > max_batch_size:
        raise InvalidArgument(
            f"Task size {rows} is larger than maximum input batch size {max_batch_size}"
        )


@dataclass(eq=False)
class _Task:
    inputs: dict[str, np.ndarray]
    rows: int
    enqueued: float = field(default_factory=time.perf_counter)
    wake: threading.Event = field(default_factory=threading.Event)
    finished: bool = False  # outputs or error are set
    promoted: bool = False  # this task's thread was handed a batch slot
    leading: bool = False  # this task's thread holds a slot (never promote it again)
    outputs: dict[str, np.ndarray] | None = None
    error: ModelServerError | None = None


@dataclass(eq=False)
class _Queue:
    servable: Servable
    signature: Signature
    tasks: deque[_Task] = field(default_factory=deque)
    rows: int = 0


def _take_batch(
    ready: deque[_Queue], queues: dict[tuple[int, str], _Queue], max_rows: int
) -> tuple[_Queue, list[Any]]:
    """The next batch (up to ``max_rows`` rows) from the oldest ready queue, for both batchers."""
    queue = ready.popleft()
    batch: list[Any] = []
    rows = 0
    while queue.tasks and rows + queue.tasks[0].rows <= max_rows:
        task = queue.tasks.popleft()
        batch.append(task)
        rows += task.rows
    queue.rows -= rows
    if queue.tasks:
        ready.append(queue)  # the rest waits its turn behind other signatures
    else:
        key = (id(queue.servable), queue.signature.name)
        if queues.get(key) is queue:
            # Drop empty queues so an unloaded servable is not kept alive by its queue.
            del queues[key]
    return queue, batch


def _run_batch(signature: Signature, batch_inputs: list[dict[str, np.ndarray]]) -> list[dict]:
    """One graph call for several requests' inputs; returns each request's output rows."""
    if len(batch_inputs) == 1:
        return [signature.run(batch_inputs[0])]
    merged = {
        name: np.concatenate([inputs[name] for inputs in batch_inputs]) for name in signature.inputs
    }
    outputs = signature.run(merged)
    results, start = [], 0
    for inputs in batch_inputs:
        end = start + len(next(iter(inputs.values())))
        results.append({name: value[start:end] for name, value in outputs.items()})
        start = end
    return results


def _timed_run_batch(
    signature: Signature, batch_inputs: list[dict[str, np.ndarray]]
) -> tuple[list[dict], float, float]:
    """``_run_batch`` timed where it runs: (results, start, seconds). Timing around an awaited
    executor call would also count the wait for the event loop to pick the result up."""
    started = time.perf_counter()
    results = _run_batch(signature, batch_inputs)
    return results, started, time.perf_counter() - started


class Batcher:
    """For threaded callers (REST): ``run`` blocks the calling handler thread."""

    def __init__(self, config: BatchingConfig, metrics: Any = None) -> None:
        self._config = config
        self._metrics = metrics
        self._max_queued_rows = config.max_batch_size * config.max_enqueued_batches
        self._queues: dict[tuple[int, str], _Queue] = {}
        self._ready: deque[_Queue] = deque()  # queues with waiting tasks, oldest first
        self._lock = threading.Lock()
        self._slots = config.num_batch_threads  # batches that may run at once
        self._stopping = False

    def run(
        self, servable: Servable, signature: Signature, inputs: dict[str, np.ndarray], rows: int
    ) -> dict[str, np.ndarray]:
        """Queue validated inputs with ``rows`` rows; returns this request's slice of outputs."""
        _check_task_size(rows, self._config.max_batch_size)
        if rows <= 0:  # nothing to merge
            return signature.run(inputs)
        task = _Task(inputs, rows)
        key = (id(servable), signature.name)
        with self._lock:
            if self._stopping:
                raise Unavailable("the model server is shutting down")
            queue = self._queues.get(key)
            if queue is None or queue.servable is not servable:
                queue = self._queues[key] = _Queue(servable, signature)
            if queue.rows + rows > self._max_queued_rows:
                raise Unavailable(QUEUE_FULL)
            if not queue.tasks:
                self._ready.append(queue)
            queue.tasks.append(task)
            queue.rows += rows
            lead = self._slots > 0
            if lead:
                self._slots -= 1
                task.leading = True
        if not lead:
            lead = self._wait(task)
        if lead:
            self._lead(task)
        if task.error is not None:
            raise task.error
        assert task.outputs is not None
        return task.outputs

    def _wait(self, task: _Task) -> bool:
        """Wait for the answer or for a slot; True when this thread must lead.

        ``finished``/``promoted`` and the event change only under the lock, so checking them
        and clearing the event cannot lose a wake-up.
        """
        while True:
            task.wake.wait()
            with self._lock:
                if task.promoted:
                    task.promoted = False
                    task.leading = True
                    if not task.finished:
                        task.wake.clear()
                    return True
                if task.finished:
                    return False
                task.wake.clear()

    def _lead(self, task: _Task) -> None:
        """Run batches (oldest queue first) until ``task`` is answered, then pass the slot on."""
        while True:
            with self._lock:
                if task.finished or not self._ready:
                    self._hand_over()
                    break
                queue, batch = self._take()
            self._execute(queue, batch)
        # Not finished: another leader is running the batch holding our task right now.
        task.wake.wait()

    def _hand_over(self) -> None:
        """Under the lock: give our slot to the oldest waiting task, or free it."""
        for queue in self._ready:
            for waiting in queue.tasks:
                if not waiting.leading and not waiting.promoted:
                    waiting.promoted = True
                    waiting.wake.set()
                    return
        self._slots += 1

    def _take(self) -> tuple[_Queue, list[_Task]]:
        """Under the lock: the next batch from the oldest ready queue."""
        return _take_batch(self._ready, self._queues, self._config.max_batch_size)

    def _execute(self, queue: _Queue, batch: list[_Task]) -> None:
        try:
            results, started, seconds = _timed_run_batch(
                queue.signature, [task.inputs for task in batch]
            )
            for task, outputs in zip(batch, results, strict=True):
                task.outputs = outputs
            if self._metrics is not None:
                _record(self._metrics, queue.servable, batch, started, seconds)
        except Exception as exc:  # the graph failed: fail every request of the batch
            log.exception("batched run of %r failed", queue.servable)
            error = Internal(f"batched run of model '{queue.servable.name}' failed: {exc}")
            for task in batch:
                task.error = error
        finally:
            with self._lock:
                for task in batch:
                    task.finished = True
                    task.wake.set()

    def stop(self) -> None:
        """Refuse new requests; queued ones are still run by their leaders."""
        with self._lock:
            self._stopping = True


def _record(
    metrics: Any, servable: Servable, batch: list[Any], started: float, seconds: float
) -> None:
    metrics.record_runtime(servable.name, servable.version, "predict", seconds)
    metrics.record_batch(servable.name, servable.version, sum(t.rows for t in batch))
    for task in batch:
        metrics.record_queuing(servable.name, started - task.enqueued)


@dataclass(eq=False)
class _AsyncTask:
    inputs: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class AsyncBatcher:
    """For the asyncio gRPC server: everything but the graph call runs on the event loop.

    Requests wait as futures (no thread each). While fewer than ``num_batch_threads`` batches
    are running, a new request schedules a batch start for the next loop turn (so requests
    that arrive together join one batch), taking everything queued for the oldest signature;
    when a batch finishes, a callback answers its requests and at once starts the next batch
    from whatever queued meanwhile, so batches grow under load without a fixed wait. Batches
    are run and answered by callbacks, not by a waiting coroutine (no task per batch), so a
    client that goes away cannot strand the other requests of its batch. Use from the loop
    thread only.
    """

    def __init__(self, config: BatchingConfig, executor: Executor, metrics: Any = None) -> None:
        self._config = config
        self._executor = executor
        self._metrics = metrics
        self._max_queued_rows = config.max_batch_size * config.max_enqueued_batches
        self._queues: dict[tuple[int, str], _Queue] = {}
        self._ready: deque[_Queue] = deque()
        self._running = 0  # batches in the executor now
        self._starting = 0  # batch starts scheduled for the next loop turn
        self._stopping = False

    async def run(
        self, servable: Servable, signature: Signature, inputs: dict[str, np.ndarray], rows: int
    ) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        _check_task_size(rows, self._config.max_batch_size)
        if rows <= 0:  # nothing to merge
            return await loop.run_in_executor(self._executor, signature.run, inputs)
        if self._stopping:
            raise Unavailable("the model server is shutting down")
        key = (id(servable), signature.name)
        queue = self._queues.get(key)
        if queue is None or queue.servable is not servable:
            queue = self._queues[key] = _Queue(servable, signature)
        if queue.rows + rows > self._max_queued_rows:
            raise Unavailable(QUEUE_FULL)
        task = _AsyncTask(inputs, rows, loop.create_future())
        if not queue.tasks:
            self._ready.append(queue)
        queue.tasks.append(task)  # type: ignore[arg-type]
        queue.rows += rows
        if self._running + self._starting < self._config.num_batch_threads:
            # Start on the next loop turn, not now: requests answered together come back
            # together, and this lets all of them join the batch instead of the first alone.
            self._starting += 1
            loop.call_soon(self._start_waiting, loop)
        return await task.future

    def _take(self) -> tuple[_Queue, list[_AsyncTask]]:
        return _take_batch(self._ready, self._queues, self._config.max_batch_size)

    def _start_waiting(self, loop: asyncio.AbstractEventLoop) -> None:
        self._starting -= 1
        if self._ready and self._running < self._config.num_batch_threads:
            self._start_batch(loop)

    def _start_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the next batch in the executor; ``_finish_batch`` answers it."""
        queue, batch = self._take()
        try:
            running = loop.run_in_executor(
                self._executor, _timed_run_batch, queue.signature, [t.inputs for t in batch]
            )
        except Exception as exc:  # e.g. the executor is already shut down
            self._fail(queue, batch, exc)
            return
        self._running += 1
        running.add_done_callback(functools.partial(self._finish_batch, loop, queue, batch))

    def _finish_batch(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: _Queue,
        batch: list[_AsyncTask],
        running: asyncio.Future,
    ) -> None:
        self._running -= 1
        try:
            if running.cancelled():
                self._fail(queue, batch, RuntimeError("the graph call was cancelled"))
            elif running.exception() is not None:
                self._fail(queue, batch, running.exception())  # type: ignore[arg-type]
            else:
                results, started, seconds = running.result()
                for task, outputs in zip(batch, results, strict=True):
                    if not task.future.done():  # the client may have gone (cancelled)
                        task.future.set_result(outputs)
                if self._metrics is not None:
                    _record(self._metrics, queue.servable, batch, started, seconds)
        finally:
            while self._ready and self._running < self._config.num_batch_threads:
                self._start_batch(loop)

    def _fail(self, queue: _Queue, batch: list[_AsyncTask], exc: BaseException) -> None:
        log.error("batched run of %r failed", queue.servable, exc_info=exc)
        error = Internal(f"batched run of model '{queue.servable.name}' failed: {exc}")
        for task in batch:
            if not task.future.done():
                task.future.set_exception(error)

    def stop(self) -> None:
        """Refuse new requests; queued ones still run."""
        self._stopping = True
