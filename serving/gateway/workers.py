"""gunicorn workers whose own error answers use the gateway's JSON error shape.

gunicorn refuses some requests before the app runs: a request line longer than
``limit_request_line``, too many or too long headers (``limit_request_fields``,
``limit_request_field_size``), a malformed request line, method, version or header, conflicting
``Content-Length``/``Transfer-Encoding``, an unsupported transfer coding. Stock gunicorn answers
them with a small HTML page; these workers answer ``{"error": {"code": ..., "message": ...}}``
with gunicorn's status codes and keep its logging (a warning per refused request, a traceback for
a real 500, the access-log line). A 500 says only that the gateway logged the details.

All three also read a request body that has a Content-Length through ``LengthBody`` (a few
large socket reads instead of gunicorn's 1 KiB steps); chunked bodies keep gunicorn's reader.

``gunicorn.conf.py`` maps ``GATEWAY_WORKER_CLASS`` (``sync``, ``gthread``, ``gevent``) to
``SyncWorker``, ``ThreadWorker`` and ``GeventWorker`` here. gunicorn's master imports this module
to find the class before it forks, so the module imports neither the app (``errors.py`` brings
Flask and gRPC; it is imported when an answer is written, in a worker that has loaded the app)
nor gevent (only ``GeventWorker`` does, on first access).
"""

from __future__ import annotations

import functools
import io
import socket
import ssl
import sys
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Any

from gunicorn import util
from gunicorn.config import Config
from gunicorn.http import errors as http_errors
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers.base import Worker
from gunicorn.workers.gthread import ThreadWorker as _StockThreadWorker
from gunicorn.workers.sync import SyncWorker as _StockSyncWorker

#: Longest piece of the client's request quoted back in a message.
_QUOTE_CHARS = 64

# What serving/gateway/security.py adds to every response the app writes.
_SECURITY_HEADERS = "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n"


@dataclass(frozen=True)
class ErrorAnswer:
    status: int
    code: str
    message: str


def _quote(value: object) -> str:
    text = str(value)
    if len(text) > _QUOTE_CHARS:
        return repr(text[:_QUOTE_CHARS]) + "..."
    return repr(text)


def describe_error(exc: BaseException, cfg: Config) -> ErrorAnswer | None:
    """The answer to a request gunicorn refused with ``exc``, with the status gunicorn 23's
    ``Worker.handle_error`` gives it; None when ``exc`` is not about the request (a real 500)."""
    e = http_errors
    if isinstance(exc, e.LimitRequestLine):
        return ErrorAnswer(
            400, "request_line_too_long", f"request line is longer than {exc.max_size} bytes"
        )
    if isinstance(exc, e.LimitRequestHeaders):
        # gunicorn tells its three header limits apart only by the message text.
        if str(exc) == "limit request headers fields":
            message = f"too many header fields: more than {cfg.limit_request_fields}"
        elif str(exc) == "limit request headers fields size":
            message = f"a header field is longer than {cfg.limit_request_field_size} bytes"
        else:
            message = "the request's header section is too large"
        return ErrorAnswer(431, "headers_too_large", message)
    if isinstance(exc, e.InvalidRequestLine):
        return ErrorAnswer(400, "invalid_request_line", f"malformed request line {_quote(exc.req)}")
    if isinstance(exc, e.InvalidRequestMethod):
        return ErrorAnswer(400, "invalid_method", f"invalid HTTP method {_quote(exc.method)}")
    if isinstance(exc, e.InvalidHTTPVersion):
        version = exc.version
        if isinstance(version, tuple):
            version = "HTTP/" + ".".join(str(part) for part in version)
        return ErrorAnswer(
            400, "invalid_http_version", f"unsupported HTTP version {_quote(version)}"
        )
    if isinstance(exc, e.InvalidHeaderName):
        return ErrorAnswer(400, "invalid_header", f"invalid header name {_quote(exc.hdr)}")
    if isinstance(exc, e.InvalidHeader):
        return ErrorAnswer(
            400, "invalid_header", f"malformed, repeated or conflicting header {_quote(exc.hdr)}"
        )
    if isinstance(exc, e.ObsoleteFolding):
        return ErrorAnswer(
            400,
            "invalid_header",
            f"header {_quote(exc.hdr)} is folded over several lines (obsolete, not accepted)",
        )
    if isinstance(exc, e.InvalidSchemeHeaders):
        return ErrorAnswer(400, "invalid_header", "contradictory scheme headers")
    if isinstance(exc, e.UnsupportedTransferCoding):
        return ErrorAnswer(
            501,
            "unsupported_transfer_encoding",
            _unsupported_coding_message(_quote(exc.hdr)),
        )
    if isinstance(exc, e.InvalidProxyLine):
        return ErrorAnswer(400, "invalid_proxy_line", "malformed PROXY protocol line")
    if isinstance(exc, e.ForbiddenProxyRequest):
        return ErrorAnswer(403, "forbidden", "PROXY protocol is not accepted from this address")
    if isinstance(exc, ssl.SSLError):
        return ErrorAnswer(403, "forbidden", "TLS error")
    if isinstance(exc, e.ConfigurationProblem):
        # gunicorn's own misconfiguration, not the client's fault: logged, not told.
        return ErrorAnswer(500, "internal", _internal_message())
    return None


