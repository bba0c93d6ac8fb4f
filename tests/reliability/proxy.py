"""A gRPC proxy on loopback that forwards every unary call to the model server after an
adjustable delay: the "slow model server" fault, without fault-injection code in production.

Messages are forwarded as raw bytes (no deserialization), so it works for every TF Serving
method and the health service alike. Streaming methods are not proxied (the gateway uses none).
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from typing import Any

import grpc

from tests.helpers.modelserver_process import free_port


class DelayProxy:
    """``DelayProxy(upstream).start()`` listens on ``.target``; change ``.delay`` any time."""

    def __init__(self, upstream: str, *, delay: float = 0.0, max_workers: int = 64) -> None:
        self.upstream = upstream
        self.delay = delay
        self.port = free_port()
        self._channel = grpc.insecure_channel(upstream)
        self._calls: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._max_workers = max_workers
        self._server: grpc.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> DelayProxy:
        """Listen (again) on the same port."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._max_workers))
        server.add_generic_rpc_handlers((_Forwarder(self),))
        if not server.add_insecure_port(self.target):
            raise RuntimeError(f"proxy cannot bind {self.target}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Close the port at once, like a crashed server (connections are reset)."""
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None

    def close(self) -> None:
        self.stop()
        self._channel.close()

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(self, method: str) -> Any:
        with self._lock:
            if method not in self._calls:
                self._calls[method] = self._channel.unary_unary(method)  # bytes in, bytes out
            return self._calls[method]


class _Forwarder(grpc.GenericRpcHandler):
    def __init__(self, proxy: DelayProxy) -> None:
        self.proxy = proxy

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        upstream = self.proxy.call(method)

        def forward(request: bytes, context: grpc.ServicerContext) -> bytes:
            delay = self.proxy.delay
            if delay > 0:
                remaining = context.time_remaining()
                # Sleep no longer than the caller waits: it has given up by then anyway.
                time.sleep(delay if remaining is None else max(0.0, min(delay, remaining)))
                if not context.is_active():
                    return b""
            try:
                return upstream(request, timeout=context.time_remaining())
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details() or "")
                raise  # abort raises; this keeps type checkers quiet

        return grpc.unary_unary_rpc_method_handler(forward)
