"""Fashion-MNIST from the four standard IDX files, with the Keras download as a last resort.

Lookup order (first directory holding all four files wins):
  1. the explicit ``data_dir`` argument (``--data-dir``), else ``$FASHION_MNIST_DIR``
  2. ``~/.keras/datasets/fashion-mnist`` (where ``keras.datasets`` caches it)
  3. ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``)
  4. ``keras.datasets.fashion_mnist.load_data()`` (downloads; needs the network)
Each file may be gzipped (``*.gz``) or plain; the gzipped name is tried first.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.data import DataError

CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
VALIDATION_SIZE = 5000
# Searched after --data-dir / $FASHION_MNIST_DIR: the keras cache, then the Debian package.
STANDARD_DIRS = ("~/.keras/datasets/fashion-mnist", "/usr/share/datasets/fashion-mnist")
HOW_TO_GET = (
    "install the Debian package dataset-fashion-mnist, or put the four IDX files "
    "(train-images-idx3-ubyte.gz, ...) in a directory and pass --data-dir / FASHION_MNIST_DIR"
)


@dataclass
class FashionMNIST:
    """Raw arrays as stored: images uint8 [N,28,28], labels uint8 [N]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    sha256: str
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256


@dataclass
class FashionSplits:
    """Training-ready splits; images still uint8 (the model input scales them)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def default_search_dirs(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Directories searched, in order; an explicit directory replaces the env variable."""
    explicit = data_dir or os.environ.get("FASHION_MNIST_DIR")
    dirs = [Path(explicit).expanduser()] if explicit else []
    return dirs + [Path(d).expanduser() for d in STANDARD_DIRS]


def _find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:  # gzip raises BadGzipFile (OSError) or EOFError
        raise DataError(f"{path}: cannot read ({exc}); re-download it: {HOW_TO_GET}") from exc


def parse_idx(data: bytes, *, magic: int, item_shape: tuple[int, ...], where: str) -> np.ndarray:
    """Parse one IDX file (big-endian header: magic, count, then the item dimensions)."""
    ndim = 1 + len(item_shape)
    header_len = 4 * (1 + ndim)
    if len(data) < header_len:
        raise DataError(f"{where}: truncated IDX header ({len(data)} bytes); {HOW_TO_GET}")
    header = np.frombuffer(data, dtype=">u4", count=1 + ndim)
    if int(header[0]) != magic:
        raise DataError(
            f"{where}: bad IDX magic number {int(header[0])} (expected {magic}); "
            f"not a Fashion-MNIST file of this kind; {HOW_TO_GET}"
        )
    count, dims = int(header[1]), tuple(int(d) for d in header[2:])
    if dims != item_shape:
        raise DataError(f"{where}: item shape {dims}, expected {item_shape}; {HOW_TO_GET}")
    expected = header_len + count * int(np.prod(item_shape, dtype=np.int64))
    if len(data) != expected:
        raise DataError(
            f"{where}: {len(data)} bytes but the header announces {count} items "
            f"({expected} bytes): truncated or corrupt; {HOW_TO_GET}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape((count, *item_shape))


def load_from_dir(directory: str | os.PathLike[str]) -> FashionMNIST:
    """Load and validate the four IDX files in ``directory``."""
    directory = Path(directory)
    arrays: dict[str, np.ndarray] = {}
    hashes: dict[str, str] = {}
    combined = hashlib.sha256()
    for key, stem in FILES.items():
        path = _find_file(directory, stem)
        if path is None:
            raise DataError(f"{directory}: missing {stem}(.gz); {HOW_TO_GET}")
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        hashes[path.name] = digest
        combined.update(digest.encode())
        data = _read_bytes(path)
        if key.endswith("images"):
            arrays[key] = parse_idx(data, magic=IMAGES_MAGIC, item_shape=(28, 28), where=str(path))
        else:
            arrays[key] = parse_idx(data, magic=LABELS_MAGIC, item_shape=(), where=str(path))
    for part in ("train", "test"):
        n_img, n_lab = len(arrays[f"{part}_images"]), len(arrays[f"{part}_labels"])
        if n_img != n_lab:
            raise DataError(
                f"{directory}: {part} set has {n_img} images but {n_lab} labels; {HOW_TO_GET}"
            )
        if n_lab and int(arrays[f"{part}_labels"].max()) >= len(CLASS_NAMES):
            raise DataError(f"{directory}: {part} labels outside 0..9; {HOW_TO_GET}")
    return FashionMNIST(
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
        source=str(directory.resolve()),
        sha256=combined.hexdigest(),
        files=hashes,
    )


def _has_any(directory: Path) -> bool:
    return any(_find_file(directory, stem) for stem in FILES.values())


def load_fashion_mnist(
    data_dir: str | os.PathLike[str] | None = None, *, allow_download: bool = True
) -> FashionMNIST:
    """Find and load Fashion-MNIST (see the module docstring for the lookup order).

    An explicitly named directory must hold the data: it is never silently skipped.
    A directory holding only some of the files is an error, not a reason to look further.
    """
    dirs = default_search_dirs(data_dir)
    explicit = bool(data_dir or os.environ.get("FASHION_MNIST_DIR"))
    for i, directory in enumerate(dirs):
        if (explicit and i == 0) or (directory.is_dir() and _has_any(directory)):
            if not directory.is_dir():
                raise DataError(f"{directory}: no such directory; {HOW_TO_GET}")
            return load_from_dir(directory)
    if not allow_download:
        raise DataError(
            "Fashion-MNIST not found in " + ", ".join(str(d) for d in dirs) + f"; {HOW_TO_GET}"
        )
    return _download(dirs)


def _download(dirs: list[Path]) -> FashionMNIST:
    import keras  # only on the online fallback: importing keras is slow

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    except Exception as exc:  # any network failure becomes the one clear error
        raise DataError(
            "Fashion-MNIST not found in "
            + ", ".join(str(d) for d in dirs)
            + f" and the download failed ({exc}); {HOW_TO_GET}"
        ) from exc
    digest = hashlib.sha256()
    for a in (x_train, y_train, x_test, y_test):
        digest.update(np.ascontiguousarray(a).tobytes())
    return FashionMNIST(
        x_train,
        y_train,
        x_test,
        y_test,
        source="keras.datasets.fashion_mnist.load_data()",
        sha256=digest.hexdigest(),
    )


def split(data: FashionMNIST, limit: int | None = None) -> FashionSplits:
    """Validation = the first 5,000 training images; test = the 10,000 test images.

    ``limit`` keeps at most that many examples of each split (for quick runs and tests).
    """
    if len(data.x_train) <= VALIDATION_SIZE:
        raise DataError(
            f"{data.source}: only {len(data.x_train)} training images; need more than "
            f"{VALIDATION_SIZE} to hold out the validation set"
        )
    cut = slice(None, limit)
    return FashionSplits(
        x_train=data.x_train[VALIDATION_SIZE:][cut],
        y_train=data.y_train[VALIDATION_SIZE:][cut],
        x_valid=data.x_train[:VALIDATION_SIZE][cut],
        y_valid=data.y_train[:VALIDATION_SIZE][cut],
        x_test=data.x_test[cut],
        y_test=data.y_test[cut],
    )


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write uint8 ``array`` as an IDX file (gzipped when the name ends in .gz).

    Used by tests and fixtures to create small files in the real format.
    """
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = IMAGES_MAGIC if array.ndim == 3 else LABELS_MAGIC
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
