"""``python -m client grpc ...`` end to end against the local model server."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from client_helpers import assert_one_line_error

from client.errors import EXIT_REJECTED, EXIT_UNAVAILABLE, EXIT_USAGE
from serving.modelcard import load_model_card
from tests.helpers.housing import HOUSING_ROW

pytestmark = pytest.mark.slow


def features_arg(row: dict[str, float]) -> str:
    return ",".join(f"{k}={v}" for k, v in row.items())


def test_predict_image_files_table_and_json(cli, live_stack, image_files) -> None:
    files = [image_files["png0"], image_files["png1"], image_files["npy"]]
    table = cli("grpc", "predict", "--server", live_stack.grpc_target, *files)
    assert table.code == 0, table.err
    assert "prediction" in table.out and str(image_files["png0"]) in table.out
    assert f"{image_files['npy']}[2]" in table.out  # the .npy holds 3 images

    result = cli("grpc", "predict", "--server", live_stack.grpc_target, "--json", *files)
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["model"] == "fashion_mnist" and doc["version"] == 1
    class_names = load_model_card(live_stack.models_root / "fashion_mnist" / "1")["class_names"]
    assert len(doc["predictions"]) == 5
    for item in doc["predictions"]:
        assert math.isclose(sum(item["probabilities"]), 1.0, abs_tol=1e-3)
        assert item["class_id"] == max(range(10), key=item["probabilities"].__getitem__)
        assert item["class_name"] in class_names
    # A PNG of an image and the image itself give the same tensor, so the same answer.
    by_source = {item["source"]: item for item in doc["predictions"]}
    assert (
        by_source[str(image_files["png0"])]["probabilities"]
        == by_source[f"{image_files['npy']}[0]"]["probabilities"]
    )


def test_predict_test_images_reports_accuracy(cli, live_stack, fashion_data_dir) -> None:
    args = ("grpc", "predict", "--server", live_stack.grpc_target, "--data-dir", fashion_data_dir)
    result = cli(*args, "--test-images", 12, "--seed", 3, "--json", "--batch-size", 5)
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert len(doc["predictions"]) == 12
    hits = sum(p["class_id"] == p["true_class_id"] for p in doc["predictions"])
    assert doc["accuracy"] == pytest.approx(hits / 12)
    again = json.loads(cli(*args, "--test-images", 12, "--seed", 3, "--json").out)
    assert [p["source"] for p in again["predictions"]] == [p["source"] for p in doc["predictions"]]
    table = cli(*args, "--test-images", 4, "--seed", 3)
    assert table.code == 0 and "accuracy: " in table.out and "true" in table.out


def test_predict_version_selection(cli, live_stack, image_files) -> None:
    base = ("grpc", "predict", "--server", live_stack.grpc_target, image_files["png0"])
    result = cli(*base, "--version", 1, "--json")
    assert result.code == 0 and json.loads(result.out)["version"] == 1
    assert_one_line_error(cli(*base, "--version", 99), EXIT_REJECTED, "99")
    stable = cli(*base, "--label", "stable", "--json")
    assert stable.code == 0 and json.loads(stable.out)["version"] == 1
    assert_one_line_error(cli(*base, "--label", "canary"), EXIT_REJECTED, "canary")  # no v2


def test_housing_features_csv_and_card(cli, live_stack, tmp_path: Path) -> None:
    base = ("grpc", "housing", "--server", live_stack.grpc_target)
    one = cli(
        *base,
        "--models-dir",
        live_stack.models_root,
        "--features",
        features_arg(HOUSING_ROW),
        "--json",
    )
    assert one.code == 0, one.err
    single = json.loads(one.out)["predictions"][0]
    assert math.isfinite(single["main"]) and math.isfinite(single["aux"])

    # Columns in another order, and a second district: the split is by name, not position.
    names = list(HOUSING_ROW)[::-1]
    other = dict(HOUSING_ROW, MedInc=2.0, HouseAge=10.0)
    csv_path = tmp_path / "districts.csv"
    csv_path.write_text(
        ",".join(names)
        + "\n"
        + "\n".join(",".join(str(row[n]) for n in names) for row in (HOUSING_ROW, other))
        + "\n"
    )
    card = live_stack.models_root / "housing" / "1"
    many = cli(*base, "--model-card", card, "--csv", csv_path, "--json")
    assert many.code == 0, many.err
    predictions = json.loads(many.out)["predictions"]
    assert len(predictions) == 2
    assert predictions[0]["main"] == pytest.approx(single["main"], rel=1e-5)
    assert predictions[1]["main"] != pytest.approx(single["main"], rel=1e-5)

    table = cli(*base, "--models-dir", live_stack.models_root, "--csv", csv_path)
    assert table.code == 0 and "prediction" in table.out and "$100k" in table.out


@pytest.mark.parametrize(
    ("features", "needle"),
    [
        (features_arg({k: v for k, v in HOUSING_ROW.items() if k != "AveRooms"}), "AveRooms"),
        (features_arg(dict(HOUSING_ROW, Rooms=3)), "Rooms"),
        (features_arg(HOUSING_ROW).replace("HouseAge=41.0", "HouseAge=old"), "HouseAge"),
        (features_arg(HOUSING_ROW).replace("HouseAge=41.0", "HouseAge=nan"), "HouseAge"),
        ("MedInc", "NAME=VALUE"),
    ],
)
def test_housing_bad_features(cli, live_stack, features: str, needle: str) -> None:
    result = cli(
        "grpc", "housing", "--server", live_stack.grpc_target,
        "--models-dir", live_stack.models_root, "--features", features,
    )  # fmt: skip
    assert_one_line_error(result, EXIT_USAGE, needle)


def test_housing_bad_csv_and_missing_card(cli, live_stack, tmp_path: Path) -> None:
    base = ("grpc", "housing", "--server", live_stack.grpc_target)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text(",".join(HOUSING_ROW) + "\n1,2,3\n")
    models = ("--models-dir", live_stack.models_root)
    assert_one_line_error(cli(*base, *models, "--csv", ragged), EXIT_USAGE, "ragged.csv:2")
    assert_one_line_error(
        cli(*base, *models, "--csv", tmp_path / "none.csv"), EXIT_USAGE, "none.csv"
    )
    row = ("--features", features_arg(HOUSING_ROW))
    empty = tmp_path / "empty-models"
    empty.mkdir()
    assert_one_line_error(cli(*base, "--models-dir", empty, *row), EXIT_USAGE, "--model-card")


def test_metadata_and_status(cli, live_stack) -> None:
    server = ("--server", live_stack.grpc_target)
    table = cli("grpc", "metadata", *server)
    assert table.code == 0 and "images" in table.out and "uint8" in table.out
    doc = json.loads(cli("grpc", "metadata", *server, "--model", "housing", "--json").out)
    inputs = doc["signature_def"]["serving_default"]["inputs"]
    assert set(inputs) == {"wide", "deep"}
    status = cli("grpc", "status", *server, "--json")
    assert status.code == 0
    versions = json.loads(status.out)["model_version_status"]
    assert any(v["version"] == 1 and v["state"] == "AVAILABLE" for v in versions)
    assert "AVAILABLE" in cli("grpc", "status", *server, "--model", "housing").out


def test_unknown_model(cli, live_stack, image_files) -> None:
    server = ("--server", live_stack.grpc_target)
    result = cli("grpc", "predict", *server, "--model", "no_such_model", image_files["png0"])
    assert_one_line_error(result, EXIT_REJECTED, "no_such_model")
    assert_one_line_error(cli("grpc", "status", *server, "--model", "nope"), EXIT_REJECTED, "nope")


def test_unreachable_and_timeout(cli, free_port, blackhole, image_files) -> None:
    png = image_files["png0"]
    down = cli("grpc", "predict", "--server", f"127.0.0.1:{free_port}", "--timeout", 3, png)
    assert_one_line_error(down, EXIT_UNAVAILABLE, str(free_port))
    slow = cli("grpc", "status", "--server", blackhole, "--timeout", 0.5)
    assert_one_line_error(slow, EXIT_UNAVAILABLE, blackhole)


def test_bad_files_and_usage(cli, image_files, free_port, tmp_path: Path) -> None:
    server = ("--server", f"127.0.0.1:{free_port}")  # never contacted: input is checked first
    bad = cli("grpc", "predict", *server, image_files["not_an_image"])
    assert_one_line_error(bad, EXIT_USAGE, "notes.png")
    missing = cli("grpc", "predict", *server, tmp_path / "missing.png")
    assert_one_line_error(missing, EXIT_USAGE, "missing.png", "no such file")
    wrong_npy = tmp_path / "wrong.npy"
    import numpy as np

    np.save(wrong_npy, np.zeros((3, 4)))
    assert_one_line_error(cli("grpc", "predict", *server, wrong_npy), EXIT_USAGE, "wrong.npy")
    assert_one_line_error(cli("grpc", "predict", *server), EXIT_USAGE, "--test-images")
    usage = cli("grpc", "predict", *server, "--version", "0", image_files["png0"])
    assert_one_line_error(usage, EXIT_USAGE, "--version")
    both = cli("grpc", "predict", *server, "--version", 1, "--label", "stable", image_files["png0"])
    assert_one_line_error(both, EXIT_USAGE, "--label")


@pytest.mark.parametrize(
    "server", ["127.0.0.1:70000", "127.0.0.1:-1", "127.0.0.1:abc", "127.0.0.1", ""]
)
def test_bad_server_is_a_usage_error(cli, image_files, server: str) -> None:
    # gRPC itself would wrap 70000 to port 4464, use 443 without a port, or log C-core errors.
    result = cli("grpc", "predict", "--server", server, image_files["png0"])
    assert_one_line_error(result, EXIT_USAGE, "--server")


def test_out_of_range_numbers_are_usage_errors(cli, image_files, free_port) -> None:
    server = ("--server", f"127.0.0.1:{free_port}")  # never contacted
    huge = cli("grpc", "predict", *server, "--version", 2**63, image_files["png0"])
    assert_one_line_error(huge, EXIT_USAGE, "--version")
    seed = cli("grpc", "predict", *server, "--test-images", 2, "--seed", -1)
    assert_one_line_error(seed, EXIT_USAGE, "--seed")
    empty = cli("grpc", "housing", *server, "--features", "")
    assert_one_line_error(empty, EXIT_USAGE, "--features")


def test_npy_error_names_the_file_once(cli, free_port, tmp_path: Path) -> None:
    import numpy as np

    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 4)))
    result = cli("grpc", "predict", "--server", f"127.0.0.1:{free_port}", wrong)
    assert_one_line_error(result, EXIT_USAGE, "wrong.npy")
    assert result.err.count("wrong.npy") == 1, result.err
