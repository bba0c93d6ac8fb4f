"""Dataset loaders on small files written here, in the real formats; no network."""

from __future__ import annotations

import gzip
import shutil
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from training.data import DataError, fashion_mnist, housing
from training.data.fashion_mnist import FILES, write_idx


def write_fashion(directory: Path, n_train: int = 12, n_test: int = 6, gz: bool = True) -> dict:
    rng = np.random.default_rng(1)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for key, array in arrays.items():
        write_idx(directory / (FILES[key] + (".gz" if gz else "")), array)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_roundtrip(tmp_path: Path, gz: bool) -> None:
    arrays = write_fashion(tmp_path, gz=gz)
    data = fashion_mnist.load_from_dir(tmp_path)
    np.testing.assert_array_equal(data.x_train, arrays["train_images"])
    np.testing.assert_array_equal(data.y_train, arrays["train_labels"])
    np.testing.assert_array_equal(data.x_test, arrays["test_images"])
    np.testing.assert_array_equal(data.y_test, arrays["test_labels"])
    assert data.x_train.dtype == np.uint8 and data.x_train.shape == (12, 28, 28)
    assert len(data.sha256) == 64 and len(data.files) == 4


def test_fashion_explicit_dir_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fashion(tmp_path)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    assert fashion_mnist.load_fashion_mnist(allow_download=False).source == str(tmp_path)


