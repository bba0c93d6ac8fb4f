"""Session fixtures shared by the whole suite.

Exported models for tests: ``models_root`` holds ``fashion_mnist/1`` and ``housing/1``, trained
for 1 epoch on at most 2,000 examples per split. Real data is used when present (Fashion-MNIST
from the usual directories, California housing from HOUSING_DATA or ../shared/data), else small
synthetic files in the real formats, so these fixtures never skip for lack of data.
TensorFlow is imported only when a test asks for one of these fixtures.

Treat ``models_root`` as read-only; to test hot reload, make your own models dir and call
``export_version(models_dir, "fashion_mnist", 2)`` (cheap: no retraining).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE_LIMIT = 2000  # examples per split: enough for sane shapes, ~10 s of training


@pytest.fixture(scope="session")
def fashion_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of the four Fashion-MNIST IDX files: the real ones, else synthetic ones."""
    from training.data import DataError
    from training.data.fashion_mnist import load_fashion_mnist

    try:
        return Path(load_fashion_mnist(allow_download=False).source)
    except DataError:
        return write_synthetic_fashion(tmp_path_factory.mktemp("fashion-mnist"))


def write_synthetic_fashion(directory: Path, n_train: int = 6000, n_test: int = 500) -> Path:
    """Learnable fake Fashion-MNIST (class k lights up rows 2k..2k+5) as gzipped IDX files."""
    from training.data.fashion_mnist import FILES, write_idx

    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 80, (n, 28, 28)).astype(np.uint8)
        for k in range(10):
            images[labels == k, 2 * k : 2 * k + 6, :] += 150
        write_idx(directory / f"{FILES[part + '_images']}.gz", images)
        write_idx(directory / f"{FILES[part + '_labels']}.gz", labels)
    return directory


def real_housing_path() -> Path | None:
    """HOUSING_DATA, else the shared copy beside the checkout, else None."""
    for candidate in (
        os.environ.get("HOUSING_DATA"),
        REPO_ROOT.parent / "shared/data/cal_housing.tgz",
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def real_housing_archive() -> Path | None:
    """The real cal_housing archive/data file when available, else None."""
    return real_housing_path()


@pytest.fixture(scope="session")
def housing_data_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cal_housing.tgz: the real archive, else a synthetic one in the same format."""
    from training.data.housing import synthetic_table, write_cal_housing

    real = real_housing_path()
    if real is not None:
        return real
    path = tmp_path_factory.mktemp("housing") / "cal_housing.tgz"
    write_cal_housing(path, synthetic_table(3000))
    return path


@pytest.fixture(scope="session")
def trained_artifacts(
    tmp_path_factory: pytest.TempPathFactory, fashion_data_dir: Path, housing_data_path: Path
) -> Path:
    """artifacts/<model>/{model.keras,metrics.json,...} for both models (1 epoch, small)."""
    from training.train import MODEL_NAMES, TrainConfig, train_model

    artifacts = tmp_path_factory.mktemp("artifacts")
    config = TrainConfig(
        epochs=1,
        limit=FIXTURE_LIMIT,
        data_dir=str(fashion_data_dir),
        housing_data=str(housing_data_path),
        verbose=0,
    )
    for name in MODEL_NAMES:
        train_model(name, config, artifacts)
    return artifacts


@pytest.fixture(scope="session")
def export_version(trained_artifacts: Path) -> Callable[[Path, str, int], Path]:
    """``export_version(models_dir, model_name, version) -> version dir``, from the session's
    trained models (no retraining)."""
    from training.export import export_model

    def _export(models_dir: Path, model_name: str, version: int) -> Path:
        return export_model(model_name, trained_artifacts, models_dir, version)

    return _export


@pytest.fixture(scope="session")
def models_root(
    tmp_path_factory: pytest.TempPathFactory,
    export_version: Callable[[Path, str, int], Path],
) -> Path:
    """A models dir with fashion_mnist/1 and housing/1 (read-only for tests)."""
    root = tmp_path_factory.mktemp("models")
    for name in ("fashion_mnist", "housing"):
        export_version(root, name, 1)
    return root


@pytest.fixture(scope="session")
def fashion_test_images() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [10000,28,28], labels uint8 [10000]) of the real test set; skips the
    test when Fashion-MNIST is not installed."""
    from training.data import DataError
    from training.data.fashion_mnist import load_fashion_mnist

    try:
        data = load_fashion_mnist(allow_download=False)
    except DataError as exc:
        pytest.skip(f"real Fashion-MNIST not installed: {exc}")
    return data.x_test, data.y_test


class LiveStack:
    """A running model server and gateway over ``models_root`` (see ``live_stack``)."""

    def __init__(
        self, grpc_target: str, gateway_url: str, models_root: Path, rest_url: str = ""
    ) -> None:
        self.grpc_target = grpc_target
        self.gateway_url = gateway_url
        self.models_root = models_root
        self.rest_url = rest_url  # the model server's REST API (tests/security)


@pytest.fixture(scope="session")
def live_stack(models_root: Path):
    """One model server + gateway for the whole session (client tests, the short load test,
    ...): ``.grpc_target`` ("127.0.0.1:port"), ``.gateway_url``, ``.models_root``, ``.rest_url``
    (model server REST). Reuse it instead of starting another stack; treat it as read-only
    (don't reload or stop models)."""
    from tests.helpers import gateway_process, modelserver_process

    with (
        modelserver_process.running_modelserver(models_root) as server,
        gateway_process.running_gateway(server.grpc_target, models_root) as gateway,
    ):
        yield LiveStack(server.grpc_target, gateway.url, models_root, server.rest_url)