# errors.py is imported at call time, never at module import (see the module docstring).
def _internal_message() -> str:
    from serving.gateway.errors import INTERNAL_MESSAGE

    return INTERNAL_MESSAGE


def _unsupported_coding_message(coding: str) -> str:
    from serving.gateway.errors import unsupported_coding_message

    return unsupported_coding_message(coding)


def json_body(answer: ErrorAnswer) -> bytes:
    """``answer`` as the gateway's JSON error body."""
    from serving.gateway.errors import error_body

    return error_body(answer.code, answer.message)


def http_response(status: int, body: bytes) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response with a JSON ``body``."""
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{_SECURITY_HEADERS}\r\n"
    )
    return head.encode("latin-1") + body


class JsonErrorsMixin(Worker):
    """Replaces ``Worker.handle_error`` (gunicorn 23): same statuses and logging, JSON body."""

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        request_start = datetime.now()
        addr = addr or ("", -1)  # unix socket
        answer = describe_error(exc, self.cfg)
        if answer is not None:
            # InvalidRequestLine has a .req too, but it is the line, not a request.
            header_error = (http_errors.InvalidHeader, http_errors.InvalidHeaderName)
            if isinstance(exc, header_error) and not req and getattr(exc, "req", None):
                req = exc.req  # for the access log
            self.log.warning("Invalid request from ip=%s: %s", addr[0], exc)
        else:
            if hasattr(req, "uri"):
                self.log.exception("Error handling request %s", req.uri)
            else:
                self.log.exception("Error handling request (no URI read)")
            answer = ErrorAnswer(500, "internal", _internal_message())
        try:
            body = json_body(answer)
        except Exception:
            self.log.exception("Failed to build the error answer")
            return
        if req is not None:
            environ = default_environ(req, client, self.cfg)
            environ["REMOTE_ADDR"] = addr[0]
            environ["REMOTE_PORT"] = str(addr[1])
            resp = Response(req, client, self.cfg)
            resp.status = f"{answer.status} {HTTPStatus(answer.status).phrase}"
            resp.response_length = len(body)
            self.log.access(resp, req, environ, datetime.now() - request_start)
        try:
            util.write_nonblock(client, http_response(answer.status, body))
        except Exception:
            self.log.debug("Failed to send error message.")


#: What a body read allocates before the bytes are there; bigger reads double piece by piece, so
#: a client that declares a large body and then stalls pins little memory.
_FIRST_PIECE = 64 * 1024
#: Most a ``readline`` asks the socket for at once.
_LINE_PIECE = 8 * 1024


class LengthBody:
    """``wsgi.input`` for a body with a Content-Length, read with few large socket reads.

    gunicorn 23's ``Body`` reads such a body in ``LengthReader.read(1024)`` steps, each taking a
    whole ≤8 KiB ``recv`` from the ``SocketUnreader``, keeping 1 KiB and unreading the rest:
    ≈700 Python-level rounds of copying for a 730 kB body (docs/performance.md). This reader
    first takes what gunicorn already buffered (the ``Body``'s bytes, then the unreader's, never
    more than the body: pipelined bytes of the next request stay in the unreader), then
    ``recv_into``s the rest of the declared length into preallocated buffers (the caller's own,
    with ``readinto``), never past it.

    ``LengthReader.length`` stays what is left of the body on the connection: gunicorn drains an
    unread body before the next keep-alive request through ``req.body`` (this object), and a
    peer that closes early gives a short body and a connection gunicorn then closes, as with its
    own reader. Like ``Body``, ``read(n)`` returns ``n`` bytes unless the body ends first.
    """

    __slots__ = ("_ahead", "_reader", "_sock", "_unreader")

    def __init__(self, body: Body) -> None:
        self._reader: LengthReader = body.reader
        self._unreader: SocketUnreader = body.reader.unreader
        self._sock = self._unreader.sock
        # Bytes already counted out of the reader's length but not returned yet (readline's
        # look-ahead, or whatever gunicorn's Body had buffered).
        self._ahead = bytearray(body.buf.getvalue())

    def read(self, size: int | None = None) -> bytes:
        size = _wanted(size)
        ahead = self._ahead
        if size <= len(ahead):
            data = bytes(ahead[:size])
            del ahead[:size]
            return data
        wanted = min(size - len(ahead), self._reader.length)
        pieces: list[bytes | bytearray | memoryview] = []
        if ahead:
            pieces.append(bytes(ahead))
            ahead.clear()
        received = 0
        while received < wanted:
            piece = bytearray(min(wanted - received, max(_FIRST_PIECE, received)))
            got = self._fill(memoryview(piece), exact=True)
            received += got
            if got < len(piece):  # the peer closed early
                pieces.append(memoryview(piece)[:got])
                break
            pieces.append(piece)
        if len(pieces) == 1:
            return bytes(pieces[0])
        return b"".join(pieces)

    def readline(self, size: int | None = None) -> bytes:
        size = _wanted(size)
        ahead = self._ahead
        searched = 0
        while True:
            end = ahead.find(b"\n", searched, size)
            if end >= 0:
                end += 1
                break
            if len(ahead) >= size or not self._reader.length:
                end = size
                break
            searched = len(ahead)
            piece = bytearray(min(self._reader.length, _LINE_PIECE))
            got = self._fill(memoryview(piece), exact=False)
            ahead += memoryview(piece)[:got]
        line = bytes(ahead[:end])
        del ahead[:end]
        return line

    def readinto(self, buffer: bytearray | memoryview) -> int:
        # werkzeug's LimitedStream (how Flask reads a body) uses this when it exists: the socket
        # then fills werkzeug's own buffer.
        view = memoryview(buffer).cast("B")
        ahead = self._ahead
        filled = min(len(ahead), len(view))
        if filled:
            view[:filled] = ahead[:filled]
            del ahead[:filled]
        wanted = min(len(view) - filled, self._reader.length)
        if wanted:
            filled += self._fill(view[filled : filled + wanted], exact=True)
        return filled

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return list(self)

    def __iter__(self) -> LengthBody:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def _fill(self, view: memoryview, *, exact: bool) -> int:
        """Fills ``view`` (at most what is left of the body) from the unreader's bytes, then the
        socket: all of it when ``exact``, else what one read gives. Returns the count."""
        wanted = len(view)
        filled = 0
        buffered = self._unreader.buf.getvalue()
        if buffered:
            filled = min(len(buffered), wanted)
            view[:filled] = buffered[:filled]
            # Unreader.read and .unread seek to the end themselves.
            self._unreader.buf = io.BytesIO(buffered[filled:])
        closed = False
        while filled < wanted and (exact or not filled):
            got = self._sock.recv_into(view[filled:])
            if not got:
                closed = True
                break
            filled += got
        # Nothing more will come: 0 left, as gunicorn's drain and next request then see EOF.
        self._reader.length = 0 if closed else self._reader.length - filled
        return filled


def _wanted(size: int | None) -> int:
    # gunicorn's Body.getsize: None or negative means everything.
    if size is None:
        return sys.maxsize
    if not isinstance(size, int):
        raise TypeError("size must be an integral type")
    return sys.maxsize if size < 0 else size


def use_length_body(req: Any) -> None:
    """Gives ``req`` a ``LengthBody`` when gunicorn would read its body through a
    ``LengthReader`` on a socket; chunked bodies and anything else keep gunicorn's reader."""
    body = getattr(req, "body", None)
    if (
        type(body) is Body
        and type(body.reader) is LengthReader
        and body.reader.length > 0
        and isinstance(body.reader.unreader, SocketUnreader)
        and type(body.reader.unreader.buf) is io.BytesIO
    ):
        req.body = LengthBody(body)


