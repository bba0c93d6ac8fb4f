"""PNG files built chunk by chunk, for tests that need what encoders never write: a header
without pixel data, pixel data with rows missing, IDAT split anywhere."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from serving.codecs.png_rows import ADAM7_PASSES, SIGNATURE


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_file(
    width: int,
    height: int,
    scanlines: bytes | None,
    *,
    depth: int = 8,
    colour: int = 0,
    interlaced: bool = False,
    idat_size: int | None = None,
) -> bytes:
    """IHDR as given, then ``scanlines`` (already filtered: a filter byte per row) compressed
    into IDAT chunks of ``idat_size`` bytes each (one chunk if None); no IDAT if None."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, int(interlaced))
    body = chunk(b"IHDR", header)
    if scanlines is not None:
        packed = zlib.compress(scanlines)
        step = idat_size or max(len(packed), 1)
        body += b"".join(chunk(b"IDAT", packed[i : i + step]) for i in range(0, len(packed), step))
    return SIGNATURE + body + chunk(b"IEND", b"")


def grey_scanlines(pixels: np.ndarray) -> bytes:
    """8-bit grey rows with filter type 0 (none)."""
    rows = np.asarray(pixels, dtype=np.uint8)
    return b"".join(b"\x00" + row.tobytes() for row in rows)


def grey_interlaced_scanlines(pixels: np.ndarray) -> bytes:
    """8-bit grey Adam7 passes, each row with filter type 0."""
    rows = np.asarray(pixels, dtype=np.uint8)
    return b"".join(
        grey_scanlines(rows[y0::dy, x0::dx])
        for x0, y0, dx, dy in ADAM7_PASSES
        if rows[y0::dy, x0::dx].size
    )
