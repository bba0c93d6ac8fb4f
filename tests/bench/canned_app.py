"""The gateway with a canned backend: the ceiling of the HTTP layer for the benchmark.

It is the real gateway app (``serving.gateway.create_app()``) under the same gunicorn config:
the request goes through the same routing, JSON parsing, validation, metrics hooks and response
encoding. Only the model-server call is replaced: ``GatewayState.predict`` returns a canned
``Prediction`` of the right shape (float32 probabilities [N, 10], so the response has the same
size as the real one), and ``/readyz`` answers ready without asking a model server.

    MODEL_CARDS_DIR=models gunicorn -c serving/gateway/gunicorn.conf.py \
        'tests.bench.canned_app:create_app()'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flask import Flask

from serving.gateway import create_app as create_gateway
from serving.gateway.state import Readiness
from serving.tfs_client import Prediction

# A softmax row with float32 values of typical length (what orjson prints).
CANNED_PROBABILITIES = (
    np.random.default_rng(0).dirichlet(np.ones(10) * 0.3).astype(np.float32).reshape(1, 10)
)


def create_app() -> Flask:
    app = create_gateway()
    gw = app.extensions["gateway"]
    version = _served_version(gw)

    def predict(
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int | None = version,
        label: str | None = None,
        output_filter: Sequence[str] = (),
    ) -> Prediction:
        rows = len(next(iter(inputs.values())))
        return Prediction(
            model=model,
            version=version or 1,
            outputs={"probabilities": np.repeat(CANNED_PROBABILITIES, rows, axis=0)},
        )

    models = {name: [version] for name in gw.config.required_models}
    gw.predict = predict
    gw.readiness = lambda: Readiness(True, "", models)
    return app


def _served_version(gw: Any) -> int:
    """The newest exported version, so the model card (class names) is found as in (a)."""
    from serving.stack import exported_versions

    versions = exported_versions(gw.config.model_cards_dir / gw.config.fashion_model)
    return versions[-1] if versions else 1


def create_uncoalesced_app() -> Flask:
    """The real gateway with request coalescing off (one backend call per request), to
    measure what coalescing buys:
    ``--gateway-app 'tests.bench.canned_app:create_uncoalesced_app()'``.
    """
    app = create_gateway()
    app.extensions["gateway"].coalescer = None
    return app
