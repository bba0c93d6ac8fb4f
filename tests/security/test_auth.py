"""Optional API-key authentication of the gateway (serving/gateway/security.py).

In-process apps against the fake model server for the rules; one gunicorn gateway for what only
a real server shows (the logs, a refused 100 MB upload that is never read).
"""

from __future__ import annotations

import socket
import time

import numpy as np
import orjson
import pytest

from serving.gateway import GatewayConfig, create_app
from serving.gateway.config import ConfigError
from serving.gateway.security import ApiKeyCheck, presented_keys
from tests.helpers.gateway_process import running_gateway

KEY = "test-key-0123456789abcdef"
OTHER_KEY = "second-key-ZYXWVUTSRQ-98765"
WRONG = "test-key-0123456789abcdeX"  # one character off
PIXELS = np.zeros((28, 28), dtype=np.int64).tolist()

# (method, path, body) of every endpoint that needs a key when keys are on.
PROTECTED = [
    ("POST", "/predict", {"instances": [PIXELS]}),
    ("POST", "/predict/housing", {"instances": [{"wide": [1.0] * 5, "deep": [1.0] * 6}]}),
    ("GET", "/models", None),
]
OPEN = ["/healthz", "/readyz", "/openapi.json", "/", "/demo/static/demo/demo.css"]


def _app(fake_backend, **overrides):
    config = GatewayConfig(model_server_grpc=fake_backend.target, **overrides)
    return create_app(config)


def _call(client, method, path, body=None, headers=None):
    if body is None:
        return client.open(path, method=method, headers=headers or {})
    return client.open(
        path,
        method=method,
        data=orjson.dumps(body),
        content_type="application/json",
        headers=headers or {},
    )


def _error_code(reply) -> str:
    body = orjson.loads(reply.data)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return body["error"]["code"]


@pytest.fixture(scope="module")
def client(fake_backend):
    return _app(fake_backend, api_keys=(KEY, OTHER_KEY)).test_client()


# -- configuration ---------------------------------------------------------------------------


def test_off_when_unset_and_parsed_from_env():
    assert GatewayConfig.from_env({}).api_keys == ()
    config = GatewayConfig.from_env(
        {"GATEWAY_API_KEYS": f" {KEY} ,{OTHER_KEY},", "GATEWAY_METRICS_REQUIRE_KEY": "true"}
    )
    assert config.api_keys == (KEY, OTHER_KEY)
    assert config.metrics_require_key is True
    assert GatewayConfig.from_env({"GATEWAY_METRICS_REQUIRE_KEY": "0"}).metrics_require_key is False


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"GATEWAY_API_KEYS": "short-secret"}, "key 1 is shorter than 16"),
        ({"GATEWAY_API_KEYS": f"{KEY},has space in it 0123"}, "key 2 must be printable ASCII"),
        ({"GATEWAY_API_KEYS": f"{KEY},ключ-ключ-ключ-ключ"}, "key 2 must be printable ASCII"),
        ({"GATEWAY_METRICS_REQUIRE_KEY": "maybe"}, "true or false"),
    ],
)
def test_bad_key_settings_stop_start_up_without_echoing_the_key(env, fragment):
    with pytest.raises(ConfigError, match=fragment) as raised:
        GatewayConfig.from_env(env)
    for value in env["GATEWAY_API_KEYS" if "GATEWAY_API_KEYS" in env else next(iter(env))].split(
        ","
    ):
        if len(value) > 8:
            assert value not in str(raised.value)


def test_keys_are_never_in_the_config_repr_or_start_up_dict():
    config = GatewayConfig(api_keys=(KEY, OTHER_KEY))
    assert KEY not in repr(config) and OTHER_KEY not in repr(config)
    assert KEY not in str(config.as_dict()) and config.as_dict()["api_keys"] == "<2 keys>"


def test_key_check_matches_exactly_one_of_the_keys():
    check = ApiKeyCheck((KEY, OTHER_KEY))
    assert check.matches(KEY) and check.matches(OTHER_KEY)
    for candidate in (WRONG, KEY[:-1], KEY + "x", "", "ключ", "\udcff", KEY.upper()):
        assert not check.matches(candidate)
    assert presented_keys({"Authorization": f"bEaReR  {KEY} "}) == [KEY]
    assert presented_keys({"Authorization": f"Basic {KEY}"}) == []
    assert presented_keys({"Authorization": "Bearer", "X-API-Key": KEY}) == [KEY]


# -- enforcement -------------------------------------------------------------------------------


def test_without_keys_configured_nothing_asks_for_one(fake_backend):
    client = _app(fake_backend).test_client()
    for method, path, body in PROTECTED:
        assert _call(client, method, path, body).status_code == 200, path
    assert _call(client, "GET", "/metrics").status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