def _corrupt(directory: Path, stem: str, data: bytes) -> Path:
    path = directory / (stem + ".gz")
    with gzip.open(path, "wb") as f:
        f.write(data)
    return path


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bad_magic", "magic"),
        ("truncated_data", "truncated"),
        ("truncated_header", "header"),
        ("wrong_dims", "shape"),
        ("truncated_gzip", "cannot read"),
        ("not_gzip", "cannot read"),
        ("count_mismatch", "labels"),
        ("missing", "missing"),
        ("label_range", "labels outside"),
    ],
)
def test_fashion_corrupt_files(tmp_path: Path, case: str, expected: str) -> None:
    write_fashion(tmp_path)
    stem = FILES["train_images"]
    target = tmp_path / (stem + ".gz")
    good = gzip.decompress(target.read_bytes())
    if case == "bad_magic":
        _corrupt(tmp_path, stem, b"\x00\x00\x08\x01" + good[4:])
    elif case == "truncated_data":
        _corrupt(tmp_path, stem, good[:-100])
    elif case == "truncated_header":
        _corrupt(tmp_path, stem, good[:10])
    elif case == "wrong_dims":
        header = np.array([2051, 12, 14, 56], dtype=">u4").tobytes()
        _corrupt(tmp_path, stem, header + good[16:])
    elif case == "truncated_gzip":
        target.write_bytes(target.read_bytes()[:-200])
    elif case == "not_gzip":
        target.write_bytes(b"this is not gzip data at all")
    elif case == "count_mismatch":
        write_idx(tmp_path / (FILES["train_labels"] + ".gz"), np.zeros(11, np.uint8))
    elif case == "missing":
        target.unlink()
    elif case == "label_range":
        write_idx(tmp_path / (FILES["train_labels"] + ".gz"), np.full(12, 10, np.uint8))
    with pytest.raises(DataError, match=expected) as err:
        fashion_mnist.load_from_dir(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "dataset-fashion-mnist" in message
    assert "\n" not in message


def test_fashion_not_found_names_every_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    nowhere = (str(tmp_path / "a"), str(tmp_path / "b"))
    monkeypatch.setattr(fashion_mnist, "STANDARD_DIRS", nowhere)
    with pytest.raises(DataError) as err:
        fashion_mnist.load_fashion_mnist(allow_download=False)
    assert all(d in str(err.value) for d in nowhere)
    assert "--data-dir" in str(err.value)


def test_fashion_missing_explicit_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such directory"):
        fashion_mnist.load_fashion_mnist(tmp_path / "absent", allow_download=False)


def test_fashion_split() -> None:
    n = fashion_mnist.VALIDATION_SIZE + 30
    x = np.arange(n, dtype=np.uint32).astype(np.uint8)[:, None, None] * np.ones(
        (1, 28, 28), np.uint8
    )
    y = np.arange(n) % 10
    data = fashion_mnist.FashionMNIST(x, y, x[:7], y[:7], source="mem", sha256="")
    s = fashion_mnist.split(data)
    assert len(s.x_valid) == fashion_mnist.VALIDATION_SIZE and len(s.x_train) == 30
    np.testing.assert_array_equal(s.y_valid, y[: fashion_mnist.VALIDATION_SIZE])
    np.testing.assert_array_equal(s.y_train, y[fashion_mnist.VALIDATION_SIZE :])
    limited = fashion_mnist.split(data, limit=5)
    assert [len(a) for a in (limited.x_train, limited.x_valid, limited.x_test)] == [5, 5, 5]
    small = fashion_mnist.FashionMNIST(x[:100], y[:100], x[:7], y[:7], source="mem", sha256="")
    with pytest.raises(DataError, match="validation"):
        fashion_mnist.split(small)


# --- California housing -------------------------------------------------------------------


def test_housing_archive_and_data_file_agree(tmp_path: Path) -> None:
    table = housing.synthetic_table(50, seed=3)
    housing.write_cal_housing(tmp_path / "cal_housing.tgz", table)
    housing.write_cal_housing(tmp_path / "cal_housing.data", table)
    a = housing.load_from_file(tmp_path / "cal_housing.tgz")
    b = housing.load_from_file(tmp_path / "cal_housing.data")
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.target, b.target)
    assert a.features.shape == (50, 8) and a.features.dtype == np.float64
    # Recompute the documented features from the raw columns as written (6 decimals).
    raw = np.loadtxt(tmp_path / "cal_housing.data", delimiter=",")
    lon, lat, age, rooms, beds, pop, hh, inc, val = raw.T
    expected = np.column_stack([inc, age, rooms / hh, beds / hh, pop, pop / hh, lat, lon])
    np.testing.assert_allclose(a.features, expected, rtol=1e-12)
    np.testing.assert_allclose(a.target, val / 100000.0, rtol=1e-12)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"1,2,3\n4,5,6\n", "9 comma-separated"),
        (b"1,2,3,4,5,6,7,8,x\n", "not cal_housing.data"),
        (b"1,2,3,4,5,6,0,8,9\n", "households"),
        (b"1,2,3,4,5,6,7,8,nan\n", "non-finite"),
    ],
)
def test_housing_bad_data(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "cal_housing.data"
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected) as err:
        housing.load_from_file(path)
    assert str(path) in str(err.value) and "HOUSING_DATA" in str(err.value)


