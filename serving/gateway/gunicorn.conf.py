# ruff: noqa: N999 - gunicorn looks for a file with this name
"""gunicorn settings of the gateway, from environment variables (defaults in docs/gateway.md).

    gunicorn -c serving/gateway/gunicorn.conf.py 'serving.gateway:create_app()'

The app is not preloaded: each worker imports it after the fork, so gRPC channels (created lazily
on the first request) never cross a fork.
"""

from __future__ import annotations

import gc
import glob
import os
import shutil
import tempfile

# ctypes, mmap and environment parsing only (no Flask, gRPC, numpy): safe for the master, which
# must not import the app.
from serving.gateway.balance import ConnectionBoard
from serving.gateway.config import ConfigError, EnvReader, GatewayConfig
from serving.gateway.malloc import MAX_KEEP_BYTES, keep_freed_memory

_env = EnvReader(os.environ)


def _int(name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer setting; out of range stops gunicorn with one line naming the variable
    (gunicorn itself would print a multi-line error, or silently clip e.g. a request-line
    limit above 8190)."""
    try:
        return _env.integer(name, default, minimum=minimum, maximum=maximum)
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None


def _text(name: str, default: str) -> str:
    return _env.text(name, default)


def _bind_addresses(raw: str) -> list[str]:
    addresses = [part.strip() for part in raw.split(",")]
    for address in addresses:
        if address.startswith(("unix:", "fd://")):
            continue
        _host, sep, port = address.rpartition(":")
        if not address or (sep and not (port.isdigit() and int(port) <= 65535)):
            raise SystemExit(f"GATEWAY_BIND: expected HOST:PORT with a port 0..65535, got {raw!r}")
    return addresses


# The app's own variables (serving/gateway/config.py) are read by each worker after the fork;
# checking them here too makes a bad value stop gunicorn with one line, not a worker traceback
# and "Worker failed to boot".
try:
    GatewayConfig.from_env()
except ConfigError as _exc:
    raise SystemExit(str(_exc)) from None

bind = _bind_addresses(_text("GATEWAY_BIND", "0.0.0.0:8000"))  # several: comma-separated
workers = _int("GATEWAY_WORKERS", os.cpu_count() or 2, minimum=1)
# gevent: measured best on an idle 2-core box (docs/performance.md): one event loop per worker
# parses requests while earlier ones wait on the model server, and every waiting request can join
# the worker's next coalesced backend call. gthread pays a thread hand-off per request.
worker_class = _text("GATEWAY_WORKER_CLASS", "gevent")
threads = _int("GATEWAY_THREADS", 16, minimum=1)  # gthread only
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
try:  # gunicorn would load it later with a traceback; the master imports worker classes anyway
    from gunicorn.util import load_class

    load_class(worker_class, section="gunicorn.workers")
except Exception:
    raise SystemExit(f"GATEWAY_WORKER_CLASS: cannot load worker class {worker_class!r}") from None
worker_connections = _int("GATEWAY_WORKER_CONNECTIONS", 1000, minimum=1)  # gevent: connections
timeout = _int("GATEWAY_WORKER_TIMEOUT", 30)  # a silent worker is killed after this long
graceful_timeout = _int("GATEWAY_GRACEFUL_TIMEOUT", 20)  # in-flight requests get this on TERM
keepalive = _int("GATEWAY_KEEPALIVE", 5)  # seconds an idle keep-alive connection stays open
backlog = _int("GATEWAY_BACKLOG", 2048, minimum=1)
max_requests = _int("GATEWAY_MAX_REQUESTS", 0)  # 0: workers are not recycled
max_requests_jitter = _int("GATEWAY_MAX_REQUESTS_JITTER", 0)
# gunicorn's ranges (0: its maximum); above them it clips silently.
limit_request_line = _int("GATEWAY_LIMIT_REQUEST_LINE", 4094, maximum=8190)
limit_request_fields = _int("GATEWAY_LIMIT_REQUEST_FIELDS", 100, maximum=32768)
limit_request_field_size = _int("GATEWAY_LIMIT_REQUEST_FIELD_SIZE", 8190)
accesslog = os.environ.get("GATEWAY_ACCESS_LOG") or None  # e.g. "-" for stdout; off by default
errorlog = _text("GATEWAY_ERROR_LOG", "-")
loglevel = _text("GATEWAY_LOG_LEVEL", "info")
if loglevel.lower() not in ("debug", "info", "warning", "error", "critical"):
    # gunicorn would silently log at info instead.
    raise SystemExit(
        f"GATEWAY_LOG_LEVEL must be debug, info, warning, error or critical, got {loglevel!r}"
    )
for _name, _path in (("GATEWAY_ACCESS_LOG", accesslog), ("GATEWAY_ERROR_LOG", errorlog)):
    if _path and _path != "-":
        try:
            open(_path, "a").close()  # gunicorn appends to it too
        except OSError as _exc:
            raise SystemExit(f"{_name}: cannot write {_path} ({_exc.strerror})") from None
# Freed memory a worker keeps mapped for its next request instead of returning it to the
# kernel (glibc only; 0 leaves malloc as it is): big requests stop page-faulting their buffers
# in again (serving/gateway/malloc.py, docs/performance.md item 14).
malloc_keep_bytes = _int("GATEWAY_MALLOC_KEEP_BYTES", 64 * 1024 * 1024, maximum=MAX_KEEP_BYTES)
# 1: each worker moves what it holds after loading the app (Flask, gRPC, numpy, the app) out of
# the garbage collector's reach. Without it every full collection walked all of it: 23-42 ms
# pauses, each stalling every connection of the worker (docs/performance.md, item 15).
gc_freeze = _int("GATEWAY_GC_FREEZE", 1, maximum=1)
# 1: gevent workers share out keep-alive connections evenly (a worker holding more than a
# sibling leaves it the next one, waiting at most 5 ms); 0: whoever wakes first takes it
# (serving/gateway/balance.py, docs/performance.md item 16).
balance_connections = _int("GATEWAY_BALANCE_CONNECTIONS", 1, maximum=1)
proc_name = "fashion-gateway"
preload_app = False

# Prometheus multiprocess mode: a fresh directory, set before any worker imports prometheus_client
# (this file is read by the master before it forks). An inherited directory is emptied instead.
_created_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _created_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
try:
    os.makedirs(_metrics_dir, exist_ok=True)
except OSError as _exc:
    raise SystemExit(
        f"PROMETHEUS_MULTIPROC_DIR: cannot create {_metrics_dir} ({_exc.strerror})"
    ) from None
if not os.access(_metrics_dir, os.W_OK | os.X_OK):
    raise SystemExit(f"PROMETHEUS_MULTIPROC_DIR: {_metrics_dir} is not writable")

# Imported here, once the directory is set, not in child_exit: gunicorn runs child_exit from its
# SIGCHLD handler, and a second worker exiting while the first call is still importing
# prometheus_client re-entered that import ("partially initialized module", master exit 1 on a
# graceful shutdown; tests/reliability/shutdown.py caught it).
from prometheus_client import multiprocess as _prometheus_multiprocess  # noqa: E402

# Made here, in the master, so that every forked worker shares it. Spare slots for workers
# added with TTIN; a worker without a slot is simply not balanced.
_board = (
    ConnectionBoard(max(2 * workers, 16))
    if balance_connections and worker_class == _WORKERS + "GeventWorker"
    else None
)


def pre_fork(server, worker) -> None:
    if _board is not None:
        worker.connection_board = _board
        worker.board_slot = _board.claim(
            getattr(w, "board_slot", None) for w in server.WORKERS.values()
        )


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
    if gc_freeze:  # last: the app is loaded (gunicorn calls this after load_wsgi)
        gc.collect()
        gc.freeze()


def worker_exit(server, worker) -> None:
    # Runs in the worker after its loop ends. Closing the gRPC channel here, while gevent's hub
    # still runs, spares the log a "greenlet is being finalized" traceback per worker from
    # grpc's __del__ at interpreter shutdown.
    state = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("gateway")
    if state is not None:
        state.client.close()


def child_exit(server, worker) -> None:
    _prometheus_multiprocess.mark_process_dead(worker.pid)
    if _board is not None and getattr(worker, "board_slot", None) is not None:
        _board.leave(worker.board_slot)


def on_exit(server) -> None:
    if _created_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