def test_protected_endpoints(client, method, path, body):
    reply = _call(client, method, path, body)
    assert reply.status_code == 401
    assert _error_code(reply) == "unauthorized"
    assert reply.headers["WWW-Authenticate"].startswith("Bearer realm=")
    assert "X-API-Key" in orjson.loads(reply.data)["error"]["message"]

    for headers in (
        {"Authorization": f"Bearer {WRONG}"},
        {"X-API-Key": WRONG},
        {"X-API-Key": KEY[:8]},
    ):
        reply = _call(client, method, path, body, headers)
        assert reply.status_code == 403, headers
        assert _error_code(reply) == "forbidden"
        assert KEY not in reply.data.decode() and WRONG not in reply.data.decode()

    # Basic auth or an empty Bearer is "no key": 401, not 403.
    assert _call(client, method, path, body, {"Authorization": f"Basic {KEY}"}).status_code == 401
    for headers in (
        {"Authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer {OTHER_KEY}"},
        {"X-API-Key": KEY},
        {"X-Api-Key": OTHER_KEY},
    ):
        assert _call(client, method, path, body, headers).status_code == 200, headers


def test_open_endpoints_need_no_key(client):
    for path in OPEN:
        reply = client.get(path, headers={"Accept": "text/html"})
        assert reply.status_code not in (401, 403), path
    assert client.get("/").status_code == 200  # JSON index for API clients too
    assert client.get("/metrics").status_code == 200  # open unless asked otherwise


def test_metrics_can_require_a_key(fake_backend):
    client = _app(fake_backend, api_keys=(KEY,), metrics_require_key=True).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": WRONG}).status_code == 403
    reply = client.get("/metrics", headers={"X-API-Key": KEY})
    assert reply.status_code == 200 and b"gateway_requests_total" in reply.data
    assert client.get("/healthz").status_code == 200


def test_unknown_paths_and_methods_are_closed_without_a_key(client):
    assert client.get("/nowhere").status_code == 401
    assert client.get("/predict").status_code == 401  # no method probing either
    assert client.get("/nowhere", headers={"X-API-Key": KEY}).status_code == 404
    assert client.get("/predict", headers={"X-API-Key": KEY}).status_code == 405


def test_refused_requests_never_reach_the_model_server(fake_backend, client):
    before = fake_backend.behaviour.calls
    for method, path, body in PROTECTED:
        _call(client, method, path, body)
        _call(client, method, path, body, {"X-API-Key": WRONG})
    assert fake_backend.behaviour.calls == before


def test_openapi_security_matches_enforcement(client, fake_backend):
    document = orjson.loads(client.get("/openapi.json").data)
    assert set(document["components"]["securitySchemes"]) == {"bearerAuth", "apiKeyHeader"}
    bodies = {(m, p): b for m, p, b in PROTECTED}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            reply = _call(client, method.upper(), path, bodies.get((method.upper(), path)))
            if operation["security"]:
                assert reply.status_code == 401, path
                assert {"401", "403"} <= set(operation["responses"]), path
            else:
                assert reply.status_code != 401, path
    # Keys off: the document asks for nothing.
    plain = orjson.loads(_app(fake_backend).test_client().get("/openapi.json").data)
    assert "securitySchemes" not in plain["components"]
    assert all("security" not in op for item in plain["paths"].values() for op in item.values())


# -- a real gunicorn gateway -------------------------------------------------------------------


def _raw_request(port: int, head: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_gunicorn_gateway_never_logs_keys_and_refuses_before_reading(fake_backend, tmp_path):
    env = {
        "GATEWAY_API_KEYS": f"{KEY},{OTHER_KEY}",
        "GATEWAY_ACCESS_LOG": "-",
        "GATEWAY_LOG_LEVEL": "debug",
    }
    with running_gateway(fake_backend.target, tmp_path, env=env, workers=1) as gateway:
        import urllib3

        http = urllib3.PoolManager(retries=False, timeout=10.0)
        body = orjson.dumps({"instances": [PIXELS]})
        json_type = {"Content-Type": "application/json"}
        for headers, status in (
            ({"Authorization": f"Bearer {KEY}"}, 200),
            ({"X-API-Key": OTHER_KEY}, 200),
            ({"X-API-Key": WRONG}, 403),
            ({}, 401),
        ):
            reply = http.request(
                "POST", gateway.url + "/predict", body=body, headers={**json_type, **headers}
            )
            assert reply.status == status, reply.data
        # A 100 MB upload without a key is answered from the headers alone (the body is never
        # sent; a server waiting for it would let the socket time out with no answer).
        head = (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 100000000\r\nConnection: close\r\n\r\n"
        )
        answer = _raw_request(gateway.port, head)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        deadline = time.monotonic() + 10  # the access log is written after the answer
        while '" 401 ' not in (log := gateway.log_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert '"POST /predict HTTP/1.1" 200' in log  # the access log was on and captured
    for secret in (KEY, OTHER_KEY, WRONG, KEY[:12]):
        assert secret not in log
