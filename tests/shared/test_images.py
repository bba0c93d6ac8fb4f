"""serving.codecs.images: image bytes and JSON pixels -> uint8 [28, 28]."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from serving.codecs import CodecError
from serving.codecs.images import (
    decode_image,
    encode_png,
    invert_pixels,
    load_array_file,
    pixels_to_batch,
    pixels_to_image,
)
from tests.helpers.png import png_file


def _encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _item(size: int = 28) -> np.ndarray:
    """A light rectangle on black, like a Fashion-MNIST item."""
    array = np.zeros((size, size), dtype=np.uint8)
    array[size // 5 : size - size // 5, size // 3 : size - size // 3] = 220
    return array


# -- encoded images ----------------------------------------------------------------------


@given(st.lists(st.integers(0, 255), min_size=784, max_size=784))
@settings(max_examples=15, deadline=None)
def test_png_round_trip_is_lossless_for_28x28(pixels):
    array = np.array(pixels, dtype=np.uint8).reshape(28, 28)
    assert np.array_equal(decode_image(encode_png(array), invert="never"), array)


def test_dark_on_light_is_inverted_automatically():
    item = _item(56)
    light_on_dark = decode_image(_encode(item))
    dark_on_light = decode_image(_encode(255 - item))
    assert light_on_dark.shape == (28, 28) and light_on_dark.dtype == np.uint8
    assert light_on_dark[0, 0] == 0 and light_on_dark[14, 14] > 150
    # Equal up to the resampling filter's clipping at 0 and 255.
    assert np.abs(light_on_dark.astype(int) - dark_on_light).max() <= 3


def test_invert_always_and_never_are_obeyed():
    item = _item()
    assert np.array_equal(decode_image(_encode(item), invert="always"), 255 - item)
    assert np.array_equal(decode_image(_encode(255 - item), invert="never"), 255 - item)
    with pytest.raises(CodecError, match="invert must be one of"):
        decode_image(_encode(item), invert="sometimes")


def test_colour_jpeg_becomes_grayscale_close_to_the_original():
    item = _item(112)
    rgb = np.stack([item, item, item], axis=-1)
    from_jpeg = decode_image(_encode(rgb, "JPEG")).astype(int)
    from_png = decode_image(_encode(item)).astype(int)
    assert np.abs(from_jpeg - from_png).mean() < 4


def test_aspect_ratio_is_kept_and_padding_is_background():
    tall = np.zeros((100, 50), dtype=np.uint8)
    tall[:, 20:30] = 255  # a vertical bar in the middle
    image = decode_image(_encode(tall))
    assert image.shape == (28, 28)
    # 100x50 -> 28x14 centred: columns 0..6 and 21..27 are padding (black background).
    assert image[:, :7].max() == 0 and image[:, 21:].max() == 0
    assert image[:, 13:15].min() > 200


def test_transparent_background_is_treated_as_white_and_inverted():
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[8:20, 8:20] = (0, 0, 0, 255)  # opaque black square, transparent elsewhere
    image = decode_image(_encode(rgba))
    assert image[0, 0] == 0 and image[14, 14] == 255


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"definitely not an image", "not a decodable image"),
        (b"%PDF-1.4\n" + b"0" * 100, "not a decodable image"),
    ],
)
def test_non_images_are_refused(data, message):
    with pytest.raises(CodecError, match=message):
        decode_image(data)


def test_truncated_image_is_refused():
    data = _encode(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    with pytest.raises(CodecError, match=r"truncated|corrupt"):
        decode_image(data[: len(data) // 2])


# 3000x3000 trips our limit; 20000x20000 also trips Pillow's own guard while opening.
@pytest.mark.parametrize("side", [3000, 20000])
def test_decompression_bomb_is_refused_before_decoding(side):
    with pytest.raises(CodecError, match="more than the limit of 1000000"):
        decode_image(png_file(side, side, None), max_pixels=1_000_000)


# -- JSON pixels -------------------------------------------------------------------------


def test_nested_and_flat_pixels_are_accepted():
    array = (np.arange(784) % 256).astype(np.uint8).reshape(28, 28)
    assert np.array_equal(pixels_to_image(array.tolist()), array)
    assert np.array_equal(pixels_to_image(array.reshape(-1).tolist()), array)
    whole_floats = array.astype(float).tolist()
    assert np.array_equal(pixels_to_image(whole_floats), array)


def _with(value, row=4, col=17):
    pixels = [[0] * 28 for _ in range(28)]
    pixels[row][col] = value
    return pixels


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (_with(300), r"pixel \[4, 17\] is 300"),
        (_with(-1), r"pixel \[4, 17\] is -1"),
        (_with(2.5), r"pixel \[4, 17\] is 2.5"),
        (_with(float("nan")), r"pixel \[4, 17\] is nan"),
        (_with(float("inf")), r"pixel \[4, 17\] is inf"),
        (_with("7"), r"pixel \[4, 17\] is a string"),
        (_with(None), r"pixel \[4, 17\] is null"),
        (_with(True), r"pixel \[4, 17\] is a boolean"),
        (_with(2**70), r"pixel \[4, 17\] is 1180591620717411303424"),
        ([[0] * 28] * 27, r"got shape \[27, 28\]"),
        ([0] * 783, r"got shape \[783\]"),
        ([[0] * 28] * 27 + [[0] * 27], "row 27 has 27 pixels"),
        ({"b64": "x"}, "got an object"),
        (5, "got int"),
    ],
)
def test_bad_pixels_are_refused_with_the_position(pixels, message):
    with pytest.raises(CodecError, match="instance 3: .*" + message):
        pixels_to_image(pixels, where="instance 3")


def test_batch_is_vectorised_and_names_the_bad_instance():
    good = np.zeros((28, 28), dtype=np.uint8).tolist()
    assert pixels_to_batch([good, good]).shape == (2, 28, 28)
    assert pixels_to_batch([good, [0] * 784]).shape == (2, 28, 28)  # mixed layouts
    assert pixels_to_batch([]).shape == (0, 28, 28)
    with pytest.raises(CodecError, match=r"instance 7: pixel \[4, 17\] is 300"):
        pixels_to_batch([good, _with(300)], first_index=6)
    with pytest.raises(CodecError, match=r"instance 1: pixel \[4, 17\] is a boolean"):
        pixels_to_batch([good, _with(True)])
    with pytest.raises(CodecError, match=r"instance 1: expected a 28x28 image"):
        pixels_to_batch([good, [1, 2, 3]])


def test_load_array_file(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28)).astype(np.int64)
    np.save(tmp_path / "many.npy", images)
    np.save(tmp_path / "one.npy", images[0].astype(np.uint8))
    np.save(tmp_path / "bad.npy", np.full((2, 28, 28), 999))
    np.save(tmp_path / "shape.npy", np.zeros((2, 3)))
    assert np.array_equal(load_array_file(tmp_path / "many.npy"), images.astype(np.uint8))
    assert load_array_file(tmp_path / "one.npy").shape == (1, 28, 28)
    with pytest.raises(CodecError, match="is 999"):
        load_array_file(tmp_path / "bad.npy")
    with pytest.raises(CodecError, match=r"\[2, 3\]"):
        load_array_file(tmp_path / "shape.npy")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(CodecError, match="not a readable"):
        load_array_file(tmp_path / "junk.npy")


def test_encode_png_refuses_non_uint8():
    with pytest.raises(CodecError):
        encode_png(np.zeros((28, 28), dtype=np.float32))


def test_invert_pixels_uses_the_same_background_rule():
    item = _item()
    batch = np.stack([item, 255 - item])
    assert np.array_equal(invert_pixels(batch, "auto"), np.stack([item, item]))
    assert np.array_equal(invert_pixels(batch, "always"), 255 - batch)
    assert invert_pixels(batch, "never") is batch
    assert np.array_equal(invert_pixels(255 - item, "auto"), decode_image(encode_png(255 - item)))
