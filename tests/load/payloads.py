"""Request bodies for the load test, built once per locust process so the users only send.

Images are real Fashion-MNIST test images when the data set is installed, else generated ones
(same shape and dtype); housing rows are real California districts when ``HOUSING_DATA`` points
at the archive, else plausible generated rows. Every body goes through the shared codecs.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import orjson
import urllib3

from serving.codecs.images import encode_png

#: Distinct payloads per kind; users cycle through them (enough to defeat any caching).
POOL_SIZE = 256


def fashion_images(count: int = POOL_SIZE, seed: int = 0) -> tuple[np.ndarray, str]:
    """uint8 [count, 28, 28] images and where they came from."""
    from training.data import DataError
    from training.data.fashion_mnist import load_fashion_mnist

    rng = np.random.default_rng(seed)
    try:
        data = load_fashion_mnist(allow_download=False)
    except DataError:
        # Generated: a bright blob on a dark background, roughly like an item of clothing.
        images = rng.integers(0, 40, (count, 28, 28)).astype(np.uint8)
        for image in images:
            top, left = rng.integers(2, 10, 2)
            image[top : top + 16, left : left + 12] += rng.integers(100, 200, dtype=np.uint8)
        return images, "generated images"
    index = rng.choice(len(data.x_test), size=count, replace=False)
    return data.x_test[index], f"Fashion-MNIST test set ({data.source})"


def housing_rows(count: int = POOL_SIZE, seed: int = 0) -> tuple[list[dict[str, float]], str]:
    """``count`` districts as {feature name: value} and where they came from."""
    from training.data import DataError
    from training.data.housing import FEATURE_NAMES, load_housing

    rng = np.random.default_rng(seed)
    try:
        data = load_housing(os.environ.get("HOUSING_DATA") or None, allow_download=False)
        table = data.features[rng.choice(len(data.features), size=count, replace=False)]
        source = f"California housing ({data.source})"
    except DataError:
        table = np.column_stack(
            [
                rng.uniform(0.5, 15.0, count),  # MedInc, $10k
                rng.integers(1, 53, count),  # HouseAge
                rng.uniform(3.0, 8.0, count),  # AveRooms
                rng.uniform(0.8, 1.3, count),  # AveBedrms
                rng.integers(100, 5000, count),  # Population
                rng.uniform(1.5, 4.0, count),  # AveOccup
                rng.uniform(32.5, 42.0, count),  # Latitude
                rng.uniform(-124.3, -114.3, count),  # Longitude
            ]
        )
        source = "generated districts"
    rows = [
        {n: round(float(v), 6) for n, v in zip(FEATURE_NAMES, row, strict=True)} for row in table
    ]
    return rows, source


@dataclass
class Payloads:
    """Ready-to-send bodies; ``next_*`` cycle through them (greenlet-safe: no yields inside)."""

    arrays: list[np.ndarray]  # [batch, 28, 28] uint8 per request (gRPC)
    json_bodies: list[bytes]  # {"instances": [...]} per request (gateway JSON)
    multipart_bodies: list[tuple[bytes, str]]  # (body, content type) per request (gateway upload)
    housing_bodies: list[bytes]
    image_source: str
    housing_source: str

    def __post_init__(self) -> None:
        self._cycles: dict[str, Iterator] = {
            "array": itertools.cycle(self.arrays),
            "json": itertools.cycle(self.json_bodies),
            "multipart": itertools.cycle(self.multipart_bodies),
            "housing": itertools.cycle(self.housing_bodies),
        }

    def next_array(self) -> np.ndarray:
        return next(self._cycles["array"])

    def next_json(self) -> bytes:
        return next(self._cycles["json"])

    def next_multipart(self) -> tuple[bytes, str]:
        return next(self._cycles["multipart"])

    def next_housing(self) -> bytes:
        return next(self._cycles["housing"])


def build_payloads(batch: int = 1, *, upload_field: str = "image") -> Payloads:
    """Bodies of ``batch`` instances each (uploads are always one image: one file per request)."""
    images, image_source = fashion_images()
    rows, housing_source = housing_rows()
    starts = range(0, len(images) - batch + 1, batch)
    arrays = [np.ascontiguousarray(images[s : s + batch]) for s in starts]
    json_bodies = [orjson.dumps({"instances": a.tolist()}) for a in arrays]
    multipart = []
    for i, image in enumerate(images):
        body, content_type = urllib3.encode_multipart_formdata(
            {upload_field: (f"item{i}.png", encode_png(image), "image/png")}
        )
        multipart.append((body, content_type))
    housing_bodies = [
        orjson.dumps({"instances": rows[s : s + batch]})
        for s in range(0, len(rows) - batch + 1, batch)
    ]
    return Payloads(arrays, json_bodies, multipart, housing_bodies, image_source, housing_source)
