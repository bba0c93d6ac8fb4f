"""serving.codecs.png_rows and the image codec: a PNG with rows missing is refused, not decoded
with black rows (Pillow's behaviour), while every complete PNG still decodes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from serving.codecs import CodecError
from serving.codecs.images import decode_image
from serving.codecs.png_rows import missing_pixel_data
from tests.helpers.png import grey_interlaced_scanlines, grey_scanlines, png_file

ITEM = (np.arange(28 * 28).reshape(28, 28) % 200 + 40).astype(np.uint8)


def _pillow_png(mode: str) -> bytes:
    image = Image.fromarray(ITEM).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
def test_complete_pngs_pass(mode):
    data = _pillow_png(mode)
    assert missing_pixel_data(data) is None
    assert decode_image(data).shape == (28, 28)


@pytest.mark.parametrize("idat_size", [None, 7, 1])
def test_hand_built_png_is_what_pillow_reads(idat_size):
    data = png_file(28, 28, grey_scanlines(ITEM), idat_size=idat_size)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), ITEM)
    assert missing_pixel_data(data) is None


@pytest.mark.parametrize("kept", [1, 14, 27])
def test_rows_missing_are_refused_with_the_count(kept):
    data = png_file(28, 28, grey_scanlines(ITEM[:kept]))
    # What this guards against: Pillow itself decodes it, the missing rows black.
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(decoded[:kept], ITEM[:kept]) and not decoded[kept:].any()
    with pytest.raises(CodecError, match=rf"truncated PNG image: .* ends after {kept} of 28 rows"):
        decode_image(data)


def test_a_partial_last_row_counts_as_missing():
    scanlines = grey_scanlines(ITEM)
    assert missing_pixel_data(png_file(28, 28, scanlines[:-5])) == (
        "its pixel data ends after 27 of 28 rows"
    )


def test_bit_packed_rows_are_measured_in_bytes_of_the_packed_width():
    # 1-bit grey, 28 pixels wide: 4 bytes per row after the filter byte.
    rows = b"".join(b"\x00" + bytes([0xF0, 0x0F, 0xAA, 0x50]) for _ in range(28))
    assert missing_pixel_data(png_file(28, 28, rows, depth=1)) is None
    assert missing_pixel_data(png_file(28, 28, rows[: 5 * 20], depth=1)) == (
        "its pixel data ends after 20 of 28 rows"
    )


def test_interlaced_png_is_measured_pass_by_pass():
    full = grey_interlaced_scanlines(ITEM)
    data = png_file(28, 28, full, interlaced=True)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), ITEM)
    assert missing_pixel_data(data) is None
    short = png_file(28, 28, full[:-29], interlaced=True)  # the last pass's last row
    assert missing_pixel_data(short) == (
        f"its interlaced pixel data ends after {len(full) - 29} of {len(full)} bytes"
    )


def test_data_beyond_the_last_row_is_accepted_as_libpng_does():
    data = png_file(28, 28, grey_scanlines(ITEM) + b"\x00" * 29)
    assert missing_pixel_data(data) is None
    assert decode_image(data).shape == (28, 28)


def test_no_idat_at_all_is_no_rows():
    assert missing_pixel_data(png_file(28, 28, None)) == "its pixel data ends after 0 of 28 rows"


@pytest.mark.parametrize(
    "data",
    [b"", b"GIF89a", b"\x89PNG\r\n\x1a\n", png_file(28, 28, b"\x00" * 3, colour=5)],
)
def test_what_it_cannot_read_is_left_to_pillow(data):
    # Not a PNG, no IHDR, an unknown colour type: Pillow reports those itself.
    assert missing_pixel_data(data) is None
