"""Images and pixel lists -> the uint8 [28, 28] arrays the Fashion-MNIST model takes.

The one image conversion of the project (gateway, clients, load tests). No TensorFlow.

Conversion of an encoded image (``decode_image``), in this order:
1. decode with Pillow (PNG, JPEG, GIF, BMP, WEBP, TIFF; first frame only), after refusing images
   whose header declares more than ``max_pixels`` pixels (decompression-bomb guard);
2. apply the EXIF orientation; composite transparency onto white (how it shows on a page);
3. convert to 8-bit grayscale (ITU-R 601-2 luma);
4. scale so the longest side is 28 pixels, keeping the aspect ratio (Lanczos);
5. invert: Fashion-MNIST items are light on a black background. ``invert="auto"`` inverts when
   the background -- the median of the image's outermost ring of pixels -- is above 127, i.e. a
   light background; ``"always"`` / ``"never"`` force it;
6. centre on a 28x28 canvas filled with the (inverted) background value, so padding a
   non-square image adds background, not a bar of another colour.

JSON pixels (``pixels_to_image`` / ``pixels_to_batch``) are taken as they are: 28x28 or 784 integers
0..255 (whole-number floats such as ``12.0`` are accepted; fractions, NaN, infinities, booleans,
strings, out-of-range values and other shapes are refused with a message naming the pixel).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from serving.codecs import CodecError
from serving.codecs.png_rows import missing_pixel_data

IMAGE_SHAPE = (28, 28)
IMAGE_SIZE = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
#: Default decompression-bomb guard: images declaring more pixels are refused before decoding.
MAX_IMAGE_PIXELS = 40_000_000
INVERT_CHOICES = ("auto", "always", "never")
#: Parsers Pillow may try; limiting them keeps exotic/legacy decoders away from user input.
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")

# Pillow's own global guard stays on as a second line (it raises at twice its limit); ours is
# per call and checked first, so the global only needs to be at least as generous.
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_IMAGE_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def decode_image(
    data: bytes, *, invert: str = "auto", max_pixels: int = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Encoded image bytes -> uint8 [28, 28], light on black (see the module docstring).

    Raises ``CodecError`` for empty, undecodable, truncated, non-image or oversized input.
    """
    if invert not in INVERT_CHOICES:
        raise CodecError(f"invert must be one of {', '.join(INVERT_CHOICES)}, got {invert!r}")
    if not data:
        raise CodecError("image is empty (0 bytes)")
    image = _open_image(bytes(data), max_pixels)
    gray = _to_grayscale(image)
    fitted = _fit(gray)
    return _invert_and_pad(np.asarray(fitted, dtype=np.uint8), invert)


