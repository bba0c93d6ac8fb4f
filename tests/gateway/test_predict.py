"""POST /predict and /predict/housing end to end: gunicorn gateway -> real local model server.

Expected answers are computed in the test with tf.saved_model.load on the same exported version.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import orjson
import pytest
from PIL import Image

from serving.codecs.images import decode_image
from serving.gateway.parsing import FAST_PIXELS_BYTES
from serving.modelcard import load_model_card
from tests.helpers.housing import HOUSING_ROW

TOLERANCE = 1e-5


def _images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i in range(n):  # a light blob somewhere, like an item on black
        top, left = rng.integers(0, 14, 2)
        images[i, top : top + 14, left : left + 10] = rng.integers(120, 256)
    return images


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _check_fashion_answer(answer: dict, expected: dict, version: int, names: list[str]) -> None:
    assert answer["model"] == "fashion_mnist"
    assert answer["version"] == version
    predictions = answer["predictions"]
    assert len(predictions) == len(expected["probabilities"])
    for got, probabilities in zip(predictions, expected["probabilities"], strict=True):
        assert len(got["probabilities"]) == 10
        np.testing.assert_allclose(got["probabilities"], probabilities, atol=TOLERANCE)
        assert abs(sum(got["probabilities"]) - 1.0) < 1e-4
        assert got["class_id"] == int(np.argmax(probabilities))
        assert got["class_name"] == names[got["class_id"]]
        assert got["probability"] == pytest.approx(float(probabilities.max()), abs=TOLERANCE)


@pytest.fixture(scope="module")
def class_names(gateway_models) -> list[str]:
    return load_model_card(gateway_models / "fashion_mnist" / "2")["class_names"]


@pytest.mark.parametrize("layout", ["nested", "flat"])
@pytest.mark.parametrize("count", [5, 40])  # 40: a body past FAST_PIXELS_BYTES (vectorised reader)
def test_json_pixels_match_the_saved_model(http, reference, class_names, layout, count):
    images = _images(count)
    instances = images.tolist() if layout == "nested" else images.reshape(count, -1).tolist()
    reply = http.post_json("/predict", {"instances": instances, "top_k": 2})
    assert reply.status == 200, reply.body
    expected = reference("fashion_mnist", 2, images=images)
    _check_fashion_answer(reply.json, expected, 2, class_names)
    assert all(len(item["top_k"]) == 2 for item in reply.json["predictions"])


def test_big_json_batches_get_the_same_errors_as_small_ones(http):
    images = _images(40)
    images[27, 3, 5] = 0
    body = {"instances": images.tolist()}
    body["instances"][27][3][5] = 300
    assert len(orjson.dumps(body)) >= FAST_PIXELS_BYTES
    reply = http.post_json("/predict", body)
    assert reply.status == 400
    assert reply.json["error"]["code"] == "invalid_input"
    assert "instance 27" in reply.json["error"]["message"]
    assert "300" in reply.json["error"]["message"]
    body["instances"][27][3][5] = 1
    body["colour"] = "red"
    reply = http.post_json("/predict", body)
    assert reply.status == 400
    assert reply.json["error"]["code"] == "unknown_field"
    assert "'colour'" in reply.json["error"]["message"]


def test_real_fashion_mnist_images_match_the_saved_model(
    http, reference, class_names, fashion_test_images
):
    images, _labels = fashion_test_images
    batch = images[:64]
    reply = http.post_json("/predict?version=1", {"instances": batch})
    assert reply.status == 200, reply.body
    _check_fashion_answer(reply.json, reference("fashion_mnist", 1, images=batch), 1, class_names)
    # The same images as PNG files (multipart) give the same answers: PNG is lossless and
    # Fashion-MNIST images have a dark background, so invert=auto leaves them alone.
    fields = [(f"image{i}", (f"{i}.png", _encode(image, "PNG"), "image/png")) for i, image in
              enumerate(batch[:8])]  # fmt: skip
    reply = http.request("POST", "/predict?version=1", fields=fields)
    assert reply.status == 200, reply.body
    expected = reference("fashion_mnist", 1, images=batch[:8])
    _check_fashion_answer(reply.json, expected, 1, class_names)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_b64_images_match_the_saved_model(http, reference, class_names, fmt):
    # Larger colour images, dark item on white: converted (and inverted) by the gateway.
    items = _images(3, seed=1)
    photos = [np.stack([np.kron(255 - item, np.ones((3, 3), np.uint8))] * 3, -1) for item in items]
    encoded = [_encode(photo, fmt) for photo in photos]
    instances = [{"b64": base64.b64encode(data).decode()} for data in encoded]
    reply = http.post_json("/predict", {"instances": instances})
    assert reply.status == 200, reply.body
    converted = np.stack([decode_image(data) for data in encoded])
    _check_fashion_answer(
        reply.json, reference("fashion_mnist", 2, images=converted), 2, class_names
    )


@pytest.mark.parametrize(("fmt", "content_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg")])
def test_raw_image_body(http, reference, class_names, fmt, content_type):
    image = _images(1, seed=2)[0]
    data = _encode(np.kron(image, np.ones((2, 2), np.uint8)), fmt)
    reply = http.post("/predict?invert=never", data, content_type)
    assert reply.status == 200, reply.body
    converted = decode_image(data, invert="never")[np.newaxis]
    _check_fashion_answer(
        reply.json, reference("fashion_mnist", 2, images=converted), 2, class_names
    )


def test_multipart_with_several_files_and_form_fields(http, reference, class_names):
    images = _images(2, seed=3)
    fields = {
        "image": ("shoe.png", _encode(images[0], "PNG"), "image/png"),
        "other": ("bag.png", _encode(images[1], "PNG"), "image/png"),
        "version_label": "stable",
        "invert": "never",
    }
    reply = http.request("POST", "/predict", fields=fields)
    assert reply.status == 200, reply.body
    _check_fashion_answer(reply.json, reference("fashion_mnist", 1, images=images), 1, class_names)


def test_png_of_pixels_equals_the_pixels(http):
    image = _images(1, seed=4)[0]
    from_pixels = http.post_json("/predict", {"instances": [image.tolist()]}).json
    from_png = http.post("/predict", _encode(image, "PNG"), "image/png").json
    assert from_png["predictions"] == from_pixels["predictions"]


def test_invert_applies_to_pixel_arrays_only_when_asked(http, reference):
    image = _images(1, seed=5)[0]
    inverted = http.post_json("/predict", {"instances": [image.tolist()], "invert": "always"})
    expected = reference("fashion_mnist", 2, images=(255 - image)[np.newaxis])
    np.testing.assert_allclose(
        inverted.json["predictions"][0]["probabilities"], expected["probabilities"][0], atol=1e-5
    )


def test_top_k_lists_the_best_classes_in_order(http, class_names):
    reply = http.post_json("/predict?top_k=3", {"instances": _images(2, seed=6).tolist()})
    assert reply.status == 200, reply.body
    for prediction in reply.json["predictions"]:
        top = prediction["top_k"]
        assert len(top) == 3
        ranked = np.argsort(prediction["probabilities"])[::-1][:3].tolist()
        assert [t["class_id"] for t in top] == ranked
        assert top[0]["class_id"] == prediction["class_id"]
        assert [t["class_name"] for t in top] == [class_names[k] for k in ranked]
        assert [t["probability"] for t in top] == [prediction["probabilities"][k] for k in ranked]
    no_top = http.post_json("/predict", {"instances": _images(1).tolist()}).json
    assert "top_k" not in no_top["predictions"][0]


@pytest.mark.parametrize(
    ("query", "body", "version"),
    [
        ("", {}, 2),
        ("?version=1", {}, 1),
        ("", {"version": 1}, 1),
        ("?version_label=stable", {}, 1),
        ("", {"version_label": "canary"}, 2),
    ],
)
def test_version_selection(http, query, body, version):
    reply = http.post_json(f"/predict{query}", {"instances": _images(1).tolist(), **body})
    assert reply.status == 200, reply.body
    assert reply.json["version"] == version


@pytest.mark.parametrize("query", ["?version=7", "?version_label=nightly"])
def test_unknown_version_or_label_is_404(http, query):
    reply = http.post_json(f"/predict{query}", {"instances": _images(1).tolist()})
    assert reply.status == 404
    assert reply.json["error"]["code"] == "model_not_found"


def test_housing_named_features_are_split_by_the_model_card(http, reference, gateway_models):
    card = load_model_card(gateway_models / "housing" / "1")
    houses = [HOUSING_ROW, {**HOUSING_ROW, "MedInc": 2.0, "Latitude": 34.0}]
    reply = http.post_json("/predict/housing", {"instances": houses})
    assert reply.status == 200, reply.body
    answer = reply.json
    assert answer["model"] == "housing" and answer["version"] == 1
    wide = np.array([[h[f] for f in card["input_features"]["wide"]] for h in houses], np.float32)
    deep = np.array([[h[f] for f in card["input_features"]["deep"]] for h in houses], np.float32)
    expected = reference("housing", 1, wide=wide, deep=deep)
    np.testing.assert_allclose([p["main"] for p in answer["predictions"]], expected["main"], 1e-5)
    np.testing.assert_allclose([p["aux"] for p in answer["predictions"]], expected["aux"], 1e-5)
    # The same houses as explicit wide/deep inputs give the same answer.
    explicit = [{"wide": w.tolist(), "deep": d.tolist()} for w, d in zip(wide, deep, strict=True)]
    again = http.post_json("/predict/housing?version_label=stable", {"instances": explicit})
    assert again.status == 200, again.body
    np.testing.assert_allclose(
        [p["main"] for p in again.json["predictions"]], expected["main"], 1e-5
    )
