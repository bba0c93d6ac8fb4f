"""The demo page in headless Chromium against a real model server and gunicorn gateway.

What a person does on the page: draw a stroke, upload a real test image, pick a test-set sample,
submit the housing form, upload a bad file. Predictions shown must be the model's own (checked
against the model server over gRPC), and the gateway's error messages must reach the page.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.browser.conftest import REPORTS_DIR

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NUM_CLASSES = 10


@pytest.fixture
def page(chromium_browser: Any, demo_stack: tuple[Any, Any]) -> Iterator[Any]:
    """The demo page, loaded; fails the test on any console error or uncaught exception
    (CSP violations are console errors, so a blocked own asset fails too)."""
    yield from _demo_page(chromium_browser, demo_stack[1].url)


def _demo_page(browser: Any, url: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        # Expected 4xx answers are logged by Chromium as "Failed to load resource" errors.
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and "status of 4" not in msg.text
            else None
        ),
    )
    response = page.goto(url + "/")
    assert response is not None and response.status == 200
    page.wait_for_selector("#samples .sample, #samples-box.hidden", state="attached")
    yield page
    context.close()
    assert not problems, problems


def _fashion_state(page: Any, expected: str) -> None:
    page.wait_for_function(
        "expected => document.body.dataset.fashionState === expected", arg=expected
    )


def _shown_prediction(page: Any) -> tuple[int, list[float]]:
    """(class id, the ten bar values as fractions) that the page shows."""
    rows = page.locator("#bars .bar-row")
    assert rows.count() == NUM_CLASSES
    texts = page.locator("#bars .bar-value").all_text_contents()
    values = [float(v.rstrip("%")) / 100 for v in texts]
    top = page.locator("#bars .bar-row.top")
    assert top.count() == 1
    class_id = int(page.locator("#prediction").get_attribute("data-class-id"))
    assert int(top.get_attribute("data-class-id")) == class_id
    return class_id, values


def _seen_pixels(page: Any) -> np.ndarray:
    """The 28x28 grey levels painted in the "what the model saw" canvas."""
    data = page.evaluate(
        """() => Array.from(document.getElementById('seen-canvas').getContext('2d')
             .getImageData(0, 0, 28, 28).data)"""
    )
    return np.asarray(data, dtype=np.uint8).reshape(28, 28, 4)[:, :, 0]


def _model_prediction(modelserver: Any, image: np.ndarray) -> tuple[int, np.ndarray]:
    """The model server's own answer for one uint8 28x28 image (gRPC, no gateway)."""
    from serving.tfs_client import TFServingClient

    client = TFServingClient(modelserver.grpc_target, timeout=10.0)
    try:
        result = client.predict("fashion_mnist", {"images": image[np.newaxis]})
    finally:
        client.close()
    return int(result.outputs["class_ids"][0]), result.outputs["probabilities"][0]