class SyncWorker(JsonErrorsMixin, _StockSyncWorker):
    """gunicorn's sync worker, answering its own request errors in JSON, reading bodies of known
    length with ``LengthBody``."""

    def handle_request(self, listener: Any, req: Any, client: Any, addr: Any) -> Any:
        use_length_body(req)
        return super().handle_request(listener, req, client, addr)


class ThreadWorker(JsonErrorsMixin, _StockThreadWorker):
    """gunicorn's gthread worker, answering its own request errors in JSON, reading bodies of
    known length with ``LengthBody``."""

    def handle_request(self, req: Any, conn: Any) -> Any:
        use_length_body(req)
        return super().handle_request(req, conn)


class MergedWrites:
    """A client socket that sends a response's header block together with its first body write.

    gunicorn writes the status line and headers with one ``sendall`` and the body with another;
    under gevent each costs a syscall plus a trip through the hub, and the header write was
    ≈12 % of a busy worker's samples (docs/performance.md). The header block is held back and
    prefixed to the next ``sendall``; every other operation on the socket (``recv``, ``close``,
    ``sendfile``, options, ...) first writes whatever is held back, so bytes never reorder and
    a response without a body still goes out before the connection reads or closes.
    """

    __slots__ = ("_held", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._held = b""

    def sendall(self, data: bytes, *flags: int) -> None:
        if self._held:
            data, self._held = self._held + data, b""
        elif data[:5] == b"HTTP/" and data[-4:] == b"\r\n\r\n":
            self._held = bytes(data)
            return
        self._sock.sendall(data, *flags)

    def flush(self) -> None:
        if self._held:
            data, self._held = self._held, b""
            self._sock.sendall(data)

    def recv(self, *args: Any) -> bytes:
        self.flush()
        return self._sock.recv(*args)

    def recv_into(self, *args: Any) -> int:
        self.flush()
        return self._sock.recv_into(*args)

    def close(self) -> None:
        try:
            self.flush()
        except OSError:
            pass  # the peer is gone; closing is all that is left to do
        finally:
            self._sock.close()

    def __getattr__(self, name: str) -> Any:
        self.flush()
        return getattr(self._sock, name)


@functools.cache
def _gevent_worker() -> type[Worker]:
    import gevent
    from gunicorn.workers import ggevent

    from serving.gateway.balance import balanced_server_class

    class GeventWorker(JsonErrorsMixin, ggevent.GeventWorker):
        """gunicorn's gevent worker, answering its own request errors in JSON, with the header
        block and body of a response sent in one write (``MergedWrites``), bodies of known
        length read with ``LengthBody``, and connections balanced across workers when the
        master gave it a slot on its ``ConnectionBoard`` (``balance.py``)."""

        connection_board: Any = None  # set by gunicorn.conf.py's pre_fork, in the master
        board_slot: int | None = None

        def run(self) -> None:
            if self.connection_board is not None and self.board_slot is not None:
                # gunicorn builds its StreamServer inside run() from this module's name for
                # the class, with no setting to pass another; this process is the only user.
                ggevent.StreamServer = balanced_server_class(
                    ggevent.StreamServer, self.connection_board, self.board_slot
                )
                self.connection_board.join(self.board_slot)  # the app is loaded: accepting now
            super().run()

        def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
            board, slot = self.connection_board, self.board_slot
            balanced = board is not None and slot is not None
            if balanced:
                board.opened(slot)
            try:
                super().handle(listener, MergedWrites(client), addr)
            finally:
                if balanced:
                    board.closed(slot)

        def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
            use_length_body(req)
            answer = super().handle_request(listener_name, req, sock, addr)
            # A keep-alive connection whose next request is already buffered would be served
            # again without yielding, starving every other connection of this worker (measured:
            # p99 of 1.6-5 s with p50 of 1 ms for requests that never wait on the model server).
            gevent.sleep(0)
            return answer

    GeventWorker.__qualname__ = "GeventWorker"
    return GeventWorker


def __getattr__(name: str) -> type[Worker]:
    # GeventWorker is built on first access: gunicorn's gevent worker imports gevent, which the
    # master and sync/gthread workers have no use for.
    if name == "GeventWorker":
        return _gevent_worker()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
