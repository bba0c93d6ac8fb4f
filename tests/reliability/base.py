"""What every scenario shares: the context (models dir, model server, how to start a gateway),
the result row, and small waiting helpers."""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.gateway_process import GatewayProcess, running_gateway
from tests.reliability.load import LoadLoop, Sample
from tests.reliability.stack import (
    ModelServer,
    VersionMaker,
    model_config_text,
    prepare_models_dir,
    write_atomically,
)

#: Gateway settings of every scenario unless it overrides them (docs/gateway.md).
GATEWAY_WORKERS = 2
DEADLINE_SECONDS = 2.0  # GATEWAY_TIMEOUT_SECONDS
GATEWAY_ENV = {"GATEWAY_TIMEOUT_SECONDS": str(DEADLINE_SECONDS), "GATEWAY_GRACEFUL_TIMEOUT": "10"}


@dataclass
class Result:
    """One row of the table: what was sent, what failed, latency, the key figure, verdict."""

    name: str
    sent: int = 0
    failures: int = 0
    max_seconds: float = 0.0
    p99_seconds: float = 0.0
    key: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: For ``--dump``: every request, and the moments faults were injected (monotonic clock).
    samples: list[Sample] = field(default_factory=list, repr=False)
    events: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return not self.problems

    def check(self, condition: bool, problem: str) -> None:
        if not condition:
            self.problems.append(problem)


@dataclass
class Context:
    """The shared stack of a run. ``fast`` shortens every phase (the pytest variants);
    ``strict`` adds the latency/memory targets (``make reliability`` only: the test suite makes
    no timing assertions)."""

    workdir: Path
    models_dir: Path
    config_file: Path
    server: ModelServer
    new_version: VersionMaker
    fast: bool = False
    strict: bool = True
    soak_seconds: float = 600.0
    rate: float = 50.0

    @classmethod
    def create(
        cls, source_models: Path, workdir: Path, new_version: VersionMaker, **options: object
    ) -> Context:
        models_dir = prepare_models_dir(source_models, workdir)
        config_file = workdir / "models.config"
        write_atomically(config_file, model_config_text(stable=1, canary=2))
        server = ModelServer(models_dir, config_file)
        return cls(workdir, models_dir, config_file, server, new_version, **options)  # type: ignore[arg-type]

    def ensure_server(self) -> None:
        """(Re)start the model server if it is not running (a previous scenario stopped it)."""
        process = self.server.process
        if process is None or process.poll() is not None:
            self.server.start()

    def close(self) -> None:
        self.server.stop()

    @contextlib.contextmanager
    def gateway(
        self, env: Mapping[str, str] | None = None, *, grpc_target: str | None = None
    ) -> Iterator[GatewayProcess]:
        with running_gateway(
            grpc_target or self.server.target,
            self.models_dir,
            env={**GATEWAY_ENV, **(env or {})},
            workers=GATEWAY_WORKERS,
        ) as gateway:
            wait_status(gateway.url + "/readyz", 200, timeout=30)
            yield gateway

    def phase(self, fast: float, full: float) -> float:
        return fast if self.fast else full


def http_status(url: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def wait_status(url: str, status: int, timeout: float, interval: float = 0.1) -> float | None:
    """Poll ``url`` until it answers ``status``; the monotonic time it did, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_status(url) == status:
            return time.monotonic()
        time.sleep(interval)
    return None


def wait_for_sample(
    loop: LoadLoop, predicate: Callable[[Sample], bool], after: float, timeout: float
) -> float | None:
    """Seconds from ``after`` until a request sent after it satisfied ``predicate``, or None."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        samples = loop.samples
        for sample in samples[seen:]:
            if sample.start >= after and predicate(sample):
                return sample.end - after
        seen = len(samples)
        time.sleep(0.02)
    return None


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"
