"""Whether a PNG's compressed pixel data holds every row its header promises.

Pillow decodes a PNG whose zlib stream ends cleanly after fewer scanlines than the header's
height without an error, leaving the missing rows black; libpng calls the same file an error
("Not enough image data"). A classifier must not guess from half an image, so the image codec
asks this module after Pillow has decoded a PNG. It walks the chunks, inflates the IDAT data in
bounded steps (nothing is kept but a count) and compares the byte count with the size the header
gives (filter byte + packed samples per row, per Adam7 pass when interlaced). Extra data after
the last row is accepted, as libpng does.
"""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Samples per pixel by IHDR colour type: grey, RGB, palette, grey+alpha, RGBA.
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: Adam7 passes: (first column, first row, column step, row step).
ADAM7_PASSES = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
_INFLATE_STEP = 1 << 20  # bytes of inflated output per step


def missing_pixel_data(data: bytes) -> str | None:
    """None when the PNG's IDAT data inflates to at least the size its header needs (or when the
    bytes are not a PNG this check can read: Pillow's own errors cover those); otherwise what is
    missing, e.g. ``"its pixel data ends after 27 of 28 rows"``."""
    header = _ihdr(data)
    if header is None:
        return None
    width, height, depth, colour, interlaced = header
    channels = _CHANNELS.get(colour)
    if channels is None or width <= 0 or height <= 0:
        return None
    bits = channels * depth
    row_bytes = _row_bytes(width, bits)
    if interlaced:
        expected = sum(
            rows * _row_bytes(cols, bits)
            for x0, y0, dx, dy in ADAM7_PASSES
            if (cols := (width - x0 + dx - 1) // dx) > 0
            and (rows := (height - y0 + dy - 1) // dy) > 0
        )
    else:
        expected = height * row_bytes
    got = _inflated_size(data, limit=expected)
    if got is None or got >= expected:
        return None
    if interlaced:
        return f"its interlaced pixel data ends after {got} of {expected} bytes"
    return f"its pixel data ends after {got // row_bytes} of {height} rows"


def _row_bytes(width: int, bits_per_pixel: int) -> int:
    return 1 + (width * bits_per_pixel + 7) // 8  # the filter-type byte, then packed samples


def _ihdr(data: bytes) -> tuple[int, int, int, int, bool] | None:
    if not data.startswith(SIGNATURE) or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _compression, _filter, interlace = struct.unpack(
        ">IIBBBBB", data[16:29]
    )
    return width, height, depth, colour, interlace == 1


def _inflated_size(data: bytes, *, limit: int) -> int | None:
    """Bytes the concatenated IDAT chunks inflate to, counted up to ``limit``; None when the
    stream cannot be read (a corrupt stream is Pillow's to report)."""
    inflater = zlib.decompressobj()
    total = 0
    pos = len(SIGNATURE)
    try:
        while pos + 8 <= len(data) and total < limit:
            length, kind = struct.unpack(">I4s", data[pos : pos + 8])
            body = data[pos + 8 : pos + 8 + length]
            pos += 12 + length  # length, type, body, CRC
            if kind == b"IEND":
                break
            if kind != b"IDAT":
                continue
            pending = body
            while pending and total < limit and not inflater.eof:
                total += len(inflater.decompress(pending, _INFLATE_STEP))
                pending = inflater.unconsumed_tail
        if total < limit and not inflater.eof:
            total += len(inflater.flush())  # output zlib still held back
    except zlib.error:
        return None
    return total
