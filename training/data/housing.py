"""California housing from the original StatLib archive, built exactly as scikit-learn does.

Lookup order:
  1. the explicit ``path`` argument (``--housing-data``), else ``$HOUSING_DATA``: either the
     archive ``cal_housing.tgz`` or the extracted ``cal_housing.data``
  2. ``sklearn.datasets.fetch_california_housing()`` (its cache, else a download)

The 8 features and the target match ``fetch_california_housing`` bit for bit: same parser
(``np.loadtxt``, float64), same column order, same divisions in the same order.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data import DataError

FEATURE_NAMES = [
    "MedInc",
    "HouseAge",
    "AveRooms",
    "AveBedrms",
    "Population",
    "AveOccup",
    "Latitude",
    "Longitude",
]
WIDE_FEATURES = FEATURE_NAMES[:5]  # model input "wide" = features[:, :5]
DEEP_FEATURES = FEATURE_NAMES[2:]  # model input "deep" = features[:, 2:]
TARGET = "median house value in $100k"
ARCHIVE_MEMBER = "CaliforniaHousing/cal_housing.data"
# Raw columns: longitude, latitude, housingMedianAge, totalRooms, totalBedrooms,
# population, households, medianIncome, medianHouseValue. Reordered to target first:
COLUMNS_INDEX = [8, 7, 2, 3, 4, 5, 6, 1, 0]
SPLIT_SEED = 42  # fixed so every run (and every exported version) is evaluated on the same rows
HOW_TO_GET = (
    "point --housing-data / HOUSING_DATA at the StatLib archive cal_housing.tgz "
    "(https://ndownloader.figshare.com/files/5976036) or the extracted cal_housing.data"
)


@dataclass
class Housing:
    features: np.ndarray  # float64 [N, 8], FEATURE_NAMES order
    target: np.ndarray  # float64 [N], in $100k
    source: str
    sha256: str


@dataclass
class HousingSplits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _read_raw(path: Path) -> bytes:
    """The bytes of cal_housing.data, from the archive or the plain file."""
    try:
        if tarfile.is_tarfile(path):
            with tarfile.open(path, mode="r:*") as tar:
                try:
                    member = tar.extractfile(ARCHIVE_MEMBER)
                except KeyError:
                    member = None
                if member is None:
                    raise DataError(f"{path}: archive has no {ARCHIVE_MEMBER}; {HOW_TO_GET}")
                return member.read()
        return path.read_bytes()
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise DataError(f"{path}: cannot read ({exc}); {HOW_TO_GET}") from exc


def parse_cal_housing(raw: bytes, *, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Turn cal_housing.data text into (features [N,8], target [N]) like scikit-learn."""
    try:
        with warnings.catch_warnings():
            # An empty file: numpy warns (two lines on stderr), then the shape check below says so.
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(io.BytesIO(raw), delimiter=",", ndmin=2)
    except ValueError as exc:
        raise DataError(f"{where}: not cal_housing.data ({exc}); {HOW_TO_GET}") from exc
    if table.shape[0] == 0 or table.shape[1] != 9:
        raise DataError(
            f"{where}: expected rows of 9 comma-separated numbers, got shape {table.shape}; "
            f"{HOW_TO_GET}"
        )
    if not np.isfinite(table).all():
        raise DataError(f"{where}: contains non-finite values; {HOW_TO_GET}")
    table = table[:, COLUMNS_INDEX]
    target, data = table[:, 0], table[:, 1:]
    if (data[:, 5] <= 0).any():
        raise DataError(f"{where}: households must be positive; {HOW_TO_GET}")
    # Same in-place operations, in the same order, as sklearn's fetch_california_housing.
    data[:, 2] /= data[:, 5]  # total rooms -> average rooms per household
    data[:, 3] /= data[:, 5]  # total bedrooms -> average bedrooms per household
    data[:, 5] = data[:, 4] / data[:, 5]  # households -> average occupancy
    target = target / 100000.0
    return data, target


