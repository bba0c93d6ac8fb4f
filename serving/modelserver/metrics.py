"""Prometheus metrics of the model server, under TF Serving's metric names.

TF Serving exports its TensorFlow monitoring metrics with ``/`` turned into ``:``
(``tensorflow_serving/util/prometheus_exporter.cc``), so dashboards written for it query e.g.
``:tensorflow:serving:request_count``. We keep those names, label names, units (microseconds)
and bucket layouts, and add a ``version`` label (plus ``API``/``entrypoint`` on the request
counter) so a canary can be told from the stable version:

* ``:tensorflow:serving:request_count{model_name,version,API,entrypoint,status}`` counter
  (TF Serving: ``model_name``, ``status``; status is the gRPC code name, e.g. ``OK``);
* ``:tensorflow:serving:request_latency{model_name,version,API,entrypoint}`` histogram, µs,
  successful requests only (as TF Serving), buckets 10·1.8^i, i < 33;
* ``:tensorflow:serving:runtime_latency{model_name,version,API,runtime}`` histogram, µs, the
  graph call alone;
* ``:tensorflow:serving:batching:batch_size{model_name,version,op_name}`` histogram
  (buckets 1.5^i, i < 20) and ``:tensorflow:serving:batching:processed_batch_size_v2
  {model_name,op_name,batch_size}`` counter;
* ``:tensorflow:serving:batching_session:queuing_latency{thread_pool_name}`` histogram, µs;
* ``:tensorflow:cc:saved_model:load_attempt_count{model_path,status}`` counter and
  ``:tensorflow:cc:saved_model:load_latency{model_path}`` counter (µs, successful loads);
* the process collector of prometheus_client (CPU, memory, file descriptors).

Everything lives in a private ``CollectorRegistry``; recording is a dict update under one lock.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
RUNTIME_LATENCY = ":tensorflow:serving:runtime_latency"
BATCH_SIZE = ":tensorflow:serving:batching:batch_size"
PROCESSED_BATCH_SIZE = ":tensorflow:serving:batching:processed_batch_size_v2"
QUEUING_LATENCY = ":tensorflow:serving:batching_session:queuing_latency"
LOAD_ATTEMPT_COUNT = ":tensorflow:cc:saved_model:load_attempt_count"
LOAD_LATENCY = ":tensorflow:cc:saved_model:load_latency"

#: Label sets kept per metric; later ones are summed into a series whose labels all read
#: OVERFLOW_LABEL (a few models x versions x APIs x codes stay far below this).
MAX_SERIES_PER_METRIC = 1000
OVERFLOW_LABEL = "__overflow__"
#: The text format generate_latest writes (what TF Serving serves, and every Prometheus reads).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The op name TF Serving's batching metrics carry; our batcher is not a graph op.
BATCHING_OP_NAME = "batching_session"
RUNTIME = "TF2"


def exponential_buckets(scale: float, growth: float, count: int) -> tuple[float, ...]:
    """TF's ``monitoring::Buckets::Exponential``: scale·growth^i for i < count (then +Inf),
    rounded to the 6 significant digits TF Serving prints, so the printed limit is the limit."""
    return tuple(float(f"{scale * growth**i:.6g}") for i in range(count))


LATENCY_BUCKETS_US = exponential_buckets(10, 1.8, 33)  # 10 µs .. ~20 minutes
QUEUING_BUCKETS_US = exponential_buckets(100, 1.2, 52)  # 100 µs .. ~1 s
BATCH_SIZE_BUCKETS = exponential_buckets(1, 1.5, 20)

# gRPC method names as TF Serving labels them; adapters may pass any case ("predict").
_API_NAMES = {
    name.lower(): name
    for name in (
        "Predict",
        "Classify",
        "Regress",
        "MultiInference",
        "GetModelMetadata",
        "GetModelStatus",
        "HandleReloadConfigRequest",
    )
}


def api_name(api: str) -> str:
    """Canonical API label: ``predict`` -> ``Predict``; unknown names pass through."""
    return _API_NAMES.get(api.lower(), api)


def _version_label(version: int | None) -> str:
    return "" if version is None else str(version)


@dataclass
class _Histogram:
    limits: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.limits) + 1)  # the last one is +Inf

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a limit belongs to that bucket (Prometheus "le").
        self.counts[bisect.bisect_left(self.limits, value)] += 1
        self.total += value


@dataclass
class _Family:
    name: str
    documentation: str
    kind: str  # "counter" | "histogram"
    label_names: tuple[str, ...]
    limits: tuple[float, ...] = ()
    values: dict[tuple[str, ...], float | _Histogram] = field(default_factory=dict)

    def _key(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        # Clients choose model names in URLs; a scan of random names must not grow the
        # exposition without bound, so series beyond the cap share one overflow series.
        if labels in self.values or len(self.values) < MAX_SERIES_PER_METRIC:
            return labels
        return (OVERFLOW_LABEL,) * len(labels)

    def add(self, labels: tuple[str, ...], amount: float) -> None:
        labels = self._key(labels)
        self.values[labels] = self.values.get(labels, 0) + amount  # type: ignore[operator]

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        labels = self._key(labels)
        histogram = self.values.get(labels)
        if histogram is None:
            histogram = self.values[labels] = _Histogram(self.limits)
        histogram.observe(value)  # type: ignore[union-attr]

    def to_metric(self) -> Metric:
        metric = Metric(self.name, self.documentation, self.kind)
        for labels, value in sorted(self.values.items()):
            label_map = dict(zip(self.label_names, labels, strict=True))
            if isinstance(value, _Histogram):
                cumulative = 0
                for limit, count in zip((*value.limits, None), value.counts, strict=True):
                    cumulative += count
                    le = "+Inf" if limit is None else _format_limit(limit)
                    metric.add_sample(f"{self.name}_bucket", {**label_map, "le": le}, cumulative)
                metric.add_sample(f"{self.name}_sum", label_map, value.total)
                metric.add_sample(f"{self.name}_count", label_map, cumulative)
            else:
                metric.add_sample(self.name, label_map, value)
        return metric


def _format_limit(limit: float) -> str:
    # TF Serving prints bucket limits with absl::StrCat (%g-like, 6 significant digits).
    return f"{limit:.6g}"


class ServerMetrics:
    """All metrics of one model server process; thread-safe, cheap to record."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._lock = threading.Lock()
        self._families = {
            family.name: family
            for family in (
                _Family(
                    REQUEST_COUNT,
                    "The total number of requests.",
                    "counter",
                    ("model_name", "version", "API", "entrypoint", "status"),
                ),
                _Family(
                    REQUEST_LATENCY,
                    "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
                    "histogram",
                    ("model_name", "version", "API", "entrypoint"),
                    LATENCY_BUCKETS_US,
                ),
                _Family(
                    RUNTIME_LATENCY,
                    "Distribution of wall time (in microseconds) for Tensorflow runtime.",
                    "histogram",
                    ("model_name", "version", "API", "runtime"),
                    LATENCY_BUCKETS_US,
                ),
                _Family(
                    BATCH_SIZE,
                    "Tracks the batch size distribution on the batch result by model_name.",
                    "histogram",
                    ("model_name", "version", "op_name"),
                    BATCH_SIZE_BUCKETS,
                ),
                _Family(
                    PROCESSED_BATCH_SIZE,
                    "Tracks the batch size on processing by model_name and op name.",
                    "counter",
                    ("model_name", "op_name", "batch_size"),
                ),
                _Family(
                    QUEUING_LATENCY,
                    "Distribution of wall time spent (in microseconds) in queuing",
                    "histogram",
                    ("thread_pool_name",),
                    QUEUING_BUCKETS_US,
                ),
                _Family(
                    LOAD_ATTEMPT_COUNT,
                    "The number of times a SavedModel was successfully loaded.",
                    "counter",
                    ("model_path", "status"),
                ),
                _Family(
                    LOAD_LATENCY,
                    "Latency in microseconds for SavedModels that were successfully loaded.",
                    "counter",
                    ("model_path",),
                ),
            )
        }
        self._counter_names = [f.name for f in self._families.values() if f.kind == "counter"]
        self.registry.register(_Collector(self))
        if process_metrics:
            ProcessCollector(registry=self.registry)

    # -- recording (called by the adapters, the data plane, the batcher, the repository) --

    def record_request(
        self,
        model: str,
        version: int | None,
        api: str,
        entrypoint: str,
        status: str,
        seconds: float,
    ) -> None:
        """One finished request. ``status`` is "OK" or a gRPC code name; latency is recorded
        for successful requests only, as TF Serving does."""
        api = api_name(api)
        version_label = _version_label(version)
        with self._lock:
            self._families[REQUEST_COUNT].add((model, version_label, api, entrypoint, status), 1)
            if status == "OK":
                self._families[REQUEST_LATENCY].observe(
                    (model, version_label, api, entrypoint), seconds * 1e6
                )

    def record_runtime(self, model: str, version: int | None, api: str, seconds: float) -> None:
        """Wall time of one graph call (a whole batch when batching)."""
        with self._lock:
            self._families[RUNTIME_LATENCY].observe(
                (model, _version_label(version), api_name(api), RUNTIME), seconds * 1e6
            )

    def record_batch(self, model: str, version: int, batch_size: int) -> None:
        """One batch run by the batcher, of ``batch_size`` examples."""
        with self._lock:
            self._families[BATCH_SIZE].observe(
                (model, _version_label(version), BATCHING_OP_NAME), batch_size
            )
            self._families[PROCESSED_BATCH_SIZE].add((model, BATCHING_OP_NAME, str(batch_size)), 1)

    def record_queuing(self, model: str, seconds: float) -> None:
        """Time one request waited in the batch queue."""
        with self._lock:
            self._families[QUEUING_LATENCY].observe((model,), seconds * 1e6)

    def record_load(
        self, model: str, version: int, seconds: float, ok: bool, path: str | None = None
    ) -> None:
        """One SavedModel load attempt; ``path`` defaults to ``<model>/<version>``."""
        model_path = path if path is not None else f"{model}/{version}"
        with self._lock:
            self._families[LOAD_ATTEMPT_COUNT].add((model_path, "success" if ok else "fail"), 1)
            if ok:
                self._families[LOAD_LATENCY].add((model_path,), seconds * 1e6)

    # -- reading --

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            metrics = [family.to_metric() for family in self._families.values()]
        yield from metrics

    def value(self, name: str, labels: dict[str, str]) -> float | None:
        """Current value of a counter sample, or the count of a histogram (for tests)."""
        family = self._families[name]
        key = tuple(labels.get(label, "") for label in family.label_names)
        with self._lock:
            found = family.values.get(key)
            if isinstance(found, _Histogram):
                return float(sum(found.counts))
            return found

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        body = generate_latest(self.registry)
        # prometheus_client names counter families "<name>_total" in HELP/TYPE; TF Serving's
        # counters have no suffix, so the header must match the sample name.
        for name in self._counter_names:
            body = body.replace(f"# HELP {name}_total ".encode(), f"# HELP {name} ".encode())
            body = body.replace(f"# TYPE {name}_total ".encode(), f"# TYPE {name} ".encode())
        return body, CONTENT_TYPE


class _Collector:
    """Adapter registering ServerMetrics in a prometheus_client registry."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.collect()

    def describe(self) -> Sequence[Metric]:
        return []
