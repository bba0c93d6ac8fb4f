"""A bounded HTTP load loop: N client threads, each with one keep-alive connection, at a fixed
total rate (or closed loop), recording every request's start, end, status and answering version.

Threads, not locust: the scenarios need per-request timestamps to compare with the moment a fault
was injected, and a few dozen requests per second is well within one Python process.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import orjson

#: Client-side socket timeout: far above every gateway deadline, so a hang shows up as a failure
#: with this latency instead of blocking the scenario forever.
CLIENT_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class Sample:
    """One request as the client saw it; ``status`` 0 means no HTTP answer (``error`` says why)."""

    start: float  # time.monotonic()
    end: float
    status: int
    version: int | None = None
    retry_after: str | None = None
    error: str | None = None
    closed: bool = False  # the server closed the connection after answering

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def ok(self) -> bool:
        return self.status == 200


def fashion_body(count: int = 1, seed: int = 0) -> bytes:
    """A ``/predict`` JSON body of ``count`` 28x28 pixel images (a bright block on dark noise)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, (count, 28, 28)).astype(np.uint8)
    images[:, 6:22, 8:20] += 150
    return orjson.dumps({"instances": images.tolist()})


class LoadLoop:
    """``threads`` clients POSTing ``body`` to ``url + path``; ``rate`` requests/s in total
    (None: each thread sends its next request as soon as the previous one answered).
    ``honor_retry_after``: after a 503 with Retry-After, that thread waits as told (a well-behaved
    client); otherwise it carries on at once."""

    def __init__(
        self,
        url: str,
        *,
        path: str = "/predict",
        body: bytes | None = None,
        threads: int = 4,
        rate: float | None = 40.0,
        timeout: float = CLIENT_TIMEOUT_SECONDS,
        honor_retry_after: bool = False,
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = path
        self.body = body if body is not None else fashion_body()
        self.threads = threads
        self.interval = threads / rate if rate else 0.0  # per thread
        self.timeout = timeout
        self.honor_retry_after = honor_retry_after
        self.samples: list[Sample] = []  # list.append is atomic under the GIL
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    # -- control -------------------------------------------------------------------------------

    def start(self) -> LoadLoop:
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        for worker in self._workers:
            worker.join(self.timeout + 5)
        return self.samples

    def __enter__(self) -> LoadLoop:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- one client ----------------------------------------------------------------------------

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _run(self, index: int) -> None:
        connection = self._connect()
        # Spread the threads over one interval so a fixed rate is not sent in bursts.
        next_at = time.monotonic() + self.interval * index / max(self.threads, 1)
        while not self._stop.is_set():
            if self.interval:
                pause = next_at - time.monotonic()
                if pause > 0 and self._stop.wait(pause):
                    break
                # Late (the previous answer was slow): send now, don't burst to catch up.
                next_at = max(next_at + self.interval, time.monotonic())
            sample = exchange(connection, self.path, self.body)
            self.samples.append(sample)
            if sample.status == 0 or sample.closed:
                connection.close()
                connection = self._connect()
            if self.honor_retry_after and sample.status == 503 and sample.retry_after:
                try:
                    wait = float(sample.retry_after)
                except ValueError:
                    wait = 1.0
                if self._stop.wait(wait):
                    break
        connection.close()


_HEADERS = {"Content-Type": "application/json"}


def exchange(connection: http.client.HTTPConnection, path: str, body: bytes) -> Sample:
    """POST ``body`` on ``connection`` and time the answer (never raises for network errors)."""
    start = time.monotonic()
    try:
        connection.request("POST", path, body, _HEADERS)
        reply = connection.getresponse()
        data = reply.read()
    except (OSError, http.client.HTTPException) as exc:
        return Sample(start, time.monotonic(), 0, error=f"{type(exc).__name__}: {exc}")
    end = time.monotonic()
    version = None
    if reply.status == 200:
        try:
            version = int(orjson.loads(data)["version"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            version = None
    closed = reply.getheader("Connection", "").lower() == "close"
    # Unexpected answers keep their body, so a failed scenario says which error it was.
    error = None if reply.status in (200, 503, 504) else f"HTTP {reply.status}: {data[:200]!r}"
    return Sample(start, end, reply.status, version, reply.getheader("Retry-After"), error, closed)


def burst(
    url: str,
    count: int,
    *,
    path: str = "/predict",
    body: bytes | None = None,
    timeout: float = CLIENT_TIMEOUT_SECONDS,
) -> list[Sample]:
    """``count`` requests sent at the same moment, each on its own new connection."""
    parts = urlsplit(url)
    payload = body if body is not None else fashion_body()
    barrier = threading.Barrier(count)
    samples: list[Sample] = []

    def one() -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        with contextlib.suppress(OSError):  # exchange() reports it
            connection.connect()
        barrier.wait()
        samples.append(exchange(connection, path, payload))
        connection.close()

    workers = [threading.Thread(target=one) for _ in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return samples


# -- figures ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else 0.0


@dataclass(frozen=True)
class Figures:
    sent: int
    failures: int
    max_seconds: float
    p99_seconds: float


def figures(samples: Iterable[Sample], *, ok_statuses: Sequence[int] = (200,)) -> Figures:
    items = list(samples)
    latencies = [s.seconds for s in items]
    failures = sum(1 for s in items if s.status not in ok_statuses)
    return Figures(len(items), failures, max(latencies, default=0.0), percentile(latencies, 99))


def between(samples: Iterable[Sample], start: float, end: float) -> list[Sample]:
    """Requests sent in [start, end)."""
    return [s for s in samples if start <= s.start < end]


def describe_failures(samples: Iterable[Sample], limit: int = 3) -> str:
    """A short readable list of distinct failures (for scenario notes)."""
    seen: dict[str, int] = {}
    for s in samples:
        if s.ok:
            continue
        key = s.error or f"HTTP {s.status}"
        seen[key] = seen.get(key, 0) + 1
    return "; ".join(f"{count}x {key}" for key, count in list(seen.items())[:limit])