def test_housing_bad_archives(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.tgz"
    with tarfile.open(wrong, "w:gz") as tar:
        tar.add(__file__, arcname="other.txt")
    with pytest.raises(DataError, match="archive has no"):
        housing.load_from_file(wrong)
    good = tmp_path / "cal_housing.tgz"
    housing.write_cal_housing(good, housing.synthetic_table(2000))
    truncated = tmp_path / "truncated.tgz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"truncated\.tgz"):
        housing.load_from_file(truncated)
    with pytest.raises(DataError, match="no such file"):
        housing.load_from_file(tmp_path / "absent.tgz")


def test_housing_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cal_housing.data"
    housing.write_cal_housing(path, housing.synthetic_table(20))
    monkeypatch.setenv("HOUSING_DATA", str(path))
    assert housing.load_housing(allow_download=False).source == str(path)
    monkeypatch.delenv("HOUSING_DATA")
    with pytest.raises(DataError, match="HOUSING_DATA"):
        housing.load_housing(allow_download=False)


def test_housing_split_is_seeded_and_disjoint(tmp_path: Path) -> None:
    path = tmp_path / "cal_housing.data"
    housing.write_cal_housing(path, housing.synthetic_table(400, seed=5))
    data = housing.load_from_file(path)
    a, b = housing.split(data), housing.split(data)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    # test = 25 % of all rows, valid = 25 % of the rest (sklearn's default test_size twice).
    assert (len(a.x_train), len(a.x_valid), len(a.x_test)) == (225, 75, 100)
    rows = np.concatenate([a.x_train, a.x_valid, a.x_test])
    np.testing.assert_array_equal(np.unique(rows, axis=0), np.unique(data.features, axis=0))
    assert not np.array_equal(housing.split(data, seed=1).x_test, a.x_test)
    limited = housing.split(data, limit=10)
    assert len(limited.x_train) == len(limited.x_valid) == len(limited.x_test) == 10


def test_housing_matches_scikit_learn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_housing_archive: Path | None
) -> None:
    """Our parser and sklearn's fetch_california_housing give identical arrays.

    sklearn (>= 1.6) reuses an archive already in data_home when its sha256 matches, so copying
    the real archive there makes the comparison run offline; the download function is replaced
    so a network attempt fails loudly instead of hanging.
    """
    real = real_housing_archive
    if real is None or not tarfile.is_tarfile(real):
        pytest.skip("the real cal_housing.tgz is not available (set HOUSING_DATA)")
    import sklearn.datasets._base as sk_base
    from sklearn.datasets import fetch_california_housing

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("scikit-learn tried to download")

    monkeypatch.setattr(sk_base, "urlretrieve", no_network)
    shutil.copy(real, tmp_path / "cal_housing.tgz")
    sk_x, sk_y = fetch_california_housing(data_home=tmp_path, return_X_y=True)
    ours = housing.load_from_file(real)
    assert ours.features.dtype == sk_x.dtype and ours.target.dtype == sk_y.dtype
    np.testing.assert_array_equal(ours.features, sk_x)
    np.testing.assert_array_equal(ours.target, sk_y)
    s = housing.split(ours)
    assert (len(s.x_train), len(s.x_valid), len(s.x_test)) == (11610, 3870, 5160)


def test_cli_train_data_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.__main__ import main

    art = str(tmp_path / "art")
    argv = ["train", "--artifacts-dir", art, "--model", "fashion_mnist", "--data-dir"]
    assert main([*argv, str(tmp_path / "absent")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "absent" in err
    bad = tmp_path / "cal_housing.data"
    bad.write_text("1,2,3\n")
    argv = ["train", "--artifacts-dir", art, "--model", "housing", "--housing-data", str(bad)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "0"])
    assert (
        exit_info.value.code == 2 and "expected an integer >= 1, got '0'" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "--epochs", "abc"], "--epochs: expected an integer >= 1, got 'abc'"),
        (
            ["train", "--learning-rate", "inf"],
            "expected a number > 0, got 'inf'",
        ),  # trained with inf
        (["train", "--learning-rate", "nan"], "expected a number > 0, got 'nan'"),
        (["train", "--seed", "x"], "--seed: expected an integer 0..4294967295, got 'x'"),
        (["train", "--seed", "-1"], "--seed: expected an integer 0..4294967295"),  # numpy's range
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (
            ["export", "--version", str(2**63)],
            "--version: expected an integer 1..9223372036854775807",
        ),
        ([], "required: command"),
    ],
)
def test_cli_bad_flags_are_one_line(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and fragment in err, err


def test_cli_unusable_artifacts_dir_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.__main__ import main

    file = tmp_path / "a-file"
    file.write_text("")
    argv = ["train", "--model", "housing", "--artifacts-dir", str(file)]
    assert main([*argv, "--housing-data", str(tmp_path / "absent.tgz")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "a-file" in err, err


def test_housing_empty_or_directory_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "cal_housing.data"
    empty.write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "input contained no data" would be 2 more lines
        with pytest.raises(DataError, match="expected rows of 9"):
            housing.load_from_file(empty)
    with pytest.raises(DataError, match="a directory, not a file"):
        housing.load_from_file(tmp_path)
