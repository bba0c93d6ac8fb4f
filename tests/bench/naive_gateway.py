"""The naive baseline: a one-file Flask app that calls Keras ``model.predict`` per request.

This is what most tutorials deploy: load the model at import time in every worker, parse the
JSON with the standard library, call ``model.predict`` inside the request handler, and return
JSON. It answers the gateway's single-image request format on the same path, so the benchmark
sends the same bytes to both. It is a benchmark baseline, not part of the product.

    NAIVE_MODEL=artifacts/fashion_mnist/model.keras \
        gunicorn -w 2 -b 127.0.0.1:8002 'tests.bench.naive_gateway:create_app()'

``NAIVE_MODEL`` is either the trained ``model.keras`` (takes pixels scaled to [0, 1], as in
training) or an exported SavedModel version directory (takes uint8 pixels), loaded with
``keras.layers.TFSMLayer``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, jsonify, request

# The gateway's single-image route and body; tests/bench/gateway.py imports these too.
PREDICT_PATH = "/predict"
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def load_model(path: Path) -> tuple[Any, bool]:
    """(model with .predict, whether it wants pixels scaled to [0, 1])."""
    import keras

    if path.suffix == ".keras":
        return keras.models.load_model(path), True
    layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    inputs = keras.Input((28, 28), dtype="uint8", name="images")
    return keras.Model(inputs, layer(inputs)), False


def create_app(model_path: str | None = None) -> Flask:
    path = Path(model_path or os.environ["NAIVE_MODEL"])
    model, scale = load_model(path)
    app = Flask(__name__)

    @app.post(PREDICT_PATH)
    def predict() -> Any:
        body = request.get_json()
        pixels = np.array(body["instances"], dtype=np.uint8).reshape(-1, 28, 28)
        x = pixels.astype("float32") / 255.0 if scale else pixels
        out = model.predict(x, verbose=0)
        probabilities = out["probabilities"] if isinstance(out, dict) else out
        predictions = []
        for row in np.asarray(probabilities):
            k = int(np.argmax(row))
            predictions.append(
                {
                    "class_id": k,
                    "class_name": CLASS_NAMES[k],
                    "probability": float(row[k]),
                    "probabilities": row.tolist(),
                }
            )
        return jsonify({"model": "fashion_mnist", "version": 1, "predictions": predictions})

    return app
