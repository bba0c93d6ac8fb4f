"""Wires the model server: config -> repository -> batcher -> data plane -> gRPC + REST.

Start-up loads (and warms up) every version the policies want before the ports open, so the
first request never races the first load. SIGTERM/SIGINT: health turns NOT_SERVING, the ports
stop accepting, in-flight requests finish (up to ``SHUTDOWN_GRACE_SECONDS``), exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Coroutine
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from serving.modelserver import config as config_mod
from serving.modelserver.batching import AsyncBatcher, Batcher
from serving.modelserver.config import ConfigError
from serving.modelserver.dataplane import DataPlane
from serving.modelserver.errors import InvalidArgument
from serving.modelserver.grpc_service import ModelServicer, PredictionServicer, add_servicers
from serving.modelserver.metrics import ServerMetrics
from serving.modelserver.repository import ModelRepository
from serving.modelserver.servable import session_config
from serving.modelserver.settings import Settings

log = logging.getLogger("serving.modelserver")

SHUTDOWN_GRACE_SECONDS = 20.0
#: TF Serving accepts messages up to INT_MAX; shape/content checks guard the memory instead.
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
]


class StartupError(Exception):
    """The server cannot start (port in use, ...); one line for stderr."""


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    logging.Formatter.converter = time.gmtime


class ModelServer:
    """One running server; ``start()`` then ``wait()`` until a signal, or ``stop()``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Read every config file first: a bad one fails before anything is loaded.
        self.models = config_mod.load_model_config(settings.model_config_file, settings.models_root)
        self.batching = (
            config_mod.load_batching_config(settings.batching_parameters_file)
            if settings.enable_batching
            else None
        )
        if settings.batching_parameters_file and not settings.enable_batching:
            log.warning("--batching_parameters_file is ignored without --enable_batching")
        self.monitoring = config_mod.load_monitoring_config(settings.monitoring_config_file)
        self.metrics = ServerMetrics()
        self.health = health.aio.HealthServicer()
        self.repository = ModelRepository(
            self.models,
            poll_seconds=settings.file_system_poll_wait_seconds,
            warmup=settings.enable_model_warmup,
            metrics=self.metrics,
            on_change=self._update_health,
            session_config=session_config(
                settings.intra_op_parallelism, settings.inter_op_parallelism
            ),
        )
        self.batcher: Batcher | None = None
        self.async_batcher: AsyncBatcher | None = None
        self.dataplane: DataPlane | None = None
        self.grpc_server: grpc.aio.Server | None = None
        # gRPC runs on its own asyncio loop thread; graph calls go to this pool.
        self.loop = asyncio.new_event_loop()
        self.executor = futures.ThreadPoolExecutor(
            max_workers=settings.grpc_max_threads, thread_name_prefix="graph"
        )
        self.rest_server: Any = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._config_text = ""

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        log.info(
            "models: %s",
            ", ".join(f"{m.name} <- {m.base_path} ({m.policy.describe()})" for m in self.models),
        )
        self.repository.poll_once()
        if not s.allow_version_labels_for_unavailable_models:
            problems = self.repository.label_problems()
            if problems:
                raise ConfigError(
                    f"{problems[0]}; start with --allow_version_labels_for_unavailable_models "
                    f"or point the label at a loaded version"
                )
        if self.batching is not None:
            self.batcher = Batcher(self.batching, self.metrics)
            self.async_batcher = AsyncBatcher(self.batching, self.executor, self.metrics)
            log.info("batching on: %s", self.batching)
        self.dataplane = DataPlane(
            self.repository,
            self.batcher,
            self.metrics,
            async_batcher=self.async_batcher,
            executor=self.executor,
        )
        self._spawn(self.loop.run_forever, "grpc-loop")
        self._start_grpc()
        if s.rest_api_port:
            self._start_rest()
        self._update_health()
        self.repository.start()
        if s.model_config_file_poll_wait_seconds > 0:
            self._config_text = s.model_config_file.read_text()
            self._spawn(self._poll_config, "config-poll")

    def _on_loop(self, coro: Coroutine[Any, Any, Any], timeout: float | None = 60) -> Any:
        """Run a coroutine on the gRPC loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _start_grpc(self) -> None:
        s = self.settings
        assert self.dataplane is not None
        address = f"{s.host}:{s.port}"

        async def build() -> grpc.aio.Server:
            server = grpc.aio.server(options=GRPC_OPTIONS)
            add_servicers(
                server,
                PredictionServicer(self.dataplane, self.metrics),
                ModelServicer(self.dataplane, self.metrics, self.reload_config),
            )
            health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
            await self._apply_health()  # the servicer starts out SERVING: correct it first
            try:
                bound = server.add_insecure_port(address)
            except RuntimeError as exc:
                raise StartupError(f"cannot bind gRPC port {address}: {exc}") from exc
            if not bound:
                raise StartupError(f"cannot bind gRPC port {address} (in use?)")
            await server.start()
            return server

        self.grpc_server = self._on_loop(build())
        log.info("gRPC server listening on %s", address)

    def _start_rest(self) -> None:
        from serving.modelserver.rest import make_rest_server

        s = self.settings
        path = self.monitoring.prometheus_path if self.monitoring.prometheus_enabled else None
        try:
            self.rest_server = make_rest_server(
                self.dataplane, self.metrics, s.host, s.rest_api_port, path
            )
        except OSError as exc:
            raise StartupError(
                f"cannot bind REST port {s.host}:{s.rest_api_port}: {exc.strerror or exc}"
            ) from exc
        self._spawn(self.rest_server.serve_forever, "rest")
        log.info(
            "REST server listening on %s:%d%s",
            s.host,
            s.rest_api_port,
            f" (Prometheus metrics on {path})" if path else "",
        )

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: Any) -> None:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def wait(self) -> None:
        while not self._stop.wait(3600):
            pass

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, then stop the workers."""
        self._stop.set()
        loop_running = self.loop.is_running()
        if loop_running:
            self._on_loop(self.health.enter_graceful_shutdown())
        if self.rest_server is not None:
            self.rest_server.shutdown()  # stop accepting REST while gRPC drains
        if self.grpc_server is not None and loop_running:
            # Refuses new RPCs at once; waits for running ones up to the grace period.
            self._on_loop(self.grpc_server.stop(SHUTDOWN_GRACE_SECONDS), timeout=None)
        if self.dataplane is not None and not self.dataplane.wait_idle(SHUTDOWN_GRACE_SECONDS):
            log.warning("requests still running after %.0f s; exiting", SHUTDOWN_GRACE_SECONDS)
        if self.batcher is not None:
            self.batcher.stop()
        if self.async_batcher is not None:
            self.async_batcher.stop()
        if loop_running:
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.repository.stop()
        log.info("model server stopped")

    # ---- health and config reload -------------------------------------------------------
    def _update_health(self) -> None:
        """Overall health "" is SERVING when every model has a version; one entry per model."""
        if not self.loop.is_running() or self._stop.is_set():
            return
        self._on_loop(self._apply_health())

    async def _apply_health(self) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        states = {"": serving if self.repository.ready() else not_serving}
        for name in self.repository.model_names():
            try:
                has_version = bool(self.repository.snapshot(name).servables)
            except Exception:
                has_version = False
            states[name] = serving if has_version else not_serving

        for service, status in states.items():
            await self.health.set(service, status)

    def reload_config(self, message: Any) -> None:
        """HandleReloadConfigRequest: adopt a ModelServerConfig message."""
        try:
            models = config_mod.models_from_proto(
                message, "ReloadConfigRequest", self.settings.models_root
            )
        except ConfigError as exc:
            raise InvalidArgument(str(exc)) from exc
        log.info("reloading model config (%d models)", len(models))
        self.repository.apply_config(models)
        self._update_health()

    def _poll_config(self) -> None:
        path: Path = self.settings.model_config_file
        while not self._stop.wait(self.settings.model_config_file_poll_wait_seconds):
            try:
                text = path.read_text()
                if text == self._config_text:
                    continue
                models = config_mod.parse_model_config(text, path, self.settings.models_root)
            except (OSError, ConfigError) as exc:
                log.error("keeping the current model config: %s", exc)
                continue
            self._config_text = text
            log.info("model config file changed: reloading")
            self.repository.apply_config(models)
            self._update_health()
