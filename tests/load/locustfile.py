"""Locust users for the serving stack: three gateway HTTP users and one gRPC user.

    make loadtest TARGET=gateway|grpc|all      # headless, with a report (tests/load/run.py)
    make loadtest-ui                          # locust's web UI on http://localhost:8089

Classes (``python -m tests.load.run`` picks them by TARGET; in the UI use --class-picker):
- ``GatewayJsonUser``: POST /predict with JSON pixels               (TARGET gateway, all)
- ``GatewayUploadUser``: POST /predict with a PNG upload (multipart) (TARGET gateway, all)
- ``GatewayHousingUser``: POST /predict/housing with JSON features   (TARGET gateway, all)
- ``GrpcPredictUser``: PredictionService/Predict on the model server (TARGET grpc, all)

Settings (environment, read once here): ``GATEWAY_URL`` (default http://localhost:8000; locust's
--host overrides it for the HTTP users), ``MODEL_SERVER_GRPC`` (localhost:8500),
``LOAD_BATCH`` (instances per request, default 1), ``LOAD_TIMEOUT`` (seconds, default 10),
``LOAD_WAIT`` (think time in seconds between a user's requests, default 0: closed loop),
``GATEWAY_API_KEY`` (sent as a bearer token when the gateway requires API keys).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

# Importing locust monkey-patches the standard library for gevent; grpc must then be told to
# cooperate with gevent, before any channel exists, or each call would block the whole process.
import gevent
from locust import FastHttpUser, User, constant, events, tag, task

import grpc.experimental.gevent as grpc_gevent  # isort: skip

grpc_gevent.init_gevent()

import orjson  # noqa: E402

# `locust -f tests/load/locustfile.py` puts only tests/load on sys.path; the repo root is needed
# for `tests.load.*` (serving and training are installed packages).
REPO_ROOT = str(Path(__file__).resolve().parents[2])
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from serving.tfs_client import BackendError, TFServingClient  # noqa: E402
from tests.load.names import NAME_GRPC, NAME_HOUSING, NAME_JSON, NAME_UPLOAD  # noqa: E402
from tests.load.payloads import Payloads, build_payloads  # noqa: E402

GATEWAY_URL = os.environ.get("GATEWAY_URL", "http://localhost:8000")
MODEL_SERVER_GRPC = os.environ.get("MODEL_SERVER_GRPC", "localhost:8500")
BATCH = int(os.environ.get("LOAD_BATCH", "1"))
TIMEOUT = float(os.environ.get("LOAD_TIMEOUT", "10"))
WAIT = float(os.environ.get("LOAD_WAIT", "0"))

PREDICT_PATH = "/predict"
HOUSING_PATH = "/predict/housing"
UPLOAD_FIELD = "image"
API_KEY = os.environ.get("GATEWAY_API_KEY")  # for a gateway started with GATEWAY_API_KEYS
AUTH_HEADERS = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json", **AUTH_HEADERS}

# Built at import: with --processes locust imports this file once and then forks, so the
# workers inherit the bodies instead of each building them while the master waits for their
# heartbeats (building takes seconds on a busy machine and would get them declared missing).
PAYLOADS: Payloads = build_payloads(BATCH, upload_field=UPLOAD_FIELD)
print(
    f"payloads: {PAYLOADS.image_source}; {PAYLOADS.housing_source}; "
    f"{BATCH} instance(s) per request",
    flush=True,
)


@events.init.add_listener
def _fresh_clock(environment, **_kwargs) -> None:
    # gevent's loop caches "now" and has not run since locust was imported (seconds ago), so
    # --run-time, scheduled next from that stale clock, would end the run early by that much.
    gevent.get_hub().loop.update_now()


@events.quit.add_listener
def _final_csv(**_kwargs) -> None:
    # Locust's CSV writer ticks once a second and the files are closed right after this event,
    # so the last second (and the stop timeout) would be missing from locust_stats.csv: let it
    # tick once more, now that the final numbers are in.
    gevent.sleep(1.2)


def _check_predictions(response, expected: int) -> None:
    """Mark the request failed unless it is a 200 with ``expected`` predictions."""
    if response.status_code != 200:
        text = (response.text or "")[:200] if response.content else str(response.error)
        response.failure(f"HTTP {response.status_code}: {text}")
        return
    try:
        body = orjson.loads(response.content)
        count = len(body["predictions"])
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        response.failure(f"unexpected answer ({type(exc).__name__}): {response.text[:200]}")
        return
    if count != expected:
        response.failure(f"{count} predictions for {expected} instances")


class _GatewayUser(FastHttpUser):
    abstract = True
    host = GATEWAY_URL
    wait_time = constant(WAIT)
    network_timeout = TIMEOUT
    connection_timeout = TIMEOUT


class GatewayJsonUser(_GatewayUser):
    @tag("gateway", "json")
    @task
    def predict_json(self) -> None:
        body = PAYLOADS.next_json()
        with self.client.post(
            PREDICT_PATH, data=body, headers=JSON_HEADERS, name=NAME_JSON, catch_response=True
        ) as response:
            _check_predictions(response, BATCH)


class GatewayUploadUser(_GatewayUser):
    @tag("gateway", "upload")
    @task
    def predict_upload(self) -> None:
        body, content_type = PAYLOADS.next_multipart()
        with self.client.post(
            PREDICT_PATH,
            data=body,
            headers={"Content-Type": content_type, "Accept": "application/json", **AUTH_HEADERS},
            name=NAME_UPLOAD,
            catch_response=True,
        ) as response:
            _check_predictions(response, 1)


class GatewayHousingUser(_GatewayUser):
    @tag("gateway", "housing")
    @task
    def predict_housing(self) -> None:
        body = PAYLOADS.next_housing()
        with self.client.post(
            HOUSING_PATH, data=body, headers=JSON_HEADERS, name=NAME_HOUSING, catch_response=True
        ) as response:
            _check_predictions(response, BATCH)


class GrpcPredictUser(User):
    """Calls the model server's Predict directly through the project's gRPC client."""

    wait_time = constant(WAIT)

    def on_start(self) -> None:
        # No retries: a load test must count an UNAVAILABLE answer, not hide it.
        self.grpc = TFServingClient(MODEL_SERVER_GRPC, timeout=TIMEOUT, retries=0)

    def on_stop(self) -> None:
        self.grpc.close()

    @tag("grpc")
    @task
    def predict(self) -> None:
        images = PAYLOADS.next_array()
        exception: Exception | None = None
        length = 0
        start = time.perf_counter()
        try:
            result = self.grpc.predict("fashion_mnist", {"images": images})
            length = sum(array.nbytes for array in result.outputs.values())
            got = result.outputs["probabilities"].shape
            if got != (len(images), 10):
                exception = AssertionError(f"probabilities of shape {got} for {len(images)} images")
        except (BackendError, KeyError) as exc:
            exception = exc
        self.environment.events.request.fire(
            request_type="grpc",
            name=NAME_GRPC,
            response_time=(time.perf_counter() - start) * 1000,
            response_length=length,
            exception=exception,
            context={},
        )
