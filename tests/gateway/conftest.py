"""One real stack for the gateway tests: local model server + gunicorn gateway, session-scoped.

The models dir holds fashion_mnist versions 1 and 2 (labels stable -> 1, canary -> 2 in
serving/models.config) and housing version 1, exported from the session's trained models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import urllib3

from tests.helpers.gateway_process import GatewayProcess, running_gateway
from tests.helpers.modelserver_process import ModelServerProcess, running_modelserver

#: Limits of the session gateway, small so the limit tests stay cheap.
MAX_INSTANCES = 64
MAX_BODY_BYTES = 2_000_000


@pytest.fixture(scope="session")
def gateway_models(
    tmp_path_factory: pytest.TempPathFactory, export_version: Callable[[Path, str, int], Path]
) -> Path:
    root = tmp_path_factory.mktemp("gateway-models")
    export_version(root, "fashion_mnist", 1)
    export_version(root, "fashion_mnist", 2)
    export_version(root, "housing", 1)
    return root


@pytest.fixture(scope="session")
def gateway_modelserver(gateway_models: Path) -> Iterator[ModelServerProcess]:
    with running_modelserver(gateway_models) as server:
        yield server


@pytest.fixture(scope="session")
def gateway(
    gateway_modelserver: ModelServerProcess, gateway_models: Path
) -> Iterator[GatewayProcess]:
    env = {
        "GATEWAY_MAX_INSTANCES": str(MAX_INSTANCES),
        "GATEWAY_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    }
    with running_gateway(gateway_modelserver.grpc_target, gateway_models, env=env) as process:
        yield process


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


class Http:
    """A tiny keep-alive HTTP client bound to the gateway's URL."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.pool = urllib3.PoolManager(maxsize=4, retries=False, timeout=30.0)

    def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        response = self.pool.request(method, self.base_url + path, **kwargs)
        return Reply(response.status, response.headers, response.data)

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post_json(self, path: str, payload: Any) -> Reply:
        return self.request(
            "POST",
            path,
            body=orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
            headers={"Content-Type": "application/json"},
        )

    def post(self, path: str, body: bytes, content_type: str) -> Reply:
        return self.request("POST", path, body=body, headers={"Content-Type": content_type})


@pytest.fixture(scope="session")
def http(gateway: GatewayProcess) -> Http:
    return Http(gateway.url)


@pytest.fixture(scope="session")
def reference(gateway_models: Path) -> Callable[..., dict[str, np.ndarray]]:
    """``reference(model, version, **inputs)``: the SavedModel's own outputs, computed in-process
    with tf.saved_model.load on the same exported version the server serves."""
    import tensorflow as tf

    loaded: dict[tuple[str, int], Any] = {}

    def run(model: str, version: int, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        key = (model, version)
        if key not in loaded:
            loaded[key] = tf.saved_model.load(str(gateway_models / model / str(version)))
        signature = loaded[key].signatures["serving_default"]
        outputs = signature(**{name: tf.constant(value) for name, value in inputs.items()})
        return {name: value.numpy() for name, value in outputs.items()}

    return run
