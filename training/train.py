"""Training: fit one model, then write metrics.json, learning_curves.png and model.keras."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from training.data import fashion_mnist, housing

MODEL_NAMES = ("fashion_mnist", "housing")
DEFAULT_EPOCHS = {"fashion_mnist": 30, "housing": 20}
DEFAULT_LEARNING_RATE = {"fashion_mnist": 0.01, "housing": 0.01}
DEFAULT_BATCH_SIZE = 32
DEFAULT_SEED = 42
WARMUP_EXAMPLES = 4  # test examples kept for the export's warmup records and checks

MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
CURVES_FILE = "learning_curves.png"
WARMUP_FILE = "warmup_inputs.npz"


@dataclass
class TrainConfig:
    """Hyper-parameters and data locations; ``None`` means the per-model default."""

    epochs: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float | None = None
    limit: int | None = None
    seed: int = DEFAULT_SEED
    data_dir: str | None = None
    housing_data: str | None = None
    verbose: int = 2

    def hyperparameters(self, model_name: str) -> dict[str, Any]:
        return {
            "epochs": self.epochs or DEFAULT_EPOCHS[model_name],
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate or DEFAULT_LEARNING_RATE[model_name],
            "optimizer": "sgd",
            "limit": self.limit,
            "seed": self.seed,
        }


def versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def _to_floats(history: dict[str, list[float]]) -> dict[str, list[float]]:
    return {k: [float(v) for v in vals] for k, vals in history.items()}


def train_fashion_mnist(config: TrainConfig, out_dir: Path) -> dict[str, Any]:
    hp = config.hyperparameters("fashion_mnist")
    data = fashion_mnist.load_fashion_mnist(config.data_dir)  # before the slow keras import
    s = fashion_mnist.split(data, limit=config.limit)
    import keras

    from training.models import build_classifier

    keras.utils.set_random_seed(config.seed)
    model = build_classifier(hp["learning_rate"])
    # Like the seed: scale pixels to [0, 1] before training; the export does it in-graph.
    start = time.monotonic()
    history = model.fit(
        s.x_train / 255.0,
        s.y_train,
        epochs=hp["epochs"],
        batch_size=hp["batch_size"],
        validation_data=(s.x_valid / 255.0, s.y_valid),
        verbose=config.verbose,
    )
    train_seconds = time.monotonic() - start
    test = model.evaluate(s.x_test / 255.0, s.y_test, return_dict=True, verbose=0)
    model.save(out_dir / MODEL_FILE)
    np.savez(
        out_dir / WARMUP_FILE,
        images=s.x_test[:WARMUP_EXAMPLES],
        labels=s.y_test[:WARMUP_EXAMPLES],
    )
    return {
        "test": {"accuracy": float(test["accuracy"]), "loss": float(test["loss"])},
        "history": _to_floats(history.history),
        "training_time_seconds": round(train_seconds, 2),
        "data": {
            "source": data.source,
            "sha256": data.sha256,
            "files": data.files,
            "sizes": {"train": len(s.y_train), "valid": len(s.y_valid), "test": len(s.y_test)},
            "split": "validation = first 5,000 training images; test = the test set",
        },
        "hyperparameters": hp,
    }


def train_housing(config: TrainConfig, out_dir: Path) -> dict[str, Any]:
    hp = config.hyperparameters("housing")
    data = housing.load_housing(config.housing_data)  # before the slow keras import
    s = housing.split(data, limit=config.limit)
    import keras

    from training.models import build_regressor, split_inputs

    keras.utils.set_random_seed(config.seed)
    model = build_regressor(s.x_train, hp["learning_rate"])
    start = time.monotonic()
    history = model.fit(
        split_inputs(s.x_train),
        (s.y_train, s.y_train),
        epochs=hp["epochs"],
        batch_size=hp["batch_size"],
        validation_data=(split_inputs(s.x_valid), (s.y_valid, s.y_valid)),
        verbose=config.verbose,
    )
    train_seconds = time.monotonic() - start
    main_pred, _ = model.predict_on_batch(split_inputs(s.x_test))
    mse = float(np.mean((main_pred.reshape(-1).astype(np.float64) - s.y_test) ** 2))
    test = model.evaluate(split_inputs(s.x_test), (s.y_test, s.y_test), return_dict=True, verbose=0)
    model.save(out_dir / MODEL_FILE)
    np.savez(
        out_dir / WARMUP_FILE,
        features=s.x_test[:WARMUP_EXAMPLES].astype(np.float32),
        target=s.y_test[:WARMUP_EXAMPLES],
    )
    return {
        "test": {
            "mse": mse,
            "rmse": float(np.sqrt(mse)),
            "aux_mse": float(test["aux_loss"]),
            "loss": float(test["loss"]),
        },
        "history": _to_floats(history.history),
        "training_time_seconds": round(train_seconds, 2),
        "data": {
            "source": data.source,
            "sha256": data.sha256,
            "sizes": {"train": len(s.y_train), "valid": len(s.y_valid), "test": len(s.y_test)},
            "split": (
                f"train_test_split(random_state={housing.SPLIT_SEED}) for test (25%), then "
                "the rest split again the same way into train/valid"
            ),
        },
        "hyperparameters": hp,
    }


TRAINERS = {"fashion_mnist": train_fashion_mnist, "housing": train_housing}


def plot_learning_curves(history: dict[str, list[float]], path: Path, title: str) -> None:
    """The seed's pd.DataFrame(history).plot(): each metric in its own colour, training
    solid and validation dashed, one point per epoch."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    names = sorted(k for k in history if not k.startswith("val_"))
    for i, name in enumerate(names):
        for key, style in ((name, "-"), ("val_" + name, "--")):
            if key in history:
                epochs = np.arange(1, len(history[key]) + 1)
                ax.plot(epochs, history[key], style, color=f"C{i}", marker=".", label=key)
    ax.set_xlabel("Epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(title)
    ax.grid(True)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_model(
    model_name: str, config: TrainConfig, artifacts_dir: str | os.PathLike[str]
) -> dict:
    """Train one model and write its artifacts; returns the metrics dict."""
    if model_name not in TRAINERS:
        raise ValueError(f"unknown model {model_name!r}; choose from {', '.join(MODEL_NAMES)}")
    out_dir = Path(artifacts_dir) / model_name
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    result = TRAINERS[model_name](config, out_dir)
    metrics = {
        "model": model_name,
        **result,
        "versions": versions(),
        "trained_at": started.isoformat(timespec="seconds"),
    }
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    plot_learning_curves(result["history"], out_dir / CURVES_FILE, f"{model_name} learning curves")
    return metrics
