"""Prometheus metrics of the gateway, correct across gunicorn workers.

Under gunicorn, gunicorn.conf.py points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before
any worker imports prometheus_client; each worker then writes its samples to memory-mapped files
there and ``GET /metrics`` merges all workers' files (``MultiProcessCollector``). The master's
``child_exit`` hook marks dead workers so their live gauges disappear. Without the variable (tests,
``flask run``) the metrics are this process's own.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
INSTANCE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUESTS = Counter(
    "gateway_requests_total",
    "HTTP requests answered, by endpoint, model, model version that answered and HTTP status.",
    ["endpoint", "model", "version", "status"],
)
REQUEST_SECONDS = Histogram(
    "gateway_request_duration_seconds",
    "Time from request start to response, by endpoint, model, version and HTTP status.",
    ["endpoint", "model", "version", "status"],
    buckets=LATENCY_BUCKETS,
)
BACKEND_SECONDS = Histogram(
    "gateway_backend_duration_seconds",
    "Time spent in model-server gRPC calls (retries included), by model, RPC and outcome; one "
    "observation per call (a coalesced call carrying several requests counts once).",
    ["model", "rpc", "outcome"],
    buckets=LATENCY_BUCKETS,
)
INSTANCES = Histogram(
    "gateway_instances_per_request",
    "Instances (images or houses) per prediction request.",
    ["model"],
    buckets=INSTANCE_BUCKETS,
)
IN_FLIGHT = Gauge(
    "gateway_in_flight_requests",
    "Requests being handled right now (summed over live workers).",
    multiprocess_mode="livesum",
)


_children: dict[tuple[object, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: prometheus-client validates and locks on every
    ``labels()`` call, a few per cent of a busy worker (docs/performance.md). Label values are
    bounded (routes, models, versions, status codes), and so is this cache."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def exposition() -> tuple[bytes, str]:
    """The text exposition of all workers' metrics (or this process's), and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
