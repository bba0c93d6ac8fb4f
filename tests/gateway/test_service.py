"""Health, readiness (flipping with the model server), /models, metrics across workers, config,
OpenAPI agreement with real responses, and the no-TensorFlow rule."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from serving.gateway import GatewayConfig, create_app
from serving.gateway.config import ConfigError
from tests.helpers.gateway_process import running_gateway
from tests.helpers.housing import HOUSING_ROW as HOUSE
from tests.helpers.modelserver_process import (
    free_port,
    health_status,
    modelserver_command,
    stop_modelserver,
)

from .conftest import Http
from .test_errors import GOOD

# -- liveness, readiness, models -----------------------------------------------------------


def test_healthz_and_readyz(http):
    assert http.get("/healthz").json == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status == 200, ready.body
    assert ready.json == {"status": "ready", "models": {"fashion_mnist": [1, 2], "housing": [1]}}


def test_models_lists_status_signatures_and_cards(http):
    reply = http.get("/models")
    assert reply.status == 200, reply.body
    models = {m["name"]: m for m in reply.json["models"]}
    fashion = models["fashion_mnist"]
    assert [v["version"] for v in fashion["versions"]] == [1, 2]
    assert {v["state"] for v in fashion["versions"]} == {"AVAILABLE"}
    assert fashion["signature"]["inputs"] == {"images": {"dtype": "uint8", "shape": [-1, 28, 28]}}
    assert fashion["signature"]["outputs"]["probabilities"] == {
        "dtype": "float32",
        "shape": [-1, 10],
    }
    assert len(fashion["card"]["class_names"]) == 10
    housing = models["housing"]
    assert set(housing["signature"]["inputs"]) == {"wide", "deep"}
    assert set(housing["card"]["input_features"]) == {"wide", "deep"}


def _start_modelserver(models_root: Path, port: int) -> subprocess.Popen[bytes]:
    command = modelserver_command(models_root, port, free_port())
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path.cwd()
    )
    deadline = time.monotonic() + 180
    while health_status(f"127.0.0.1:{port}") != 1:  # SERVING
        assert process.poll() is None, "model server exited"
        assert time.monotonic() < deadline, "model server did not start"
        time.sleep(0.25)
    return process


def _wait_for(http: Http, path: str, status: int, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        reply = http.get(path)
        if reply.status == status or time.monotonic() > deadline:
            return reply
        time.sleep(0.2)


@pytest.mark.slow
def test_readiness_follows_the_model_server(gateway_models):
    """A separate model server on a port the gateway already targets: not there -> 503 with the
    reason; it comes up -> 200 (the channel reconnects); it stops -> 503 again."""
    port = free_port()
    process = None
    with running_gateway(f"127.0.0.1:{port}", gateway_models, workers=1) as gateway:
        http = Http(gateway.url)
        try:
            reply = http.get("/readyz")
            assert reply.status == 503
            assert reply.json["error"]["code"] == "not_ready"
            assert f"127.0.0.1:{port}" in reply.json["error"]["message"]
            assert "Retry-After" in reply.headers
            assert http.get("/healthz").status == 200  # alive even without a backend
            process = _start_modelserver(gateway_models, port)
            reply = _wait_for(http, "/readyz", 200)
            assert reply.status == 200, reply.body
            assert http.post_json("/predict", {"instances": [GOOD]}).status == 200
            stop_modelserver(process)
            reply = _wait_for(http, "/readyz", 503)
            assert reply.status == 503 and reply.json["error"]["code"] == "not_ready"
            predict = http.post_json("/predict", {"instances": [GOOD]})
            assert predict.status == 503 and "Retry-After" in predict.headers
            assert predict.json["error"]["code"] == "backend_unavailable"
        finally:
            if process is not None:
                stop_modelserver(process)


def test_readiness_names_a_model_without_versions():
    from .fake_modelserver import FakeModelServer

    fake = FakeModelServer().start()
    try:
        fake.behaviour.versions = {"fashion_mnist": [1]}  # housing unknown to this server
        app = create_app(GatewayConfig(model_server_grpc=fake.target, ready_cache_seconds=0.01))
        reply = app.test_client().get("/readyz")
        assert reply.status_code == 503
        assert "housing" in reply.get_json()["error"]["message"]
    finally:
        fake.stop()


# -- metrics ---------------------------------------------------------------------------------


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_requests_across_workers(http):
    labels = {"endpoint": "/predict", "model": "fashion_mnist", "status": "404", "version": ""}
    before = _sample(http.get("/metrics").body.decode(), "gateway_requests_total", **labels)
    for _ in range(6):  # spread over both workers by the kernel
        assert http.post_json("/predict?version=99", {"instances": [GOOD]}).status == 404
    text = http.get("/metrics").body.decode()
    assert _sample(text, "gateway_requests_total", **labels) - before == 6
    ok = {"endpoint": "/predict", "model": "fashion_mnist", "status": "200"}
    assert http.post_json("/predict", {"instances": [GOOD, GOOD, GOOD]}).status == 200
    text = http.get("/metrics").body.decode()
    assert _sample(text, "gateway_request_duration_seconds_count", **ok) >= 1
    assert _sample(text, "gateway_backend_duration_seconds_count", rpc="Predict") >= 1
    assert _sample(text, "gateway_instances_per_request_sum", model="fashion_mnist") >= 3
    assert "gateway_in_flight_requests" in text
    assert _sample(text, "gateway_requests_total", endpoint="unmatched") >= 0


# -- OpenAPI ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi(http):
    document = http.get("/openapi.json").json
    assert document["openapi"].startswith("3.1")
    return document


def _validate(document: dict, schema_ref: str, instance: object) -> None:
    schema = {"$ref": schema_ref, "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(instance)


def _response_schema(document: dict, path: str, method: str, status: int) -> dict:
    return document["paths"][path][method]["responses"][str(status)]["content"]["application/json"][
        "schema"
    ]


def test_openapi_paths_are_exactly_the_routes(openapi):
    app = create_app(GatewayConfig())
    # /demo/* serves the browser page's files (serving/gateway/demo.py), not the API.
    routes = {
        (rule.rule, method.lower())
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
        if not rule.rule.startswith("/demo/")
    }
    documented = {(path, method) for path, item in openapi["paths"].items() for method in item}
    assert routes == documented


def test_openapi_schemas_match_real_responses(http, openapi):
    image = np.zeros((28, 28), np.uint8)
    cases = [
        ("/predict", "post", http.post_json("/predict?top_k=2", {"instances": [GOOD, GOOD]})),
        ("/predict/housing", "post", http.post_json("/predict/housing", {"instances": [HOUSE]})),
        ("/healthz", "get", http.get("/healthz")),
        ("/readyz", "get", http.get("/readyz")),
        ("/models", "get", http.get("/models")),
        ("/", "get", http.get("/")),
        ("/predict", "post", http.post_json("/predict", {"instances": []})),
        ("/predict", "post", http.post_json("/predict?version=42", {"instances": [GOOD]})),
        ("/predict", "post", http.post("/predict", b"x", "text/plain")),
        ("/predict", "post", http.post("/predict", b"0" * 3_000_000, "image/png")),
    ]
    for path, method, reply in cases:
        schema = _response_schema(openapi, path, method, reply.status)
        _validate(openapi, schema["$ref"], reply.json)
    # Requests that the gateway accepts validate against the documented request schemas.
    request_schema = openapi["paths"]["/predict"]["post"]["requestBody"]["content"]
    b64 = base64.b64encode(image.tobytes()).decode()
    body = {"instances": [GOOD, np.zeros(784, int).tolist(), {"b64": b64}], "top_k": 3}
    _validate(openapi, request_schema["application/json"]["schema"]["$ref"], body)
    housing = openapi["paths"]["/predict/housing"]["post"]["requestBody"]["content"]
    body = {"instances": [HOUSE, {"wide": [1] * 5, "deep": [1] * 6}], "version_label": "stable"}
    _validate(openapi, housing["application/json"]["schema"]["$ref"], body)
    # ... and what it refuses does not.
    with pytest.raises(jsonschema.ValidationError):
        _validate(openapi, request_schema["application/json"]["schema"]["$ref"], {"x": 1})


# -- configuration and imports ---------------------------------------------------------------


def test_config_from_env_defaults_and_errors():
    assert GatewayConfig.from_env({}) == GatewayConfig()
    config = GatewayConfig.from_env(
        {"MODEL_SERVER_GRPC": "tfs:8500", "GATEWAY_TIMEOUT_SECONDS": "0.5",
         "GATEWAY_MAX_INSTANCES": "8", "GATEWAY_REQUIRED_MODELS": "fashion_mnist"}
    )  # fmt: skip
    assert config.model_server_grpc == "tfs:8500"
    assert config.timeout_seconds == 0.5 and config.max_instances == 8
    assert config.required_models == ("fashion_mnist",)
    for env in ({"GATEWAY_MAX_INSTANCES": "many"}, {"GATEWAY_TIMEOUT_SECONDS": "-1"},
                {"GATEWAY_MAX_BODY_BYTES": "0"}):  # fmt: skip
        with pytest.raises(ConfigError, match=next(iter(env))):
            GatewayConfig.from_env(env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MODEL_SERVER_GRPC": "localhost:70000"}, "port 1..65535"),  # gRPC would use 4464
        ({"MODEL_SERVER_GRPC": "localhost"}, "HOST:PORT"),  # gRPC would use 443
        ({"GATEWAY_TIMEOUT_SECONDS": "1e10"}, "at most 86400"),  # every call would time out
        ({"GATEWAY_REQUIRED_MODELS": ","}, "names nothing"),  # /readyz would require nothing
        ({"GATEWAY_API_KEYS": " , "}, "names nothing"),  # authentication silently off
    ],
)
def test_config_refuses_silently_wrong_values(env, message):
    with pytest.raises(ConfigError, match=message):
        GatewayConfig.from_env(env)


def test_config_accepts_grpc_uri_targets_and_mirrors_the_image_limit():
    from serving.codecs.images import MAX_IMAGE_PIXELS

    for target in ("dns:///modelserver:8500", "unix:/run/tfs.sock", "[::1]:8500"):
        assert GatewayConfig.from_env({"MODEL_SERVER_GRPC": target}).model_server_grpc == target
    assert GatewayConfig().max_image_pixels == MAX_IMAGE_PIXELS


def test_config_module_is_light_for_the_gunicorn_master():
    code = (
        "import sys; import serving.gateway.config; "
        "print(sorted(m for m in ('numpy', 'PIL', 'flask', 'grpc') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_gateway_never_imports_tensorflow():
    code = (
        "import sys; from serving.gateway import create_app; app = create_app(); "
        "app.test_client().get('/openapi.json'); print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_gevent_worker_class_serves_predictions(gateway_modelserver, gateway_models):
    env = {"GATEWAY_WORKER_CLASS": "gevent"}
    with running_gateway(
        gateway_modelserver.grpc_target, gateway_models, env=env, workers=1
    ) as gateway:
        http = Http(gateway.url)
        for _ in range(3):
            reply = http.post_json("/predict", {"instances": [GOOD]})
            assert reply.status == 200, reply.body
        assert http.get("/readyz").status == 200
    # Stopped (SIGTERM): the worker closed its gRPC channel while gevent still ran, so grpc's
    # __del__ did not print a "greenlet is being finalized" traceback at interpreter exit.
    assert gateway.process.returncode == 0
    assert "_ChannelCallState.__del__" not in gateway.log_text()
