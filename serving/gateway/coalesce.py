"""Request coalescing: concurrent predictions in one gateway worker share one backend call.

A Predict call costs nearly the same CPU for 1 image as for 32 (gRPC framing and the Python
handlers on both ends dominate; the graph adds ≈2 µs per image), and on a 2-core box that
per-call cost, not the HTTP layer, capped the gateway (docs/performance.md). So each worker
merges the requests that arrive while its previous backend call is in flight.

There is no fixed wait: a lone request is sent at once, and batches only grow when requests
pile up behind a busy call. Leader/follower, without an extra thread: a caller queues its
inputs; if fewer than ``max_in_flight`` calls of this worker are running, it becomes a leader,
takes the queued requests with the same key (model, version, label, output filter, input
dtypes and shapes) up to ``max_rows`` rows, makes one call and hands every request its slice of
the outputs, or the same error. Thread workers (gthread) and gevent workers (the standard
library's locks are greenlet-aware once monkey-patched) both work.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from serving.tfs_client import BackendError

Meta = TypeVar("Meta")
#: ``call(merged_inputs) -> (metadata shared by the batch, outputs with one row per input row)``
BackendCall = Callable[[Mapping[str, np.ndarray]], tuple[Meta, Mapping[str, np.ndarray]]]


@dataclass(eq=False)
class _Job(Generic[Meta]):
    key: Hashable
    inputs: Mapping[str, np.ndarray]
    rows: int
    call: BackendCall
    done: threading.Event = field(default_factory=threading.Event)
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
        self, key: Hashable, inputs: Mapping[str, np.ndarray], call: BackendCall
    ) -> tuple[Meta, dict[str, np.ndarray]]:
        """``call`` on ``inputs`` (every array has the same number of rows), possibly merged
        with other requests of the same ``key``; returns this request's rows of the outputs."""
        rows = len(next(iter(inputs.values())))
        job: _Job[Meta] = _Job(key, inputs, rows, call)
        with self._lock:
            self._queue.append(job)
            lead = self._in_flight < self.max_in_flight
            if lead:
                self._in_flight += 1
        if lead:
            self._lead()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.meta, job.outputs  # type: ignore[return-value]

    def _lead(self) -> None:
        # Runs batches until the queue is empty, so no request waits without a leader. The
        # caller's own job is in the first batch it takes (oldest first), and later batches
        # are only what arrived meanwhile.
        while True:
            with self._lock:
                batch = self._take()
                if not batch:
                    self._in_flight -= 1
                    return
            _execute(batch)

    def _take(self) -> list[_Job[Meta]]:
        """Under the lock: the oldest job and every queued job with its key, up to max_rows."""
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
            job.done.set()
