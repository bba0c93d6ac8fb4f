"""Fixtures of the client tests: running the CLI in-process, test inputs, unreachable servers."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from client_helpers import Result

from client.cli import main
from serving.codecs.images import encode_png


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """``cli("grpc", "predict", ...)`` runs ``python -m client`` in-process."""

    def run(*argv: str) -> Result:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def sample_images(fashion_data_dir: Path) -> np.ndarray:
    """A few Fashion-MNIST test images (real, or the synthetic fixture data)."""
    from training.data.fashion_mnist import load_from_dir

    return load_from_dir(fashion_data_dir).x_test[:3]


@pytest.fixture
def image_files(tmp_path: Path, sample_images: np.ndarray) -> dict[str, Path]:
    """A PNG per sample image (dark background, like Fashion-MNIST), and one .npy of all."""
    files = {}
    for i, image in enumerate(sample_images):
        path = tmp_path / f"item{i}.png"
        path.write_bytes(encode_png(image))
        files[f"png{i}"] = path
    files["npy"] = tmp_path / "batch.npy"
    np.save(files["npy"], sample_images)
    files["not_an_image"] = tmp_path / "notes.png"
    files["not_an_image"].write_text("this is not a PNG\n")
    return files


@pytest.fixture
def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def blackhole() -> Iterator[str]:
    """``127.0.0.1:port`` that accepts TCP connections (kernel backlog) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"127.0.0.1:{s.getsockname()[1]}"
