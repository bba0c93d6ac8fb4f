"""serving/gateway/workers.py MergedWrites: header block and body leave in one write, in order."""

from __future__ import annotations

import socket

from serving.gateway.workers import MergedWrites

HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"


def _pair() -> tuple[MergedWrites, socket.socket, list[bytes]]:
    server, client = socket.socketpair()
    sent: list[bytes] = []
    real_sendall = server.sendall

    class Recording:
        def sendall(self, data, *flags):
            sent.append(bytes(data))
            real_sendall(data, *flags)

        def __getattr__(self, name):
            return getattr(server, name)

    return MergedWrites(Recording()), client, sent


def _read(client: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += client.recv(size - len(data))
    return data


def test_headers_and_body_are_one_write():
    merged, client, sent = _pair()
    merged.sendall(HEAD)
    assert sent == []  # held back
    merged.sendall(b"{}")
    assert sent == [HEAD + b"{}"]
    assert _read(client, len(HEAD) + 2) == HEAD + b"{}"
    merged.sendall(b"more")  # later writes go straight through
    assert sent[-1] == b"more"


def test_a_response_without_body_leaves_before_the_next_read_or_close():
    merged, client, sent = _pair()
    merged.sendall(HEAD)
    client.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert merged.recv(1024).startswith(b"GET /")
    assert sent == [HEAD]  # flushed before reading the next request
    merged.sendall(HEAD)
    merged.close()
    assert _read(client, 2 * len(HEAD)) == HEAD + HEAD


def test_any_other_socket_operation_flushes_first():
    merged, client, sent = _pair()
    merged.sendall(HEAD)
    merged.setblocking(True)  # e.g. gunicorn's write_nonblock, or sendfile's fileno()
    assert sent == [HEAD]
    assert _read(client, len(HEAD)) == HEAD


def test_body_bytes_that_look_like_headers_are_not_held_after_the_head():
    merged, _client, sent = _pair()
    merged.sendall(HEAD)
    merged.sendall(HEAD)  # a body that happens to look like a header block
    assert sent == [HEAD + HEAD]
