"""The demo page (``GET /``) and its read-only helper ``GET /demo/samples``.

The page (templates/demo/index.html + static/demo/*) talks to the gateway's public API only:
``POST /predict`` (image upload with ``return_image=true`` to show what the model saw) and
``POST /predict/housing``. This module adds no prediction route of its own.

``/demo/samples`` serves Fashion-MNIST test images as PNG with their true labels, read with the
training data loader (TensorFlow-free; it looks in ``$FASHION_MNIST_DIR``, the keras cache, then
``/usr/share/datasets/fashion-mnist``). Without the data set it answers 404 and the page hides
that section. See docs/demo.md.
"""

from __future__ import annotations

import base64
import secrets
import threading
from typing import Any

import numpy as np
from flask import Blueprint, Response, render_template, request

from serving.codecs.images import encode_png
from serving.gateway import meta
from serving.gateway.errors import ApiError
from serving.gateway.responses import json_response
from serving.gateway.state import state

blueprint = Blueprint(
    "demo",
    __name__,
    static_folder="static",
    static_url_path="/demo/static",
    template_folder="templates",
)

MAX_SAMPLES = 32
DEFAULT_SAMPLES = 8
# The first row of the California housing data set (block group in Berkeley, value $452,600):
# realistic values so the form works as is.
EXAMPLE_HOUSE = {
    "MedInc": ("8.3252", "median income of the block group, in $10,000"),
    "HouseAge": ("41", "median age of the houses, in years"),
    "AveRooms": ("6.984127", "average rooms per household"),
    "AveBedrms": ("1.023810", "average bedrooms per household"),
    "Population": ("322", "people living in the block group"),
    "AveOccup": ("2.555556", "average household size"),
    "Latitude": ("37.88", "degrees north"),
    "Longitude": ("-122.23", "degrees east (negative: west)"),
}
# Only our own files: no inline script or style, no other origin, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2
    "Cross-Origin-Opener-Policy": "same-origin",
}


@blueprint.after_app_request
def _no_sniff(response: Response) -> Response:
    # Scripts and styles must never be guessed into another type (applies to our static files).
    if request.blueprint == "demo":
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


@blueprint.get("/")
def index() -> Response:
    """The demo page for browsers; API clients (preferring JSON, e.g. ``Accept: */*``) get the
    gateway's JSON index from ``meta`` as before. Housing fields follow the model card's order."""
    if request.accept_mimetypes.best_match(("application/json", "text/html")) != "text/html":
        return meta.index()
    html = render_template(
        "demo/index.html",
        predict_url="/predict",
        housing_url="/predict/housing",
        samples_url="/demo/samples",
        housing_features=_housing_features(),
    )
    response = Response(html, mimetype="text/html")
    response.headers.update(PAGE_HEADERS)
    response.headers["Cache-Control"] = "no-cache"
    return response


def _housing_features() -> list[dict[str, str]]:
    gateway = state()
    card = gateway.catalog.card(gateway.config.housing_model, None)
    # Without a card the page still renders; /predict/housing then explains what is missing.
    names = list(card.feature_names) if card and card.feature_names else list(EXAMPLE_HOUSE)
    return [
        {"name": name, "value": value, "help": help_text}
        for name in names
        for value, help_text in [EXAMPLE_HOUSE.get(name, ("", ""))]
    ]


# --------------------------------------------------------------------------------- samples


class _TestSet:
    """The Fashion-MNIST test split, loaded on first use (per worker) and kept read-only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: tuple[np.ndarray, np.ndarray, list[str]] | None = None
        self._error: str | None = None

    def get(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        with self._lock:
            if self._data is None and self._error is None:
                self._load()
            if self._data is None:
                raise ApiError(404, "samples_unavailable", self._error or "no test set")
            return self._data

    def _load(self) -> None:
        try:
            from training.data import DataError
            from training.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist
        except ImportError as exc:  # a gateway installed without the training package
            self._error = f"the Fashion-MNIST test set is not available here ({exc})"
            return
        try:
            data = load_fashion_mnist(allow_download=False)
        except DataError as exc:
            self._error = f"the Fashion-MNIST test set is not installed: {exc}"
            return
        # Keep only the test split (the training arrays are freed with ``data``).
        self._data = (data.x_test, data.y_test, list(CLASS_NAMES))


_test_set = _TestSet()


def _int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_input", f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, "invalid_input", f"{name} must be in {low}..{high}, got {value}")
    return value


@blueprint.get("/demo/samples")
def samples() -> Response:
    """``?count=N`` (1..32, default 8) consecutive test images from ``offset`` (default random).

    Answer: ``{"total": 10000, "samples": [{"index", "label", "class_name", "image_png"}]}``
    with ``image_png`` the base64 PNG of the 28x28 test image exactly as stored.
    """
    unknown = sorted(set(request.args) - {"count", "offset"})
    if unknown:
        raise ApiError(
            400, "invalid_input", f"unknown parameter(s) {', '.join(unknown)}; use count, offset"
        )
    count = _int_arg("count", DEFAULT_SAMPLES, 1, MAX_SAMPLES)
    images, labels, names = _test_set.get()
    total = len(images)
    offset = _int_arg("offset", None, 0, total - 1)
    if offset is None:
        offset = secrets.randbelow(total)
    items: list[dict[str, Any]] = []
    for i in range(count or DEFAULT_SAMPLES):
        index = (offset + i) % total
        label = int(labels[index])
        items.append(
            {
                "index": index,
                "label": label,
                "class_name": names[label],
                "image_png": base64.b64encode(encode_png(images[index])).decode("ascii"),
            }
        )
    return json_response({"total": total, "samples": items})
