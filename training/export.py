"""Export: a trained model.keras -> models/<name>/<version>/ in the layout TF Serving loads.

The version directory is assembled beside its final place under a non-numeric name (which
TF Serving ignores) and renamed into place, so a polling server never sees half of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from training.data.fashion_mnist import CLASS_NAMES
from training.data.housing import DEEP_FEATURES, FEATURE_NAMES, TARGET, WIDE_FEATURES
from training.train import METRICS_FILE, MODEL_FILE, WARMUP_FILE, versions

SIGNATURE_NAME = "serving_default"
WARMUP_RECORDS = "tf_serving_warmup_requests"
MODEL_CARD = "model_card.json"
WARMUP_BATCH_SIZES = (1, 2, 4)

# The contract from docs/ARCHITECTURE.md; the export checks the real signature against it.
SIGNATURES: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "fashion_mnist": {
        "inputs": {"images": {"dtype": "uint8", "shape": [-1, 28, 28]}},
        "outputs": {
            "probabilities": {"dtype": "float32", "shape": [-1, 10]},
            "class_ids": {"dtype": "int64", "shape": [-1]},
            "class_names": {"dtype": "string", "shape": [-1]},
        },
    },
    "housing": {
        "inputs": {
            "wide": {"dtype": "float32", "shape": [-1, len(WIDE_FEATURES)]},
            "deep": {"dtype": "float32", "shape": [-1, len(DEEP_FEATURES)]},
        },
        "outputs": {
            "main": {"dtype": "float32", "shape": [-1]},
            "aux": {"dtype": "float32", "shape": [-1]},
        },
    },
}


class ExportError(Exception):
    """The export cannot proceed (missing artifacts, version already there, ...)."""


def existing_versions(model_base: Path) -> list[int]:
    if not model_base.is_dir():
        return []
    return sorted(
        int(p.name) for p in model_base.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name)
    )


def next_version(model_base: Path) -> int:
    found = existing_versions(model_base)
    return found[-1] + 1 if found else 1


def _serving_fn(model_name: str, model: Any) -> tuple[Any, list[Any]]:
    import tensorflow as tf

    if model_name == "fashion_mnist":
        class_names = tf.constant(CLASS_NAMES)

        def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
            # Training saw X / 255.0; clients send raw uint8 pixels.
            probabilities = model(tf.cast(images, tf.float32) / 255.0, training=False)
            class_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
            return {
                "probabilities": probabilities,
                "class_ids": class_ids,
                "class_names": tf.gather(class_names, class_ids),
            }

        return serve, [tf.TensorSpec([None, 28, 28], tf.uint8, name="images")]

    def serve_housing(wide: tf.Tensor, deep: tf.Tensor) -> dict[str, tf.Tensor]:
        main, aux = model([wide, deep], training=False)
        return {"main": tf.squeeze(main, axis=-1), "aux": tf.squeeze(aux, axis=-1)}

    return serve_housing, [
        tf.TensorSpec([None, len(WIDE_FEATURES)], tf.float32, name="wide"),
        tf.TensorSpec([None, len(DEEP_FEATURES)], tf.float32, name="deep"),
    ]


def _spec(tensor_spec: Any) -> dict[str, Any]:
    dtype = tensor_spec.dtype.name
    shape = [-1 if d is None else int(d) for d in tensor_spec.shape.as_list()]
    return {"dtype": dtype, "shape": shape}


def signature_specs(concrete_fn: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Input/output names, dtypes and shapes of a (loaded or traced) concrete function."""
    # A traced tf.function lists its inputs positionally (named by their TensorSpec);
    # a loaded signature lists them as keyword arguments.
    args, kwargs = concrete_fn.structured_input_signature
    inputs = {spec.name: _spec(spec) for spec in args}
    inputs.update({name: _spec(spec) for name, spec in kwargs.items()})
    outputs = concrete_fn.structured_outputs
    return {
        "inputs": inputs,
        "outputs": {name: _spec(t) for name, t in outputs.items()},
    }


