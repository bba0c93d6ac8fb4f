"""Local inputs of the client commands: image files, test-set samples, housing features.

Images go through ``serving.codecs.images``, the one conversion the gateway uses too, so a file
gives the same tensor whichever way it is sent.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.errors import EXIT_USAGE, ClientError
from serving.codecs import CodecError
from serving.codecs import images as image_codec


@dataclass
class ImageBatch:
    """uint8 [N, 28, 28] images with a label per image naming where it came from."""

    images: np.ndarray
    sources: list[str]
    true_labels: np.ndarray | None = None  # class ids, only for --test-images


def load_image_files(paths: list[str], *, invert: str = "auto") -> ImageBatch:
    """PNG/JPEG/... files (decoded and resized like the gateway does) and ``.npy`` arrays
    ([28,28] or [N,28,28]), in the order given."""
    images: list[np.ndarray] = []
    sources: list[str] = []
    for name in paths:
        path = Path(name)
        try:
            if path.suffix.lower() == ".npy":
                array = image_codec.load_array_file(path)
                images.extend(array)
                sources.extend(
                    [name] if len(array) == 1 else [f"{name}[{i}]" for i in range(len(array))]
                )
            else:
                images.append(image_codec.decode_image(path.read_bytes(), invert=invert))
                sources.append(name)
        except FileNotFoundError:
            raise ClientError(f"{name}: no such file", EXIT_USAGE) from None
        except IsADirectoryError:
            raise ClientError(
                f"{name}: is a directory, expected an image file", EXIT_USAGE
            ) from None
        except OSError as exc:
            raise ClientError(f"{name}: cannot read ({exc.strerror or exc})", EXIT_USAGE) from None
        except CodecError as exc:
            # The .npy reader's messages already start with the path.
            message = str(exc)
            if not message.startswith(f"{path}: "):
                message = f"{name}: {message}"
            raise ClientError(message, EXIT_USAGE) from None
    if not images:
        raise ClientError("no images given", EXIT_USAGE)
    return ImageBatch(np.stack(images).astype(np.uint8, copy=False), sources)


def sample_test_images(count: int, *, seed: int | None, data_dir: str | None) -> ImageBatch:
    """``count`` distinct random images of the Fashion-MNIST test set, with their labels."""
    # The training loader is TensorFlow-free unless it has to download (which we forbid here).
    from training.data import DataError
    from training.data.fashion_mnist import load_fashion_mnist

    try:
        data = load_fashion_mnist(data_dir, allow_download=False)
    except DataError as exc:
        raise ClientError(f"--test-images: {exc}", EXIT_USAGE) from None
    total = len(data.x_test)
    if not 1 <= count <= total:
        raise ClientError(f"--test-images: expected 1..{total}, got {count}", EXIT_USAGE)
    indices = np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))
    return ImageBatch(
        data.x_test[indices],
        [f"test[{i}]" for i in indices],
        true_labels=data.y_test[indices].astype(np.int64),
    )


def parse_feature_string(text: str) -> dict[str, float]:
    """``"MedInc=8.3,HouseAge=41,..."`` -> {name: value}; names are checked by the caller."""
    values: dict[str, float] = {}
    if not text.strip(" ,"):
        raise ClientError("--features: empty, expected NAME=VALUE,...", EXIT_USAGE)
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ClientError(f"--features: expected NAME=VALUE, got {item!r}", EXIT_USAGE)
        if name in values:
            raise ClientError(f"--features: {name} given twice", EXIT_USAGE)
        values[name] = _parse_number(raw, f"--features {name}")
    return values


def _parse_number(raw: str, where: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ClientError(f"{where}: not a number: {raw.strip()!r}", EXIT_USAGE) from None
    if not math.isfinite(value):
        raise ClientError(f"{where}: must be a finite number, got {raw.strip()!r}", EXIT_USAGE)
    return value


def read_feature_csv(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """Rows of a CSV file whose header names the features (any column order)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ClientError(f"{path}: empty CSV file, expected a header row", EXIT_USAGE)
            header = [h.strip() for h in header]
            duplicates = sorted({h for h in header if header.count(h) > 1})
            if duplicates:
                raise ClientError(f"{path}: duplicate columns {', '.join(duplicates)}", EXIT_USAGE)
            rows = []
            for line_no, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue  # blank lines, e.g. a trailing newline
                if len(row) != len(header):
                    raise ClientError(
                        f"{path}:{line_no}: {len(row)} values for {len(header)} columns",
                        EXIT_USAGE,
                    )
                rows.append(
                    {
                        name: _parse_number(cell, f"{path}:{line_no} {name}")
                        for name, cell in zip(header, row, strict=True)
                    }
                )
    except FileNotFoundError:
        raise ClientError(f"{path}: no such file", EXIT_USAGE) from None
    except UnicodeDecodeError:
        raise ClientError(f"{path}: not a UTF-8 text CSV file", EXIT_USAGE) from None
    except csv.Error as exc:
        raise ClientError(f"{path}: bad CSV ({exc})", EXIT_USAGE) from None
    except OSError as exc:
        raise ClientError(f"{path}: cannot read ({exc.strerror or exc})", EXIT_USAGE) from None
    if not rows:
        raise ClientError(f"{path}: no data rows after the header", EXIT_USAGE)
    return rows


def image_batch(args: argparse.Namespace) -> ImageBatch:
    """The images of a predict command: IMAGE files or --test-images N."""
    if args.test_images is not None:
        if args.images:
            raise ClientError("give IMAGE files or --test-images N, not both", EXIT_USAGE)
        return sample_test_images(args.test_images, seed=args.seed, data_dir=args.data_dir)
    if not args.images:
        raise ClientError("nothing to predict: give IMAGE files or --test-images N", EXIT_USAGE)
    return load_image_files(args.images, invert=args.invert)


def true_names(batch: ImageBatch) -> list[str] | None:
    if batch.true_labels is None:
        return None
    from training.data.fashion_mnist import CLASS_NAMES

    return [CLASS_NAMES[int(i)] for i in batch.true_labels]


def feature_rows(args: argparse.Namespace) -> list[dict[str, float]]:
    """Rows of named features from ``--features`` or ``--csv`` (names checked later)."""
    if (args.features is None) == (args.csv is None):
        raise ClientError("give exactly one of --features NAME=VALUE,... or --csv FILE", EXIT_USAGE)
    if args.features is not None:
        return [parse_feature_string(args.features)]
    return read_feature_csv(args.csv)