def _open_image(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Between Pillow's limit and twice it Pillow only warns; our explicit check decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError as exc:
        raise CodecError(
            f"not a decodable image ({len(data)} bytes; expected {', '.join(IMAGE_FORMATS)})"
        ) from exc
    except Image.DecompressionBombError as exc:
        # Pillow's own guard (at twice its global limit) fired while reading the header.
        raise CodecError(
            f"image is too large to decode, more than the limit of {max_pixels} pixels ({exc})"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise CodecError(f"corrupt image: {exc}") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise CodecError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise CodecError(
            f"image is {width}x{height} = {width * height} pixels, more than the limit of "
            f"{max_pixels}"
        )
    try:
        if image.format == "JPEG":
            # Let libjpeg decode at 1/2..1/8 scale when the image is much larger than needed.
            image.draft("L", (IMAGE_SHAPE[1] * 4, IMAGE_SHAPE[0] * 4))
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CodecError(f"corrupt or truncated {image.format} image: {exc}") from exc
    if image.format == "PNG" and (missing := missing_pixel_data(data)):
        raise CodecError(f"truncated PNG image: {missing}")  # Pillow left those rows black
    return image


def _to_grayscale(image: Image.Image) -> Image.Image:
    # A broken EXIF block should not reject an otherwise readable image.
    with contextlib.suppress(Exception):
        image = ImageOps.exif_transpose(image) or image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, rgba)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit/float grayscale: scale the full range down to 8 bits instead of clipping.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I") else max(float(array.max()), 1.0)
        return Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return image.convert("L")


def _fit(gray: Image.Image) -> Image.Image:
    width, height = gray.size
    scale = min(IMAGE_SHAPE[1] / width, IMAGE_SHAPE[0] / height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == gray.size:
        return gray
    return gray.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _background(array: np.ndarray) -> int:
    """The median of the outermost ring of pixels: robust to an item touching the edge."""
    if array.shape[0] <= 2 or array.shape[1] <= 2:
        return int(np.median(array))
    ring = np.concatenate([array[0], array[-1], array[1:-1, 0], array[1:-1, -1]])
    return int(np.median(ring))


def _invert_and_pad(array: np.ndarray, invert: str) -> np.ndarray:
    background = _background(array)
    if invert == "always" or (invert == "auto" and background > 127):
        array = 255 - array
        background = 255 - background
    if array.shape == IMAGE_SHAPE:
        return np.ascontiguousarray(array)
    canvas = np.full(IMAGE_SHAPE, background, dtype=np.uint8)
    top = (IMAGE_SHAPE[0] - array.shape[0]) // 2
    left = (IMAGE_SHAPE[1] - array.shape[1]) // 2
    canvas[top : top + array.shape[0], left : left + array.shape[1]] = array
    return canvas


def invert_pixels(images: np.ndarray, invert: str) -> np.ndarray:
    """Apply an ``invert`` choice to uint8 [..., 28, 28] pixel arrays (``auto``: per image, the
    same background rule as for encoded images)."""
    if invert not in INVERT_CHOICES:
        raise CodecError(f"invert must be one of {', '.join(INVERT_CHOICES)}, got {invert!r}")
    if invert == "never":
        return images
    if invert == "always":
        return 255 - images
    flat = images.reshape(-1, *IMAGE_SHAPE)
    light = np.array([_background(image) > 127 for image in flat])
    return np.where(light[:, None, None], 255 - flat, flat).reshape(images.shape).astype(np.uint8)


def pixels_to_image(value: object, *, where: str = "instance 0") -> np.ndarray:
    """JSON pixels (28x28 nested list or flat list of 784 integers 0..255) -> uint8 [28, 28].

    Messages name ``where`` and the offending pixel, e.g. ``instance 3: pixel [4, 17] is 300``.
    """
    return _validate_one(value, where, check_bools=True)


def pixels_to_batch(
    instances: Sequence[object] | np.ndarray,
    *,
    check_bools: bool = True,
    first_index: int = 0,
    only_ints: bool = False,
) -> np.ndarray:
    """A list of JSON images -> uint8 [N, 28, 28], converted and validated in one vectorised pass.

    ``check_bools=False`` skips the per-element scan for JSON booleans (numpy turns ``[1, true]``
    into ``[1, 1]``); callers that know the raw JSON holds no ``true``/``false`` may skip it.
    ``only_ints=True`` promises that every leaf is a Python ``int`` (no float, string or bool):
    numpy then converts straight to int64 without discovering the type of each element, about
    3x faster. A wrong promise would truncate floats, so only callers that checked the raw JSON
    may make it (serving.gateway.parsing does). Errors name ``instance <first_index + i>``.
    """
    count = len(instances)
    if count == 0:
        return np.empty((0, *IMAGE_SHAPE), dtype=np.uint8)
    if only_ints:
        try:
            array = np.array(instances, dtype=np.int64)
        except (ValueError, TypeError, OverflowError):
            array = None  # ragged or not all ints after all: the general path words the error
        if _is_numeric_images(array, batched=True) and array.shape[0] == count:
            return _check_values(array, lambda i: f"instance {first_index + i}", batched=True)
    array = _as_array(instances)
    if _is_numeric_images(array, batched=True) and array.shape[0] == count:
        if check_bools and array.dtype.kind != "b" and _contains_bool(instances):
            # Slow path, rare: find the instance holding the boolean.
            return _per_instance(instances, first_index)
        return _check_values(array, lambda i: f"instance {first_index + i}", batched=True)
    if isinstance(instances, np.ndarray):
        raise CodecError(
            f"expected images of shape [28, 28] or [784], got an array of shape "
            f"{_shape_text(instances.shape)}"
        )
    return _per_instance(instances, first_index)


def _per_instance(instances: Sequence[object], first_index: int) -> np.ndarray:
    # Only reached for mixed layouts or bad input: converts one by one to name the bad instance.
    images = [
        _validate_one(item, f"instance {first_index + i}", check_bools=True)
        for i, item in enumerate(instances)
    ]
    return np.stack(images)


def _validate_one(value: object, where: str, *, check_bools: bool) -> np.ndarray:
    array = _as_array(value)
    if not _is_numeric_images(array, batched=False):
        if array is not None and array.ndim > 0 and array.dtype.kind in "biuf":
            raise CodecError(
                f"{where}: expected a 28x28 image or 784 pixels, got shape "
                f"{_shape_text(array.shape)}"
            )
        raise CodecError(f"{where}: {_describe_bad_structure(value)}")
    if check_bools and array.dtype.kind != "b" and _contains_bool(value):
        raise CodecError(f"{where}: {_describe_bad_structure(value)}")
    return _check_values(array[np.newaxis], lambda _i: where, batched=True)[0]


def _as_array(value: object) -> np.ndarray | None:
    try:
        return np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        return None  # ragged nesting (numpy >= 1.24 raises instead of making an object array)


def _is_numeric_images(array: np.ndarray | None, *, batched: bool) -> bool:
    if array is None or array.dtype.kind not in "biuf":
        return False
    image_shape = array.shape[1:] if batched else array.shape
    return (array.ndim >= 1 or not batched) and image_shape in (IMAGE_SHAPE, (IMAGE_SIZE,))


def _check_values(array: np.ndarray, where, *, batched: bool) -> np.ndarray:
    """Vectorised range/finite/integer checks of a [N, 28, 28] or [N, 784] numeric array."""
    kind = array.dtype.kind
    if kind == "b":
        raise CodecError(f"{where(0)}: pixels must be integers 0..255, got true/false")
    if kind == "f":
        bad = ~np.isfinite(array)
        if not bad.any():
            bad = (array != np.floor(array)) | (array < 0) | (array > 255)
    else:
        bad = (array < 0) | (array > 255)
    if bad.any():
        position = tuple(int(i) for i in np.argwhere(bad)[0])
        value = array[position]
        # 300.0 reads as 300; a float beyond 2**53 stays a float (1e+30): as an int it would
        # show digits the sender never wrote (1000000000000000019884624838656).
        if kind == "f" and abs(value) < 2**53 and value == math.floor(value):
            value = int(value)
        elif kind == "f":
            value = float(value)
        raise CodecError(
            f"{where(position[0])}: pixel {list(position[1:])} is {value}, "
            "expected an integer 0..255"
        )
    return array.astype(np.uint8).reshape(array.shape[0], *IMAGE_SHAPE)


def _contains_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, list | tuple):
        return any(_contains_bool(item) for item in value)
    return False


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _describe_bad_structure(value: Any) -> str:
    """Why a JSON value is not a 28x28 / 784 array of numbers (slow path, errors only)."""
    if not isinstance(value, list | tuple):
        return f"expected a 28x28 list of pixels or 784 pixels, got {_json_type(value)}"
    if len(value) == IMAGE_SIZE or (value and not isinstance(value[0], list | tuple)):
        for i, item in enumerate(value):
            problem = _bad_scalar(item)
            if problem:
                return f"pixel [{i}] {problem}"
        return f"expected 784 pixels, got {len(value)}"
    if len(value) != IMAGE_SHAPE[0]:
        return f"expected 28 rows of 28 pixels (or 784 pixels), got {len(value)} rows"
    for r, row in enumerate(value):
        if not isinstance(row, list | tuple):
            return f"row {r} is {_json_type(row)}, expected a list of 28 pixels"
        if len(row) != IMAGE_SHAPE[1]:
            return f"row {r} has {len(row)} pixels, expected 28"
        for c, item in enumerate(row):
            problem = _bad_scalar(item)
            if problem:
                return f"pixel [{r}, {c}] {problem}"
    return "expected a 28x28 list of integers 0..255"


def _bad_scalar(item: Any) -> str | None:
    if isinstance(item, bool) or not isinstance(item, int | float):
        return f"is {_json_type(item)}, expected an integer 0..255"
    if isinstance(item, float) and (not math.isfinite(item) or item != math.floor(item)):
        return f"is {item}, expected an integer 0..255"
    if not 0 <= item <= 255:
        return f"is {item}, expected an integer 0..255"
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"a string {value[:20]!r}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    return type(value).__name__


def load_array_file(path: str | os.PathLike[str]) -> np.ndarray:
    """A ``.npy`` file of one [28, 28] image or [N, 28, 28] (or [N, 784]) -> uint8 [N, 28, 28]."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CodecError(f"{path}: not a readable .npy array ({exc})") from exc
    if array.ndim == 2 and array.shape == IMAGE_SHAPE:
        array = array[np.newaxis]
    if array.ndim == 1 and array.shape == (IMAGE_SIZE,):
        array = array[np.newaxis]
    if array.ndim < 2:
        raise CodecError(
            f"{path}: expected [28, 28] or [N, 28, 28], got {_shape_text(array.shape)}"
        )
    try:
        return pixels_to_batch(array, check_bools=False)
    except CodecError as exc:
        raise CodecError(f"{path}: {exc}") from exc


def encode_png(image: np.ndarray) -> bytes:
    """A 2-D uint8 array -> PNG bytes (grayscale)."""
    array = np.asarray(image)
    if array.ndim != 2 or array.dtype != np.uint8:
        raise CodecError(f"encode_png needs a 2-D uint8 array, got {array.dtype} {array.shape}")
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
