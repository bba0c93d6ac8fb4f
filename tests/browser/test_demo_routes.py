"""The demo blueprint's routes through Flask's test client (no browser, no model server).

GET / content negotiation and security headers, the static files, GET /demo/samples (exact test
images and labels, parameter errors, 404 without the data set), and the return_image parameter
of /predict that the page relies on.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from serving.gateway import GatewayConfig, create_app
from serving.gateway import demo as demo_module

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    # Nothing listens on port 9: requests that reach the backend would fail, and none should.
    config = GatewayConfig(model_server_grpc="127.0.0.1:9", model_cards_dir=tmp_path, retries=0)
    app = create_app(config)
    with app.test_client() as test_client:
        yield test_client


def _error(reply: Any, status: int) -> str:
    assert reply.status_code == status, reply.data
    body = reply.get_json()
    assert set(body["error"]) == {"code", "message"}
    return body["error"]["message"]


def test_browsers_get_the_page_with_security_headers(client: Any) -> None:
    reply = client.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert reply.status_code == 200 and reply.mimetype == "text/html"
    csp = reply.headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert all("http" not in value and "unsafe" not in value for value in directives.values())
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers["Referrer-Policy"] == "no-referrer"
    html = reply.get_data(as_text=True)
    assert "<script>" not in html and "style=" not in html  # nothing inline for the CSP to block
    # Without a housing model card the form falls back to the eight features in training order.
    for name in ("MedInc", "HouseAge", "AveRooms", "Longitude"):
        assert f'name="{name}"' in html


def test_api_clients_still_get_the_json_index(client: Any) -> None:
    for accept in ("*/*", "application/json", None):
        headers = {"Accept": accept} if accept else {}
        reply = client.get("/", headers=headers)
        assert reply.mimetype == "application/json"
        assert "/predict" in reply.get_json()["endpoints"]


def test_static_files_are_served_with_nosniff(client: Any) -> None:
    page = client.get("/", headers={"Accept": BROWSER_ACCEPT}).get_data(as_text=True)
    for path, mimetype in (
        ("/demo/static/demo/demo.js", "text/javascript"),
        ("/demo/static/demo/demo.css", "text/css"),
    ):
        assert f'"{path}"' in page
        reply = client.get(path)
        assert reply.status_code == 200 and reply.mimetype == mimetype
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        reply.close()


def test_samples_are_the_test_images_with_their_labels(
    client: Any, fashion_test_images: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = fashion_test_images
    reply = client.get(f"/demo/samples?count=3&offset={len(images) - 1}")
    assert reply.status_code == 200
    body = reply.get_json()
    assert body["total"] == len(images)
    indexes = [sample["index"] for sample in body["samples"]]
    assert indexes == [len(images) - 1, 0, 1]  # wraps around
    for sample in body["samples"]:
        png = Image.open(io.BytesIO(base64.b64decode(sample["image_png"])))
        assert png.format == "PNG" and png.mode == "L"
        np.testing.assert_array_equal(np.asarray(png), images[sample["index"]])
        assert sample["label"] == int(labels[sample["index"]])
        assert isinstance(sample["class_name"], str) and sample["class_name"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("count=0", "count must be in 1..32, got 0"),
        ("count=33", "count must be in 1..32, got 33"),
        ("count=two", "count must be an integer, got 'two'"),
        ("offset=-1", "offset must be in 0.."),
        ("size=3", "unknown parameter(s) size"),
    ],
)
def test_sample_parameters_are_checked(
    client: Any, fashion_test_images: tuple[np.ndarray, np.ndarray], query: str, expected: str
) -> None:
    assert expected in _error(client.get(f"/demo/samples?{query}"), 400)


def test_samples_answer_404_without_the_data_set(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-fashion-here"
    empty.mkdir()
    monkeypatch.setenv("FASHION_MNIST_DIR", str(empty))
    monkeypatch.setattr(demo_module, "_test_set", demo_module._TestSet())
    message = _error(client.get("/demo/samples"), 404)
    assert "not installed" in message and str(empty) in message


@pytest.mark.parametrize("value", ["yes", "1", "True"])
def test_return_image_must_be_true_or_false(client: Any, value: str) -> None:
    reply = client.post(f"/predict?return_image={value}", json={"instances": [[[0] * 28] * 28]})
    assert "return_image must be true or false" in _error(reply, 400)
