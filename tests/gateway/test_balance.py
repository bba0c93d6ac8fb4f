"""serving.gateway.balance: keep-alive connections spread evenly over gevent workers."""

from __future__ import annotations

import os
import socket
import time

import gevent
import gevent.socket
import psutil
import pytest
from gevent.event import Event
from gevent.server import StreamServer

from serving.gateway.balance import FREE, MAX_WAIT_S, ConnectionBoard, balanced_server_class
from tests.bench.gateway import worker_pids
from tests.helpers.gateway_process import running_gateway
from tests.helpers.modelserver_process import free_port

# -- the board ----------------------------------------------------------------------------------


def test_claim_join_and_leave():
    board = ConnectionBoard(3)
    assert [board.count(slot) for slot in range(3)] == [FREE] * 3
    assert board.claim([]) == 0
    assert board.claim([0, None]) == 1
    assert board.claim([0, 1, 2]) is None  # full: that worker is not balanced
    assert board.count(0) == FREE  # claimed, booting: not in the balance yet
    board.opened(0)
    assert board.count(0) == FREE
    board.join(0)
    board.opened(0)
    board.opened(0)
    board.closed(0)
    assert board.count(0) == 1
    board.leave(0)  # shutting down: its draining connections no longer count
    board.closed(0)
    assert board.count(0) == FREE


def _live(board: ConnectionBoard, *connections: int) -> None:
    for slot, count in enumerate(connections):
        board.join(board.claim(range(slot)))
        for _ in range(count):
            board.opened(slot)


def test_a_worker_waits_only_for_a_live_worker_holding_fewer():
    board = ConnectionBoard(4)
    _live(board, 3, 1, 0)  # slot 3 never claimed
    assert [board.should_wait(slot) for slot in range(3)] == [True, True, False]
    board.opened(2)
    board.opened(2)
    assert [board.should_wait(slot) for slot in range(3)] == [True, False, True]  # 3, 1, 2
    board.leave(1)  # a free slot is no worker, not a worker with FREE (-1) connections
    assert [board.should_wait(0), board.should_wait(2)] == [True, False]  # 3, -, 2
    board.leave(2)
    assert board.should_wait(0) is False  # alone


def test_a_booting_worker_is_not_waited_for():
    board = ConnectionBoard(2)
    _live(board, 4)
    assert board.claim([0]) == 1  # forked, still loading the app
    assert board.should_wait(0) is False
    board.join(1)
    assert board.should_wait(0) is True


def test_counts_cross_fork():
    board = ConnectionBoard(2)
    slot = board.claim([])
    board.join(slot)
    pid = os.fork()
    if pid == 0:  # the child: a worker after gunicorn's fork
        board.opened(slot)
        board.opened(slot)
        os._exit(0)
    os.waitpid(pid, 0)
    assert board.count(slot) == 2


# -- the accept loop ----------------------------------------------------------------------------


def _servers(board: ConnectionBoard, slots: list[int]):
    """One balanced server per slot, all accepting on one listening socket (as gunicorn's
    workers do); returns them and, per slot, an event set when that server accepted."""
    listener = gevent.socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: dict[int, Event] = {slot: Event() for slot in slots}
    servers = []
    for slot in slots:

        def handle(client, _addr, slot=slot):
            accepted[slot].set()
            client.close()

        server = balanced_server_class(StreamServer, board, slot)(listener, handle)
        server.start()
        servers.append(server)
    return servers, accepted


def test_the_less_loaded_worker_takes_the_connection():
    board = ConnectionBoard(2)
    _live(board, 5, 0)
    a, b = 0, 1
    servers, accepted = _servers(board, [a, b])
    try:
        client = socket.create_connection(servers[0].socket.getsockname())
        assert accepted[b].wait(2.0)
        gevent.sleep(3 * MAX_WAIT_S)
        assert not accepted[a].is_set()
        client.close()
    finally:
        for server in servers:
            server.stop()


def test_a_loaded_worker_accepts_anyway_when_the_other_does_not():
    # The other slot is live but its worker never accepts (busy, or stuck): the loaded worker
    # waits MAX_WAIT_S, then takes the connection.
    board = ConnectionBoard(2)
    _live(board, 5, 0)
    a = 0
    servers, accepted = _servers(board, [a])
    try:
        client = socket.create_connection(servers[0].socket.getsockname())
        assert accepted[a].wait(2.0)
        client.close()
    finally:
        servers[0].stop()


# -- end to end ---------------------------------------------------------------------------------


def _established_by_pid(
    port: int, pids: list[int], status: str = psutil.CONN_ESTABLISHED
) -> dict[int, int]:
    """Server-side TCP connections on ``port`` held by each pid, in ``status`` (CLOSE_WAIT: the
    client closed, the worker has not yet)."""
    return {
        pid: sum(
            conn.laddr.port == port and conn.status == status
            for conn in psutil.Process(pid).net_connections(kind="tcp")
        )
        for pid in pids
    }


def _connect(port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert client.recv(4096).startswith(b"HTTP/1.1 200")
    return client


def _served_by(port: int, pids: list[int]) -> set[int]:
    """The workers that held some of 8 connections made one after another (then closed)."""
    clients = [_connect(port) for _ in range(8)]
    try:
        return {pid for pid, n in _established_by_pid(port, pids).items() if n}
    finally:
        for client in clients:
            client.close()
        # Until the workers have closed their ends, their counts still include these.
        deadline = time.monotonic() + 10
        while any(_established_by_pid(port, pids, psutil.CONN_CLOSE_WAIT).values()):
            assert time.monotonic() < deadline, "the workers kept closed connections"
            time.sleep(0.01)


def test_gunicorn_gevent_workers_hold_even_shares(tmp_path):
    with running_gateway(f"127.0.0.1:{free_port()}", tmp_path, workers=2) as gateway:
        pids = worker_pids(gateway.process.pid)
        # Both workers answer first (a booting worker is rightly not waited for).
        deadline = time.monotonic() + 60
        while len(_served_by(gateway.port, pids)) < 2:
            assert time.monotonic() < deadline, "one worker never answered"
        clients = []
        try:
            for _ in range(24):  # each connection kept open after one request
                clients.append(_connect(gateway.port))
            counts = _established_by_pid(gateway.port, pids)
            assert sum(counts.values()) == 24 and len(counts) == 2, counts
            assert max(counts.values()) - min(counts.values()) <= 1, counts
        finally:
            for client in clients:
                client.close()


@pytest.mark.parametrize("setting", ["0", "1"])
def test_the_board_is_made_only_for_balanced_gevent_workers(monkeypatch, tmp_path, setting):
    from tests.gateway.test_pre_app_errors import load_conf

    conf = load_conf(monkeypatch, tmp_path, GATEWAY_BALANCE_CONNECTIONS=setting)
    assert (conf["_board"] is not None) is (setting == "1")
    assert load_conf(monkeypatch, tmp_path, GATEWAY_WORKER_CLASS="gthread")["_board"] is None
