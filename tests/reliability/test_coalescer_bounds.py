"""The gateway's request coalescer keeps latency bounded (found by the slow_backend and
backend_down scenarios): a leader returns once its own request is answered, and a request gives
up at its deadline while queued behind a slow call instead of waiting for it."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
import pytest

from serving.gateway.coalesce import Coalescer
from serving.tfs_client import DeadlineExceeded


class Gates:
    """A backend whose n-th call blocks until ``release(n)``; records the rows of each call."""

    def __init__(self, calls: int) -> None:
        self.entered = [threading.Event() for _ in range(calls)]
        self.gates = [threading.Event() for _ in range(calls)]
        self.rows: list[list[int]] = []
        self.lock = threading.Lock()

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> tuple[str, dict[str, np.ndarray]]:
        with self.lock:
            index = len(self.rows)
            self.rows.append(inputs["x"][:, 0].tolist())
        self.entered[index].set()
        assert self.gates[index].wait(10), "test backend was never released"
        return "meta", {"y": inputs["x"] * 2}


def _start(
    results: dict,
    name: str,
    coalescer: Coalescer,
    backend: Gates,
    value: int,
    timeout: float | None = None,
) -> threading.Thread:
    def run() -> None:
        try:
            results[name] = coalescer.run(
                "k", {"x": np.array([[value]])}, backend, timeout=timeout
            )[1]["y"].tolist()
        except DeadlineExceeded as exc:
            results[name] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_leader_returns_once_its_own_request_is_answered() -> None:
    coalescer: Coalescer = Coalescer(max_rows=8)
    backend = Gates(3)
    results: dict = {}
    leader = _start(results, "leader", coalescer, backend, 1)
    assert backend.entered[0].wait(5)
    followers = [_start(results, f"f{i}", coalescer, backend, 10 + i) for i in range(3)]
    while len(coalescer._queue) < 3:  # all three queued behind the leader's call
        threading.Event().wait(0.005)
    backend.gates[0].set()
    assert backend.entered[1].wait(5)  # a follower now leads the second call, still blocked
    leader.join(5)
    assert not leader.is_alive(), "the leader kept serving the queue after its own answer"
    assert results["leader"] == [[2]]
    backend.gates[1].set()
    backend.gates[2].set()
    for thread in followers:
        thread.join(5)
    assert {results[f"f{i}"][0][0] for i in range(3)} == {20, 22, 24}
    assert backend.rows == [[1], [10, 11, 12]]


def test_a_queued_request_gives_up_at_its_deadline_without_being_sent() -> None:
    coalescer: Coalescer = Coalescer(max_rows=8)
    backend = Gates(2)
    results: dict = {}
    leader = _start(results, "leader", coalescer, backend, 1)
    assert backend.entered[0].wait(5)
    waiting = _start(results, "waiting", coalescer, backend, 7, timeout=0.2)
    waiting.join(5)  # the backend is still blocked: only the deadline can end this wait
    assert isinstance(results.get("waiting"), DeadlineExceeded)
    assert "waited behind busy calls" in str(results["waiting"])
    backend.gates[0].set()
    leader.join(5)
    assert results["leader"] == [[2]]
    assert backend.rows == [[1]], "the expired request must not be sent"
    assert not coalescer._queue and coalescer._in_flight == 0


@pytest.mark.parametrize("count", [1, 16])
def test_every_request_still_gets_its_answer_with_deadlines(count: int) -> None:
    coalescer: Coalescer = Coalescer(max_rows=4)
    backend = Gates(count * 2)
    for gate in backend.gates:
        gate.set()
    results: dict = {}
    threads = [_start(results, str(i), coalescer, backend, i, timeout=10) for i in range(count)]
    for thread in threads:
        thread.join(10)
    assert {k: v[0][0] for k, v in results.items()} == {str(i): 2 * i for i in range(count)}
    assert coalescer._in_flight == 0
