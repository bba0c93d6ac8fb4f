"""The three TF Serving config files, parsed with protobuf text_format as TF Serving reads them.

``models.config`` uses ``tensorflow_serving.config.ModelServerConfig`` from
``tensorflow-serving-api``. That package does not ship ``BatchingParameters``
(session_bundle_config.proto) nor ``MonitoringConfig`` (monitoring_config.proto), so both
messages are declared here with TF Serving's field names and numbers and parsed the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

CONTAINER_MODELS_ROOT = PurePosixPath("/models")
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
_MODEL_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


class ConfigError(Exception):
    """A config file that cannot be used; the message is one readable line."""


def _declare_tfs_messages() -> tuple[type, type]:
    """BatchingParameters and MonitoringConfig, field for field as TF Serving declares them."""
    T = descriptor_pb2.FieldDescriptorProto  # noqa: N806
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="serving/modelserver/tfs_local_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )

    def add(
        message: Any, name: str, number: int, kind: int, type_name: str = "", repeated: bool = False
    ) -> None:
        proto = message.field.add(
            name=name,
            number=number,
            type=kind,
            label=T.LABEL_REPEATED if repeated else T.LABEL_OPTIONAL,
        )
        if type_name:  # an empty type_name still counts as set
            proto.type_name = type_name

    batching = file_proto.message_type.add(name="BatchingParameters")
    int64_value = ".google.protobuf.Int64Value"
    for number, name in enumerate(
        ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"),
        start=1,
    ):
        add(batching, name, number, T.TYPE_MESSAGE, int64_value)
    add(batching, "thread_pool_name", 5, T.TYPE_MESSAGE, ".google.protobuf.StringValue")
    add(batching, "allowed_batch_sizes", 6, T.TYPE_INT64, repeated=True)
    add(batching, "pad_variable_length_inputs", 7, T.TYPE_BOOL)

    prometheus = file_proto.message_type.add(name="PrometheusConfig")
    add(prometheus, "enable", 1, T.TYPE_BOOL)
    add(prometheus, "path", 2, T.TYPE_STRING)
    monitoring = file_proto.message_type.add(name="MonitoringConfig")
    add(monitoring, "prometheus_config", 1, T.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    pool.Add(file_proto)
    return (
        message_factory.GetMessageClass(
            pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
        ),
        message_factory.GetMessageClass(
            pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
        ),
    )


BatchingParametersProto, MonitoringConfigProto = _declare_tfs_messages()


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk to serve: the latest ``num_versions``, ``all``, or ``specific``."""

    kind: str  # "latest" | "all" | "specific"
    num_versions: int = 1
    versions: frozenset[int] = frozenset()

    def select(self, on_disk: list[int]) -> set[int]:
        if self.kind == "all":
            return set(on_disk)
        if self.kind == "specific":
            return {v for v in on_disk if v in self.versions}
        return set(sorted(on_disk)[-self.num_versions :])

    def describe(self) -> str:
        if self.kind == "latest":
            return f"latest {self.num_versions}"
        if self.kind == "specific":
            return f"specific {sorted(self.versions)}"
        return "all"


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: Path  # after the --models_root mapping
    policy: VersionPolicy
    labels: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 1000  # TF Serving's defaults (BatchingSession / SharedBatchScheduler)
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 1  # TF Serving defaults to the number of cores; 1 suits 2 cores
    allowed_batch_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class MonitoringConfig:
    prometheus_enabled: bool = False
    prometheus_path: str = DEFAULT_PROMETHEUS_PATH