def warmup_inputs(model_name: str, arrays: dict[str, np.ndarray], batch: int) -> dict:
    if model_name == "fashion_mnist":
        images = arrays["images"]
        return {"images": np.resize(images, (batch, *images.shape[1:])).astype(np.uint8)}
    from training.models import split_inputs

    features = np.resize(arrays["features"], (batch, arrays["features"].shape[1]))
    wide, deep = split_inputs(features)
    return {"wide": wide, "deep": deep}


def write_warmup(path: Path, model_name: str, arrays: dict[str, np.ndarray]) -> int:
    """TFRecord of PredictionLog records that TF Serving replays before serving a version."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    count = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in WARMUP_BATCH_SIZES:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SIGNATURE_NAME)
            )
            for key, value in warmup_inputs(model_name, arrays, batch).items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
            count += 1
    return count


def model_card(
    model_name: str, version: int, specs: dict, metrics: dict[str, Any]
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "name": model_name,
        "version": version,
        "signature_name": SIGNATURE_NAME,
        "inputs": specs["inputs"],
        "outputs": specs["outputs"],
    }
    if model_name == "fashion_mnist":
        card["class_names"] = list(CLASS_NAMES)
    else:
        card["feature_names"] = list(FEATURE_NAMES)
        card["input_features"] = {"wide": list(WIDE_FEATURES), "deep": list(DEEP_FEATURES)}
        card["target"] = TARGET
    v = versions()
    card.update(
        {
            "metrics": metrics.get("test", {}),
            "training_data": {
                "source": metrics.get("data", {}).get("source"),
                "sha256": metrics.get("data", {}).get("sha256"),
            },
            "hyperparameters": metrics.get("hyperparameters", {}),
            "versions": {"tensorflow": v["tensorflow"], "keras": v["keras"]},
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    return card


def _load_artifacts(model_dir: Path) -> tuple[Any, dict, dict[str, np.ndarray]]:
    import keras

    for name in (MODEL_FILE, METRICS_FILE, WARMUP_FILE):
        if not (model_dir / name).is_file():
            raise ExportError(f"{model_dir / name} not found: run `python -m training train` first")
    model = keras.saving.load_model(model_dir / MODEL_FILE)
    metrics = json.loads((model_dir / METRICS_FILE).read_text())
    with np.load(model_dir / WARMUP_FILE) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return model, metrics, arrays


def export_model(
    model_name: str,
    artifacts_dir: str | os.PathLike[str],
    models_dir: str | os.PathLike[str],
    version: int | None = None,
) -> Path:
    """Export artifacts/<model_name>/model.keras as models/<model_name>/<version>/.

    ``version=None`` takes the next free number. Existing versions are never overwritten.
    """
    import keras

    if model_name not in SIGNATURES:
        raise ExportError(f"unknown model {model_name!r}; choose from {', '.join(SIGNATURES)}")
    if version is not None and version < 1:
        raise ExportError(f"version must be a positive integer, got {version}")
    model, metrics, arrays = _load_artifacts(Path(artifacts_dir) / model_name)
    base = Path(models_dir) / model_name
    base.mkdir(parents=True, exist_ok=True)
    version = next_version(base) if version is None else version
    final = base / str(version)
    if final.exists():
        raise ExportError(
            f"{final} already exists; pick another --version (existing versions "
            f"are never overwritten)"
        )

    fn, input_signature = _serving_fn(model_name, model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    traced = archive.add_endpoint(SIGNATURE_NAME, fn, input_signature=input_signature)
    specs = signature_specs(traced.get_concrete_function())
    if specs != SIGNATURES[model_name]:
        raise ExportError(f"{model_name}: signature {specs} differs from the contract")

    tmp = Path(tempfile.mkdtemp(prefix=f".export-{version}-", dir=base))
    try:
        archive.write_out(str(tmp), verbose=False)
        extra = tmp / "assets.extra"
        extra.mkdir()
        write_warmup(extra / WARMUP_RECORDS, model_name, arrays)
        card = model_card(model_name, version, specs, metrics)
        (extra / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")
        os.chmod(tmp, 0o755)  # noqa: S103  mkdtemp gives 0700; the server may be another user
        try:
            os.rename(tmp, final)  # atomic; fails if a concurrent export took the number
        except OSError as exc:
            raise ExportError(f"{final} already exists (concurrent export?): {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