def _post(url: str, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_page_has_security_headers(page: Any, demo_stack: tuple[Any, Any]) -> None:
    url = demo_stack[1].url + "/"
    response = page.request.get(url, headers={"Accept": "text/html,*/*;q=0.8"})
    assert response.headers["content-type"].startswith("text/html")
    headers = response.headers
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "http" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    # Every script and stylesheet comes from the gateway itself.
    sources = page.evaluate(
        """() => [...document.querySelectorAll('script[src], link[rel=stylesheet]')]
             .map(e => e.src || e.href)"""
    )
    assert sources and all(s.startswith(url) for s in sources)
    # API clients asking for anything (curl's */*) still get the gateway's JSON index.
    index = page.request.get(url, headers={"Accept": "*/*"})
    assert index.headers["content-type"] == "application/json" and "endpoints" in index.json()


def test_drawn_stroke_is_classified(page: Any) -> None:
    box = page.locator("#draw-canvas").bounding_box()
    x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.2
    page.mouse.move(x0, y0)
    page.mouse.down()
    for step in range(1, 21):  # a vertical stroke, then across: a rough "T"
        page.mouse.move(x0 + box["width"] * 0.02 * (step % 2), y0 + box["height"] * 0.03 * step)
    page.mouse.up()
    _fashion_state(page, "done")
    class_id, values = _shown_prediction(page)
    assert 0 <= class_id < NUM_CLASSES
    assert abs(sum(values) - 1.0) < 0.01  # rounded to 0.1 % each
    seen = _seen_pixels(page)
    assert seen.max() > 200 and seen.min() < 30  # white ink on black, as the model takes it
    assert page.locator("#fashion-error").is_hidden()


def test_uploaded_test_image_matches_model(
    page: Any,
    demo_stack: tuple[Any, Any],
    fashion_test_images: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    from serving.codecs.images import encode_png

    images, _ = fashion_test_images
    index = 17
    path = tmp_path / f"fashion-test-{index}.png"
    path.write_bytes(encode_png(images[index]))
    page.select_option("#invert", "auto")
    page.set_input_files("#file-input", str(path))
    _fashion_state(page, "done")

    class_id, values = _shown_prediction(page)
    expected_id, probabilities = _model_prediction(demo_stack[0], images[index])
    assert class_id == expected_id
    np.testing.assert_allclose(values, probabilities, atol=0.0006)  # shown with 0.1 % steps
    # The page shows exactly the image the model was given.
    np.testing.assert_array_equal(_seen_pixels(page), images[index])

    # Housing too, so the screenshot shows both halves of the page working.
    page.click("#housing-submit")
    page.wait_for_function("() => document.body.dataset.housingState === 'done'")
    REPORTS_DIR.mkdir(exist_ok=True)
    page.screenshot(path=str(REPORTS_DIR / "demo.png"), full_page=True)


def test_sample_shows_true_and_predicted(
    page: Any,
    demo_stack: tuple[Any, Any],
    fashion_test_images: tuple[np.ndarray, np.ndarray],
) -> None:
    images, labels = fashion_test_images
    sample = page.locator("#samples .sample").first
    index = int(sample.get_attribute("data-index"))
    assert int(sample.get_attribute("data-label")) == int(labels[index])
    sample.click()
    _fashion_state(page, "done")
    class_id, _ = _shown_prediction(page)
    expected_id, _ = _model_prediction(demo_stack[0], images[index])
    assert class_id == expected_id
    truth = page.locator("#truth").text_content()
    true_name = page.locator("#samples .sample span").first.text_content()
    assert true_name in truth
    assert ("correct" in truth) == (expected_id == int(labels[index]))
    np.testing.assert_array_equal(_seen_pixels(page), images[index])


def test_housing_form_gets_the_models_value(page: Any, demo_stack: tuple[Any, Any]) -> None:
    row = {
        name: float(page.locator(f"#housing-form input[name='{name}']").input_value())
        for name in page.eval_on_selector_all(
            "#housing-form input[name]", "inputs => inputs.map(i => i.name)"
        )
    }
    assert len(row) == 8
    page.click("#housing-submit")
    page.wait_for_function("() => document.body.dataset.housingState === 'done'")
    shown = float(page.locator("#housing-value").get_attribute("data-value"))
    status, answer = _post(
        demo_stack[1].url + "/predict/housing",
        json.dumps({"instances": [row]}).encode(),
        "application/json",
    )
    assert status == 200
    assert shown == pytest.approx(float(answer["predictions"][0]["main"]), rel=1e-6)
    assert page.locator("#housing-value").text_content().startswith("$")


def test_bad_inputs_show_the_gateways_message(
    page: Any, demo_stack: tuple[Any, Any], tmp_path: Path
) -> None:
    gateway = demo_stack[1]
    bogus = tmp_path / "not-really.png"
    bogus.write_bytes(b"this is a text file, not a picture\n")
    page.set_input_files("#file-input", str(bogus))
    _fashion_state(page, "error")
    shown = page.locator("#fashion-error")
    assert shown.is_visible()
    # The gateway's own message for the same bytes, asked directly.
    boundary = "demo-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="not-really.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + bogus.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, answer = _post(
        gateway.url + "/predict", body, f"multipart/form-data; boundary={boundary}"
    )
    assert status == 400
    assert shown.text_content() == answer["error"]["message"]

    page.fill("#housing-form input[name='MedInc']", "")
    page.click("#housing-submit")
    page.wait_for_function("() => document.body.dataset.housingState === 'error'")
    message = page.locator("#housing-error").text_content()
    assert "MedInc" in message


def test_api_key_field_unlocks_a_gateway_that_requires_keys(
    chromium_browser: Any,
    demo_stack: tuple[Any, Any],
    models_root: Path,
    fashion_test_images: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    from serving.codecs.images import encode_png
    from tests.helpers.gateway_process import running_gateway

    key = "demo-test-key-1234567890"
    path = tmp_path / "test-image.png"
    path.write_bytes(encode_png(fashion_test_images[0][0]))
    with running_gateway(
        demo_stack[0].grpc_target, models_root, workers=1, env={"GATEWAY_API_KEYS": key}
    ) as gateway:
        pages = _demo_page(chromium_browser, gateway.url)
        page = next(pages)
        # The page and its files are open; a prediction without the key gets the gateway's 401.
        page.set_input_files("#file-input", str(path))
        _fashion_state(page, "error")
        status, answer = _post(gateway.url + "/predict", path.read_bytes(), "image/png")
        assert status == 401
        assert page.locator("#fashion-error").text_content() == answer["error"]["message"]
        page.locator("details.api-key summary").click()
        page.fill("#api-key", key)
        page.set_input_files("#file-input", [])
        page.set_input_files("#file-input", str(path))
        _fashion_state(page, "done")
        assert page.locator("#bars .bar-row").count() == NUM_CLASSES
        assert page.locator("#fashion-error").is_hidden()
        next(pages, None)