def _read(path: Path, what: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not a UTF-8 text proto ({exc.reason})") from exc


def _parse(text: str, message: Any, path: Path) -> Any:
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return message


def map_base_path(base_path: str, models_root: Path | None) -> Path:
    """Replace a leading ``/models`` by ``models_root`` (so one config works in and out of
    containers); other paths, and every path when no root is given, are used as written."""
    path = PurePosixPath(base_path)
    if models_root is not None and path.is_relative_to(CONTAINER_MODELS_ROOT):
        return Path(models_root) / path.relative_to(CONTAINER_MODELS_ROOT)
    return Path(base_path)


def _policy(model: Any, where: str) -> VersionPolicy:
    if not model.HasField("model_version_policy"):
        return VersionPolicy("latest", 1)  # TF Serving's default
    policy = model.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy("all")
    if choice == "specific":
        versions = frozenset(int(v) for v in policy.specific.versions)
        if not versions:
            raise ConfigError(f"{where}: model_version_policy.specific lists no versions")
        return VersionPolicy("specific", versions=versions)
    num = policy.latest.num_versions if choice == "latest" else 1
    if num < 1:
        raise ConfigError(f"{where}: model_version_policy.latest.num_versions must be >= 1")
    return VersionPolicy("latest", num)


def parse_model_config(text: str, path: Path, models_root: Path | None) -> list[ModelConfig]:
    """The models of a ModelServerConfig text proto, validated."""
    message = _parse(text, model_server_config_pb2.ModelServerConfig(), path)
    return models_from_proto(message, str(path), models_root)


def models_from_proto(message: Any, source: str, models_root: Path | None) -> list[ModelConfig]:
    """Validated models of a ModelServerConfig message (from a file or a reload RPC)."""
    path = source
    if message.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{path}: expected a model_config_list (custom_model_config unsupported)")
    models: list[ModelConfig] = []
    for index, model in enumerate(message.model_config_list.config):
        where = f"{path}: config #{index + 1}"
        if not _MODEL_NAME.fullmatch(model.name):
            raise ConfigError(f"{where}: name {model.name!r} is empty or has invalid characters")
        where = f"{path}: model {model.name!r}"
        if any(m.name == model.name for m in models):
            raise ConfigError(f"{where} is configured twice")
        if not model.base_path:
            raise ConfigError(f"{where} has no base_path")
        if model.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{where}: model_platform {model.model_platform!r} unsupported")
        labels = {str(k): int(v) for k, v in model.version_labels.items()}
        for label, version in labels.items():
            if version < 1:
                raise ConfigError(f"{where}: label {label!r} points to version {version}")
        models.append(
            ModelConfig(
                name=model.name,
                base_path=map_base_path(model.base_path, models_root),
                policy=_policy(model, where),
                labels=labels,
            )
        )
    if not models:
        raise ConfigError(f"{path}: no models configured")
    return models


def load_model_config(path: Path, models_root: Path | None) -> list[ModelConfig]:
    return parse_model_config(_read(path, "model config file"), path, models_root)


def load_batching_config(path: Path | None) -> BatchingConfig:
    """BatchingParameters from ``--batching_parameters_file`` (defaults when no file)."""
    if path is None:
        return BatchingConfig()
    message = _parse(_read(path, "batching parameters file"), BatchingParametersProto(), path)
    defaults = BatchingConfig()

    def value(name: str) -> int:
        return (
            int(getattr(message, name).value) if message.HasField(name) else getattr(defaults, name)
        )

    config = BatchingConfig(
        max_batch_size=value("max_batch_size"),
        batch_timeout_micros=value("batch_timeout_micros"),
        max_enqueued_batches=value("max_enqueued_batches"),
        num_batch_threads=value("num_batch_threads"),
        allowed_batch_sizes=tuple(int(v) for v in message.allowed_batch_sizes),
    )
    for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{path}: {name} must be >= 1, got {getattr(config, name)}")
    if config.batch_timeout_micros < 0:
        raise ConfigError(f"{path}: batch_timeout_micros must be >= 0")
    sizes = config.allowed_batch_sizes
    if sizes and (list(sizes) != sorted(set(sizes)) or sizes[-1] != config.max_batch_size):
        raise ConfigError(
            f"{path}: allowed_batch_sizes must increase and end with max_batch_size "
            f"({config.max_batch_size}), got {list(sizes)}"
        )
    return config


def load_monitoring_config(path: Path | None) -> MonitoringConfig:
    """MonitoringConfig from ``--monitoring_config_file`` (Prometheus off when no file)."""
    if path is None:
        return MonitoringConfig()
    message = _parse(_read(path, "monitoring config file"), MonitoringConfigProto(), path)
    prometheus = message.prometheus_config
    metrics_path = prometheus.path or DEFAULT_PROMETHEUS_PATH
    if not metrics_path.startswith("/"):
        raise ConfigError(f"{path}: prometheus_config.path must start with '/'")
    return MonitoringConfig(prometheus_enabled=prometheus.enable, prometheus_path=metrics_path)
