"""The gateway's admission cap (serving/gateway/admission.py, GATEWAY_MAX_INFLIGHT) in-process:
past the cap a prediction gets 503 ``overloaded`` + Retry-After at once, probes still pass, and
a slot is given back when a request ends (also when it fails)."""

from __future__ import annotations

import threading

import orjson
import pytest

from serving.gateway import create_app
from serving.gateway.config import ConfigError, GatewayConfig
from tests.helpers.modelserver_process import free_port

IMAGE = [[0] * 28 for _ in range(28)]


def _app(max_inflight: int):
    # No model server at this address: predictions that get past the cap fail fast with 503
    # backend_unavailable, which tells them apart from the cap's 503 overloaded.
    config = GatewayConfig(
        model_server_grpc=f"127.0.0.1:{free_port()}",
        max_inflight=max_inflight,
        timeout_seconds=0.5,
        retries=0,
        retry_after_seconds=3,
    )
    return create_app(config)


def _post(client):
    reply = client.post("/predict", json={"instances": [IMAGE]})
    return reply.status_code, reply.headers, orjson.loads(reply.data)["error"]


def test_over_the_cap_is_503_overloaded_and_probes_still_answer(monkeypatch) -> None:
    app = _app(max_inflight=1)
    state = app.extensions["gateway"]
    entered, release = threading.Event(), threading.Event()
    original = state.predict

    def held(*args, **kwargs):
        entered.set()
        assert release.wait(10)
        return original(*args, **kwargs)

    monkeypatch.setattr(state, "predict", held)
    first = threading.Thread(target=lambda: _post(app.test_client()), daemon=True)
    first.start()
    assert entered.wait(10)
    try:
        client = app.test_client()
        status, headers, error = _post(client)
        assert (status, error["code"]) == (503, "overloaded")
        assert headers["Retry-After"] == "3"
        assert "limit of 1" in error["message"]
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 200
    finally:
        release.set()
        first.join(10)
    # The held request ended (with a backend error): its slot is free again.
    monkeypatch.setattr(state, "predict", original)
    status, _headers, error = _post(app.test_client())
    assert (status, error["code"]) == (503, "backend_unavailable")


def test_cap_off_by_default_and_refuses_negative() -> None:
    assert GatewayConfig.from_env({}).max_inflight == 128
    assert GatewayConfig.from_env({"GATEWAY_MAX_INFLIGHT": "8"}).max_inflight == 8
    with pytest.raises(ConfigError, match="GATEWAY_MAX_INFLIGHT"):
        GatewayConfig.from_env({"GATEWAY_MAX_INFLIGHT": "-1"})
    status, _headers, error = _post(_app(max_inflight=0).test_client())
    assert (status, error["code"]) == (503, "backend_unavailable")