def load_from_file(path: str | os.PathLike[str]) -> Housing:
    path = Path(path).expanduser()
    if not path.is_file():
        what = "a directory, not a file" if path.is_dir() else "no such file"
        raise DataError(f"{path}: {what}; {HOW_TO_GET}")
    features, target = parse_cal_housing(_read_raw(path), where=str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Housing(features, target, source=str(path.resolve()), sha256=digest)


def load_housing(
    path: str | os.PathLike[str] | None = None, *, allow_download: bool = True
) -> Housing:
    """Find and load the data (see the module docstring for the lookup order)."""
    path = path or os.environ.get("HOUSING_DATA")
    if path:
        return load_from_file(path)
    if not allow_download:
        raise DataError(f"California housing: no --housing-data / HOUSING_DATA given; {HOW_TO_GET}")
    try:
        from sklearn.datasets import fetch_california_housing

        features, target = fetch_california_housing(return_X_y=True)
    except Exception as exc:  # offline, or a broken cache: one clear error
        raise DataError(
            f"California housing: no --housing-data / HOUSING_DATA given and "
            f"sklearn.datasets.fetch_california_housing() failed ({exc}); {HOW_TO_GET}"
        ) from exc
    digest = hashlib.sha256(np.ascontiguousarray(features).tobytes())
    digest.update(np.ascontiguousarray(target).tobytes())
    return Housing(
        features,
        target,
        source="sklearn.datasets.fetch_california_housing()",
        sha256=digest.hexdigest(),
    )


def split(data: Housing, *, seed: int = SPLIT_SEED, limit: int | None = None) -> HousingSplits:
    """Like the seed: train_test_split(random_state=seed), then split train again.

    Default sizes (sklearn's test_size=0.25 twice): 11,610 train, 3,870 valid, 5,160 test.
    ``limit`` keeps at most that many rows of each split.
    """
    from sklearn.model_selection import train_test_split

    if len(data.target) < 8:
        raise DataError(f"{data.source}: only {len(data.target)} rows; too few to split")
    x_full, x_test, y_full, y_test = train_test_split(data.features, data.target, random_state=seed)
    x_train, x_valid, y_train, y_valid = train_test_split(x_full, y_full, random_state=seed)
    cut = slice(None, limit)
    return HousingSplits(
        x_train[cut], y_train[cut], x_valid[cut], y_valid[cut], x_test[cut], y_test[cut]
    )


def write_cal_housing(path: str | os.PathLike[str], table: np.ndarray) -> None:
    """Write a raw 9-column table in the StatLib format (.data, or .tgz archive).

    Used by tests and fixtures to create small files in the real format.
    """
    text = "\n".join(",".join(f"{v:.6f}" for v in row) for row in table).encode() + b"\n"
    path = Path(path)
    if path.name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(path, "w:gz") as tar:
            info = tarfile.TarInfo(ARCHIVE_MEMBER)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    else:
        path.write_bytes(text)


def synthetic_table(n: int, seed: int = 0) -> np.ndarray:
    """A plausible raw 9-column table (for fixtures when the real data is absent)."""
    rng = np.random.default_rng(seed)
    households = rng.integers(50, 2000, n).astype(float)
    income = rng.uniform(0.5, 15.0, n)
    rooms = households * rng.uniform(3.0, 8.0, n)
    return np.column_stack(
        [
            rng.uniform(-124.3, -114.3, n),  # longitude
            rng.uniform(32.5, 42.0, n),  # latitude
            rng.integers(1, 53, n).astype(float),  # housing median age
            np.round(rooms),
            np.round(rooms * rng.uniform(0.15, 0.25, n)),  # bedrooms
            np.round(households * rng.uniform(1.5, 4.0, n)),  # population
            households,
            income,
            np.clip(income * 40000 + rng.normal(0, 30000, n), 15000, 500001),  # value
        ]
    )
