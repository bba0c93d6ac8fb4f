"""Gateway configuration: read once from environment variables, with documented defaults.

Every variable is listed in docs/gateway.md. gunicorn's own settings (bind, workers, ...) are read
by gunicorn.conf.py, not here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

#: serving.codecs.images.MAX_IMAGE_PIXELS (a test checks they agree): not imported, so that
#: gunicorn's master can check this configuration without importing numpy and Pillow.
MAX_IMAGE_PIXELS = 40_000_000
#: Longest backend deadline accepted: gRPC turns a deadline of ~1e10 s or more into one already
#: passed, which would fail every request.
MAX_TIMEOUT_SECONDS = 86_400.0
#: gRPC URI schemes passed on unchanged; anything else must be HOST:PORT.
_GRPC_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")

#: Shortest API key accepted: shorter keys are guessable (e.g. `openssl rand -hex 32` gives 64).
MIN_API_KEY_LENGTH = 16
_KEY_CHARS = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # printable ASCII, no space, no comma


class ConfigError(ValueError):
    """An environment variable has a value the gateway cannot use."""


@dataclass(frozen=True)
class GatewayConfig:
    #: ``host:port`` of the TF Serving-compatible gRPC API.
    model_server_grpc: str = "localhost:8500"
    #: Where the exported models (and their model cards) are: ``<dir>/<model>/<version>/``.
    model_cards_dir: Path = Path("models")
    #: Deadline of one backend call, retries included (seconds).
    timeout_seconds: float = 2.0
    #: Extra attempts on UNAVAILABLE, with exponential backoff from ``retry_backoff_seconds``.
    retries: int = 2
    retry_backoff_seconds: float = 0.05
    #: Most instances (images / houses) in one request.
    max_instances: int = 256
    #: Largest request body accepted (bytes); larger ones get 413.
    max_body_bytes: int = 8 * 1024 * 1024
    #: Largest image accepted, in declared pixels (decompression-bomb guard).
    max_image_pixels: int = MAX_IMAGE_PIXELS
    #: How long /readyz reuses its last answer (seconds).
    ready_cache_seconds: float = 1.0
    #: Models that must have an AVAILABLE version for /readyz to say ready.
    required_models: tuple[str, ...] = ("fashion_mnist", "housing")
    #: Model names on the model server.
    fashion_model: str = "fashion_mnist"
    housing_model: str = "housing"
    #: Seconds a client is told to wait (Retry-After) when the model server is unavailable.
    retry_after_seconds: int = 1
    #: Predictions one worker serves at once; more get 503 ``overloaded`` (0: no cap). With gevent
    #: workers every open connection can be in the app, so the cap is what bounds the queue.
    max_inflight: int = 128
    #: API keys (GATEWAY_API_KEYS, comma-separated); empty: authentication off. Never printed.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    #: Whether GET /metrics also needs a key (when keys are on).
    metrics_require_key: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewayConfig:
        """Build the configuration from ``environ`` (default ``os.environ``); raises ConfigError."""
        env = os.environ if environ is None else environ
        reader = EnvReader(env)
        config = cls(
            model_server_grpc=reader.grpc_target("MODEL_SERVER_GRPC", cls.model_server_grpc),
            model_cards_dir=Path(reader.text("MODEL_CARDS_DIR", str(cls.model_cards_dir))),
            timeout_seconds=reader.number(
                "GATEWAY_TIMEOUT_SECONDS", cls.timeout_seconds, maximum=MAX_TIMEOUT_SECONDS
            ),
            retries=reader.integer("GATEWAY_RETRIES", cls.retries, minimum=0),
            retry_backoff_seconds=reader.number(
                "GATEWAY_RETRY_BACKOFF_SECONDS", cls.retry_backoff_seconds, minimum=0.0
            ),
            max_instances=reader.integer("GATEWAY_MAX_INSTANCES", cls.max_instances),
            max_body_bytes=reader.integer("GATEWAY_MAX_BODY_BYTES", cls.max_body_bytes),
            max_image_pixels=reader.integer("GATEWAY_MAX_IMAGE_PIXELS", cls.max_image_pixels),
            ready_cache_seconds=reader.number(
                "GATEWAY_READY_CACHE_SECONDS", cls.ready_cache_seconds, minimum=0.0
            ),
            required_models=reader.names("GATEWAY_REQUIRED_MODELS", cls.required_models),
            fashion_model=reader.text("GATEWAY_FASHION_MODEL", cls.fashion_model),
            housing_model=reader.text("GATEWAY_HOUSING_MODEL", cls.housing_model),
            retry_after_seconds=reader.integer(
                "GATEWAY_RETRY_AFTER_SECONDS", cls.retry_after_seconds, minimum=0
            ),
            max_inflight=reader.integer("GATEWAY_MAX_INFLIGHT", cls.max_inflight, minimum=0),
            api_keys=reader.api_keys("GATEWAY_API_KEYS"),
            metrics_require_key=reader.flag("GATEWAY_METRICS_REQUIRE_KEY", cls.metrics_require_key),
        )
        return config

    def as_dict(self) -> dict[str, object]:
        """The settings as JSON-friendly values (for start-up logs)."""
        out: dict[str, object] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "api_keys":  # secrets: only how many
                value = f"<{len(value)} keys>" if value else "<off>"
            out[item.name] = str(value) if isinstance(value, Path) else value
        return out


class EnvReader:
    """Settings from environment variables: blank means unset; a bad value is a ConfigError
    naming the variable (one line). Shared by the app's config and ``gunicorn.conf.py``."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def text(self, name: str, default: str) -> str:
        return self._raw(name) or default

    def integer(
        self, name: str, default: int, *, minimum: int = 1, maximum: int | None = None
    ) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f">= {minimum}" if maximum is None else f"{minimum}..{maximum}"
            raise ConfigError(f"{name} must be {bounds}, got {value}")
        return value

    def number(
        self, name: str, default: float, *, minimum: float = 1e-3, maximum: float | None = None
    ) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if not value >= minimum or value == float("inf"):
            raise ConfigError(f"{name} must be a finite number >= {minimum}, got {raw!r}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be at most {maximum:g}, got {raw!r}")
        return value

    def grpc_target(self, name: str, default: str) -> str:
        """HOST:PORT with a port 1..65535 (gRPC would wrap 70000 to another port and use 443
        when the port is missing), or a target with a gRPC URI scheme, used as written."""
        target = self.text(name, default)
        if target.lower().startswith(_GRPC_SCHEMES):
            return target
        host, sep, port = target.rpartition(":")
        if not (sep and host and port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigError(f"{name} must be HOST:PORT with a port 1..65535, got {target!r}")
        return target

    def flag(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {raw!r}")

    def api_keys(self, name: str) -> tuple[str, ...]:
        keys = self.names(name, ())
        for index, key in enumerate(keys):
            # The value itself is never echoed: only its position and what is wrong.
            if len(key) < MIN_API_KEY_LENGTH:
                raise ConfigError(
                    f"{name}: key {index + 1} is shorter than {MIN_API_KEY_LENGTH} characters"
                )
            if not _KEY_CHARS.fullmatch(key):
                raise ConfigError(
                    f"{name}: key {index + 1} must be printable ASCII without spaces or commas"
                )
        return keys

    def names(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = self._raw(name)
        if raw is None:
            return default
        names = tuple(part.strip() for part in raw.split(",") if part.strip())
        if not names:  # e.g. "," would silently mean none (no required models, no API keys)
            raise ConfigError(f"{name} names nothing: got {raw!r} (unset it for the default)")
        return names
