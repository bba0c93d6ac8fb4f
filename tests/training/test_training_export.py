"""The exported SavedModels: signatures, numerics, warmup records, model card, versions."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from serving.modelcard import load_model_card
from training.__main__ import main
from training.data.fashion_mnist import CLASS_NAMES
from training.data.housing import DEEP_FEATURES, FEATURE_NAMES, WIDE_FEATURES
from training.export import (
    SIGNATURES,
    ExportError,
    existing_versions,
    export_model,
    signature_specs,
)
from training.models import split_inputs

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def loaded(models_root: Path) -> dict:
    return {name: tf.saved_model.load(str(models_root / name / "1")) for name in SIGNATURES}


@pytest.fixture(scope="module")
def keras_models(trained_artifacts: Path) -> dict:
    import keras

    return {
        name: keras.saving.load_model(trained_artifacts / name / "model.keras")
        for name in SIGNATURES
    }


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_loaded_signature_matches_contract(loaded: dict, name: str) -> None:
    signature = loaded[name].signatures["serving_default"]
    assert signature_specs(signature) == SIGNATURES[name]


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_saved_model_pb_signature_def(models_root: Path, name: str) -> None:
    """What `saved_model_cli show` and TF Serving read: the SignatureDef in saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString(
        (models_root / name / "1/saved_model.pb").read_bytes()
    )
    (meta_graph,) = proto.meta_graphs
    assert "serve" in meta_graph.meta_info_def.tags
    sig = meta_graph.signature_def["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    for kind in ("inputs", "outputs"):
        got = {
            key: {
                "dtype": tf.dtypes.as_dtype(info.dtype).name,
                "shape": [d.size for d in info.tensor_shape.dim],
            }
            for key, info in getattr(sig, kind).items()
        }
        assert got == SIGNATURES[name][kind]


def test_layout(models_root: Path) -> None:
    for name in SIGNATURES:
        version = models_root / name / "1"
        assert (version / "saved_model.pb").is_file()
        assert (version / "variables" / "variables.index").is_file()
        assert (version / "assets.extra" / "tf_serving_warmup_requests").is_file()
        assert (version / "assets.extra" / "model_card.json").is_file()
        # No temp directories left behind by the atomic export.
        assert [p.name for p in (models_root / name).iterdir()] == ["1"]


def test_classifier_outputs_and_agreement(loaded: dict, keras_models: dict) -> None:
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (16, 28, 28), dtype=np.uint8)
    out = loaded["fashion_mnist"].signatures["serving_default"](images=tf.constant(images))
    probs = out["probabilities"].numpy()
    assert probs.shape == (16, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    ids = out["class_ids"].numpy()
    np.testing.assert_array_equal(ids, probs.argmax(axis=1))
    names = [n.decode() for n in out["class_names"].numpy()]
    assert names == [CLASS_NAMES[i] for i in ids]
    # The signature scales uint8 pixels like training did (X / 255.0).
    expected = keras_models["fashion_mnist"].predict_on_batch(images / 255.0)
    assert np.max(np.abs(probs - expected)) <= 1e-5


def test_regressor_outputs_and_agreement(loaded: dict, keras_models: dict) -> None:
    rng = np.random.default_rng(8)
    features = np.column_stack(
        [
            rng.uniform(0.5, 15, 16),
            rng.uniform(1, 52, 16),
            rng.uniform(2, 8, 16),
            rng.uniform(0.8, 1.3, 16),
            rng.uniform(100, 5000, 16),
            rng.uniform(1.5, 4, 16),
            rng.uniform(32.5, 42, 16),
            rng.uniform(-124, -114, 16),
        ]
    ).astype(np.float32)
    wide, deep = split_inputs(features)
    out = loaded["housing"].signatures["serving_default"](
        wide=tf.constant(wide), deep=tf.constant(deep)
    )
    main_k, aux_k = keras_models["housing"].predict_on_batch([wide, deep])
    assert out["main"].shape == (16,) and out["main"].dtype == tf.float32
    assert np.max(np.abs(out["main"].numpy() - main_k[:, 0])) <= 1e-5
    assert np.max(np.abs(out["aux"].numpy() - aux_k[:, 0])) <= 1e-5


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_warmup_records_are_prediction_logs(models_root: Path, loaded: dict, name: str) -> None:
    from tensorflow_serving.apis import prediction_log_pb2

    path = models_root / name / "1/assets.extra/tf_serving_warmup_requests"
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
    assert len(records) >= 2
    signature = loaded[name].signatures["serving_default"]
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        assert request.model_spec.name == name
        assert request.model_spec.signature_name == "serving_default"
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        assert set(inputs) == set(SIGNATURES[name]["inputs"])
        for key, array in inputs.items():
            spec = SIGNATURES[name]["inputs"][key]
            assert array.dtype.name == spec["dtype"]
            assert list(array.shape[1:]) == spec["shape"][1:]
        # The records replay: the signature accepts them.
        signature(**{k: tf.constant(v) for k, v in inputs.items()})


def test_model_cards(models_root: Path, trained_artifacts: Path) -> None:
    for name in SIGNATURES:
        card = load_model_card(models_root / name / "1")
        metrics = json.loads((trained_artifacts / name / "metrics.json").read_text())
        assert card["name"] == name and card["version"] == 1
        assert card["signature_name"] == "serving_default"
        assert {"inputs": card["inputs"], "outputs": card["outputs"]} == SIGNATURES[name]
        assert card["metrics"] == metrics["test"]
        assert card["training_data"]["sha256"] == metrics["data"]["sha256"]
        assert card["hyperparameters"]["epochs"] == 1
        assert card["versions"]["tensorflow"] == tf.__version__
        assert "exported_at" in card
    fashion = load_model_card(models_root / "fashion_mnist" / "1")
    assert fashion["class_names"] == CLASS_NAMES
    house = load_model_card(models_root / "housing" / "1")
    assert house["feature_names"] == FEATURE_NAMES
    assert house["input_features"] == {"wide": WIDE_FEATURES, "deep": DEEP_FEATURES}
    assert "100k" in house["target"]


def test_training_artifacts(trained_artifacts: Path) -> None:
    for name in SIGNATURES:
        metrics = json.loads((trained_artifacts / name / "metrics.json").read_text())
        assert len(metrics["history"]["loss"]) == 1 and "val_loss" in metrics["history"]
        assert len(metrics["data"]["sha256"]) == 64
        assert metrics["versions"]["keras"] and metrics["training_time_seconds"] >= 0
        png = (trained_artifacts / name / "learning_curves.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
    fashion = json.loads((trained_artifacts / "fashion_mnist/metrics.json").read_text())
    assert 0.0 <= fashion["test"]["accuracy"] <= 1.0
    house = json.loads((trained_artifacts / "housing/metrics.json").read_text())
    assert house["test"]["rmse"] == pytest.approx(np.sqrt(house["test"]["mse"]))


def test_version_numbering(
    tmp_path: Path, trained_artifacts: Path, export_version: Callable[[Path, str, int], Path]
) -> None:
    models = tmp_path / "models"
    (models / "housing" / "not-a-version").mkdir(parents=True)
    export_version(models, "housing", 3)
    assert export_model("housing", trained_artifacts, models) == models / "housing" / "4"
    with pytest.raises(ExportError, match="already exists"):
        export_model("housing", trained_artifacts, models, 3)
    with pytest.raises(ExportError, match="positive"):
        export_model("housing", trained_artifacts, models, 0)
    assert existing_versions(models / "housing") == [3, 4]
    assert sorted(p.name for p in (models / "housing").iterdir()) == ["3", "4", "not-a-version"]


def test_cli_export_refuses_existing_version(
    tmp_path: Path, trained_artifacts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    (models / "housing" / "1").mkdir(parents=True)
    argv = ["export", "--artifacts-dir", str(trained_artifacts), "--models-dir", str(models)]
    assert main([*argv, "--version", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err
    # Neither model was exported: the clash is checked before any work.
    assert not (models / "fashion_mnist" / "1").exists()


def test_cli_export_without_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["export", "--artifacts-dir", str(tmp_path), "--models-dir", str(tmp_path / "m")]
    assert main(argv) == 1
    assert "run `python -m training train` first" in capsys.readouterr().err


def test_cli_export_errors_come_before_tensorflow(tmp_path: Path) -> None:
    """Without artifacts, or with --models-dir a file, stderr is the one error line: no
    TensorFlow start-up lines first (TF is not imported)."""
    import subprocess
    import sys

    file = tmp_path / "a-file"
    file.write_text("")
    export = [sys.executable, "-m", "training", "export", "--artifacts-dir", str(tmp_path)]
    for models_dir, fragment in ((tmp_path / "m", "model.keras not found"), (file, "a-file")):
        done = subprocess.run(
            [*export, "--models-dir", str(models_dir)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1 and fragment in done.stderr, done.stderr
