"""Request coalescing: concurrent predictions in one gateway worker share one backend call.

A Predict call costs nearly the same CPU for 1 image as for 32 (gRPC framing and the Python
handlers on both ends dominate; the graph adds ≈2 µs per image), and on a 2-core box that
per-call cost, not the HTTP layer, capped the gateway (docs/performance.md). So each worker
merges the requests that arrive while its previous backend call is in flight.

There is no fixed wait: a lone request is sent at once (after one yield to requests already
being parsed), and batches only grow when requests pile up behind a busy call. Leader/follower,
without an extra thread: a caller queues its inputs; if fewer than ``max_in_flight`` calls of
this worker are running, it becomes a leader, takes the queued requests with the same key
(model, version, label, output filter, input dtypes and shapes) up to ``max_rows`` rows, makes
one call and hands every request its slice of the outputs, or the same error. Thread workers
(gthread) and gevent workers (the standard library's locks are greenlet-aware once
monkey-patched) both work.

Latency stays bounded (tests/reliability): a leader stops leading once its own request is
answered and hands the queue to the oldest waiting request; with ``timeout`` a request gives up
(DEADLINE_EXCEEDED) when its deadline passes while it is still queued, so waiting behind a slow
call counts against the request's deadline instead of adding to it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import grpc
import numpy as np

from serving.tfs_client import BackendError, DeadlineExceeded

Meta = TypeVar("Meta")
#: ``call(merged_inputs) -> (metadata shared by the batch, outputs with one row per input row)``
BackendCall = Callable[[Mapping[str, np.ndarray]], tuple[Meta, Mapping[str, np.ndarray]]]


@dataclass(eq=False)
class _Job(Generic[Meta]):
    key: Hashable
    inputs: Mapping[str, np.ndarray]
    rows: int
    call: BackendCall
    deadline: float | None = None  # time.monotonic() past which it is not worth sending
    done: threading.Event = field(default_factory=threading.Event)  # answered, or promoted
    finished: bool = False  # answered (outputs or error)
    promoted: bool = False  # woken to lead the queue
    meta: Meta | None = None
    outputs: dict[str, np.ndarray] | None = None
    error: BaseException | None = None


class Coalescer(Generic[Meta]):
    """Merges concurrent ``run`` calls with equal keys into one backend call."""

    def __init__(self, *, max_rows: int, max_in_flight: int = 1) -> None:
        if max_rows < 1 or max_in_flight < 1:
            raise ValueError("max_rows and max_in_flight must be >= 1")
        self.max_rows = max_rows
        self.max_in_flight = max_in_flight
        self._lock = threading.Lock()
        self._queue: deque[_Job[Meta]] = deque()
        self._in_flight = 0

    def run(
        self,
        key: Hashable,
        inputs: Mapping[str, np.ndarray],
        call: BackendCall,
        *,
        timeout: float | None = None,
    ) -> tuple[Meta, dict[str, np.ndarray]]:
        """``call`` on ``inputs`` (every array has the same number of rows), possibly merged
        with other requests of the same ``key``; returns this request's rows of the outputs.
        ``timeout``: seconds this request may wait in the queue before DeadlineExceeded (the
        call itself should get the rest of the same budget)."""
        rows = len(next(iter(inputs.values())))
        deadline = None if timeout is None else time.monotonic() + timeout
        job: _Job[Meta] = _Job(key, inputs, rows, call, deadline)
        with self._lock:
            self._queue.append(job)
            lead = self._in_flight < self.max_in_flight
            if lead:
                self._in_flight += 1
        if lead:
            self._lead(job)
        while not job.finished:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            woken = job.done.wait(remaining)
            with self._lock:
                if job.promoted:  # the previous leader handed us the queue (and its slot)
                    job.promoted = False
                    job.done.clear()
                elif not woken and job in self._queue:
                    self._queue.remove(job)  # still queued at its deadline: give up
                    raise _expired(timeout)
                else:
                    if not woken:  # being executed: its call has a deadline of its own
                        deadline = None
                    continue
            self._lead(job)
        if job.error is not None:
            raise job.error
        return job.meta, job.outputs  # type: ignore[return-value]

    def _lead(self, own: _Job[Meta]) -> None:
        # Runs batches (oldest job first) until the caller's own job is answered, then hands
        # the queue to its oldest request, so no request waits without a leader and no leader
        # serves others for longer than the queue it found.
        while True:
            # Yield once before taking the queue: requests this worker has already read are
            # parsed up to the queue instead of missing this call. Without it a closed loop of
            # clients alternated batches of 1 and of everyone else (7 requests per call at 32
            # connections; with it 15, and +20 % requests/s; docs/performance.md).
            time.sleep(0)
            with self._lock:
                if own.finished:
                    if self._queue:
                        successor = self._queue[0]
                        successor.promoted = True
                        successor.done.set()
                    else:
                        self._in_flight -= 1
                    return
                batch = self._take()
                if not batch:  # own job gave up meanwhile (cannot happen to a leader)
                    self._in_flight -= 1
                    return
            _execute(batch)

    def _take(self) -> list[_Job[Meta]]:
        """Under the lock: the oldest job and every queued job with its key, up to max_rows.
        Jobs past their deadline are answered DeadlineExceeded instead of being sent."""
        now = time.monotonic()
        while self._queue and _past(self._queue[0], now):
            job = self._queue.popleft()
            job.error = _expired(None)
            job.finished = True
            job.done.set()
        if not self._queue:
            return []
        first = self._queue.popleft()
        batch, rows, others = [first], first.rows, deque()
        while self._queue:
            job = self._queue.popleft()
            if job.key == first.key and rows + job.rows <= self.max_rows:
                batch.append(job)
                rows += job.rows
            else:
                others.append(job)
        self._queue = others
        return batch


def _execute(batch: list[_Job[Meta]]) -> None:
    try:
        if len(batch) == 1:
            merged = batch[0].inputs
        else:
            merged = {
                name: np.concatenate([job.inputs[name] for job in batch])
                for name in batch[0].inputs
            }
        meta, outputs = batch[0].call(merged)
        if len(batch) == 1:  # nothing to split: hand the answer over as it is
            batch[0].meta, batch[0].outputs = meta, dict(outputs)
            return
        total = sum(job.rows for job in batch)
        for name, value in outputs.items():
            if np.ndim(value) == 0 or len(value) != total:
                got = list(np.shape(value))
                raise BackendError(
                    f"the model server answered {name!r} of shape {got} for a merged batch of "
                    f"{total} rows; expected one row per input row"
                )
        start = 0
        for job in batch:
            end = start + job.rows
            job.meta = meta
            job.outputs = {name: value[start:end] for name, value in outputs.items()}
            start = end
    except BaseException as exc:  # every request of the batch gets the backend's error
        for job in batch:
            job.error = exc
    finally:
        for job in batch:
            job.finished = True
            job.done.set()


def _past(job: _Job[Meta], now: float) -> bool:
    return job.deadline is not None and now >= job.deadline


def _expired(timeout: float | None) -> DeadlineExceeded:
    within = f" within {timeout:g} s" if timeout is not None else " before its deadline"
    return DeadlineExceeded(
        f"no answer from the model server{within}: the request waited behind busy calls",
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )
