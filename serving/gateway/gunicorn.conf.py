# ruff: noqa: N999 - gunicorn looks for a file with this name
"""gunicorn settings of the gateway, from environment variables (defaults in docs/gateway.md).

    gunicorn -c serving/gateway/gunicorn.conf.py 'serving.gateway:create_app()'

The app is not preloaded: each worker imports it after the fork, so gRPC channels (created lazily
on the first request) never cross a fork.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile

# ctypes only: safe for the master, which must not import the app.
from serving.gateway.malloc import MAX_KEEP_BYTES, keep_freed_memory


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _text(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


bind = _text("GATEWAY_BIND", "0.0.0.0:8000").split(",")  # several: comma-separated
workers = _int("GATEWAY_WORKERS", os.cpu_count() or 2)
# gevent: measured best on an idle 2-core box (docs/performance.md): one event loop per worker
# parses requests while earlier ones wait on the model server, and every waiting request can join
# the worker's next coalesced backend call. gthread pays a thread hand-off per request.
worker_class = _text("GATEWAY_WORKER_CLASS", "gevent")
threads = _int("GATEWAY_THREADS", 16)  # gthread only
# The names map to gunicorn's workers subclassed in serving/gateway/workers.py, which answer the
# requests gunicorn refuses before the app (over-long request line, too many headers, ...) with
# the JSON error shape instead of an HTML page. Any other value (a dotted class path) is kept.
# With threads > 1 gunicorn runs "sync" (or any class named *SyncWorker) as its own gthread
# worker; "sync" maps the same way here, so that swap never drops the JSON answers.
_WORKERS = "serving.gateway.workers."
worker_class = {
    "sync": _WORKERS + ("ThreadWorker" if threads > 1 else "SyncWorker"),
    "gthread": _WORKERS + "ThreadWorker",
    "gevent": _WORKERS + "GeventWorker",
}.get(worker_class, worker_class)
worker_connections = _int("GATEWAY_WORKER_CONNECTIONS", 1000)  # gevent: concurrent connections
timeout = _int("GATEWAY_WORKER_TIMEOUT", 30)  # a silent worker is killed after this long
graceful_timeout = _int("GATEWAY_GRACEFUL_TIMEOUT", 20)  # in-flight requests get this on TERM
keepalive = _int("GATEWAY_KEEPALIVE", 5)  # seconds an idle keep-alive connection stays open
backlog = _int("GATEWAY_BACKLOG", 2048)
max_requests = _int("GATEWAY_MAX_REQUESTS", 0)  # 0: workers are not recycled
max_requests_jitter = _int("GATEWAY_MAX_REQUESTS_JITTER", 0)
limit_request_line = _int("GATEWAY_LIMIT_REQUEST_LINE", 4094)
limit_request_fields = _int("GATEWAY_LIMIT_REQUEST_FIELDS", 100)
limit_request_field_size = _int("GATEWAY_LIMIT_REQUEST_FIELD_SIZE", 8190)
accesslog = os.environ.get("GATEWAY_ACCESS_LOG") or None  # e.g. "-" for stdout; off by default
errorlog = _text("GATEWAY_ERROR_LOG", "-")
loglevel = _text("GATEWAY_LOG_LEVEL", "info")
# Freed memory a worker keeps mapped for its next request instead of returning it to the
# kernel (glibc only; 0 leaves malloc as it is): big requests stop page-faulting their buffers
# in again (serving/gateway/malloc.py, docs/performance.md item 14).
malloc_keep_bytes = _int("GATEWAY_MALLOC_KEEP_BYTES", 64 * 1024 * 1024)
if not 0 <= malloc_keep_bytes <= MAX_KEEP_BYTES:
    raise SystemExit(
        f"GATEWAY_MALLOC_KEEP_BYTES must be 0..{MAX_KEEP_BYTES} (bytes), got {malloc_keep_bytes}"
    )
proc_name = "fashion-gateway"
preload_app = False

# Prometheus multiprocess mode: a fresh directory, set before any worker imports prometheus_client
# (this file is read by the master before it forks). An inherited directory is emptied instead.
_created_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _created_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]

# Imported here, once the directory is set, not in child_exit: gunicorn runs child_exit from its
# SIGCHLD handler, and a second worker exiting while the first call is still importing
# prometheus_client re-entered that import ("partially initialized module", master exit 1 on a
# graceful shutdown; tests/reliability/shutdown.py caught it).
from prometheus_client import multiprocess as _prometheus_multiprocess  # noqa: E402


def on_starting(server) -> None:
    os.makedirs(_metrics_dir, exist_ok=True)
    for path in glob.glob(os.path.join(_metrics_dir, "*.db")):
        os.remove(path)  # samples of a previous run would be summed into ours


def post_worker_init(worker) -> None:
    if malloc_keep_bytes and not keep_freed_memory(malloc_keep_bytes):
        worker.log.warning("GATEWAY_MALLOC_KEEP_BYTES ignored: no glibc mallopt here")
    # gevent workers monkey-patch the stdlib in init_process(); gRPC must be told to cooperate
    # after that and before any channel exists (ours are created on the first request).
    if "gevent" in worker_class.lower():  # also serving.gateway.workers.GeventWorker
        import grpc.experimental.gevent

        grpc.experimental.gevent.init_gevent()


def child_exit(server, worker) -> None:
    _prometheus_multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    if _created_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
