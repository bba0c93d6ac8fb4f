"""Keep-alive connections spread evenly over gevent workers.

Every gevent worker accepts on the one listening socket, and whichever wakes first takes the
connection, so a burst of clients lands unevenly (32 wrk connections: 22 / 10, 19 / 13). Each
connection then stays with its worker, and a worker with twice the connections gives its
requests twice the wait: the busier worker makes the tail (docs/performance.md, item 16). Like
Envoy's ``exact_balance`` or nginx's ``accept_mutex``, a worker that holds more connections than
the least loaded live worker lets that one take the next connection; it waits at most
``MAX_WAIT_S`` for it, then accepts anyway, so a busy or stuck sibling delays a new connection by
milliseconds, never loses it.

``ConnectionBoard`` is an array of counters in memory the master maps before it forks, so every
worker sees every other's count. The master gives each new worker a slot (``claim``, in
gunicorn's ``pre_fork``); the worker joins the balance when it starts accepting and leaves it
when it stops (the master also clears the slot when the worker exits). A worker only writes its
own slot: no locks, and a stale read only makes one accept less even.
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Iterable
from typing import Any

FREE = -1  # a slot no live worker holds
MAX_WAIT_S = 0.005  # longest a worker leaves a waiting connection to a less loaded sibling
RECHECK_S = 0.0005  # how often it looks again meanwhile


class ConnectionBoard:
    """Open connections per worker slot, shared by the master and the workers it forks."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("a board needs at least one slot")
        self.slots = slots
        self._map = mmap.mmap(-1, 8 * slots)  # MAP_SHARED | MAP_ANONYMOUS: survives fork()
        self._counts = memoryview(self._map).cast("q")
        for slot in range(slots):
            self._counts[slot] = FREE

    def claim(self, taken: Iterable[int | None]) -> int | None:
        """In the master, before a fork: the lowest slot not in ``taken`` (the live workers'),
        or None when all are taken (that worker is not balanced). The slot stays out of the
        balance until its worker ``join``s, so a booting worker is not waited for."""
        busy = set(taken)
        for slot in range(self.slots):
            if slot not in busy:
                self._counts[slot] = FREE
                return slot
        return None

    def join(self, slot: int) -> None:
        """In the worker, when it starts accepting."""
        self._counts[slot] = 0

    def leave(self, slot: int) -> None:
        """When the worker stops accepting (it, at shutdown) or has exited (the master)."""
        self._counts[slot] = FREE

    def opened(self, slot: int) -> None:
        if self._counts[slot] != FREE:
            self._counts[slot] += 1

    def closed(self, slot: int) -> None:
        if self._counts[slot] > 0:  # not after leave(): connections drained at shutdown
            self._counts[slot] -= 1

    def count(self, slot: int) -> int:
        return self._counts[slot]

    def should_wait(self, slot: int) -> bool:
        """True when another live worker holds fewer open connections than ``slot``'s."""
        mine = self._counts[slot]
        return any(
            other != slot and FREE < count < mine for other, count in enumerate(self._counts)
        )


def balanced_server_class(base: type, board: ConnectionBoard, slot: int) -> type:
    """``base`` (gevent's ``StreamServer``) that leaves a waiting connection to a less loaded
    worker, for at most ``MAX_WAIT_S``."""
    from gevent import monkey

    real_select = monkey.get_original("select", "select")  # the timer callback runs in the hub

    class BalancedStreamServer(base):  # type: ignore[misc, valid-type]
        _waiting_since: float | None = None

        def _do_read(self) -> Any:
            now = time.monotonic()
            if board.should_wait(slot) and (
                self._waiting_since is None or now - self._waiting_since < MAX_WAIT_S
            ):
                if self._waiting_since is None:
                    self._waiting_since = now
                self.stop_accepting()
                self._timer = self.loop.timer(RECHECK_S)
                self._timer.start(self._look_again)
                return None
            self._waiting_since = None
            return super()._do_read()

        def close(self) -> None:
            board.leave(slot)  # shutting down: the others must not wait for this worker
            super().close()

        def _look_again(self) -> None:
            # Nothing left in the backlog (a sibling took it): the next connection is a new
            # wait, with its own MAX_WAIT_S.
            if not real_select([self.socket], [], [], 0)[0]:
                self._waiting_since = None
            self._start_accepting_if_started()

    BalancedStreamServer.__qualname__ = "BalancedStreamServer"
    return BalancedStreamServer
