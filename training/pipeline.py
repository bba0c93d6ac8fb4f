"""One-call train + export, for tests and scripts (the CLI does the same in two steps)."""

from __future__ import annotations

import os
from pathlib import Path

from training.export import export_model
from training.train import DEFAULT_SEED, MODEL_NAMES, TrainConfig, train_model


def train_and_export(
    models_dir: str | os.PathLike[str],
    *,
    models: tuple[str, ...] = MODEL_NAMES,
    epochs: int = 1,
    limit: int | None = 2000,
    version: int | None = None,
    seed: int = DEFAULT_SEED,
    fashion_dir: str | os.PathLike[str] | None = None,
    housing_data: str | os.PathLike[str] | None = None,
    artifacts_dir: str | os.PathLike[str] | None = None,
    verbose: int = 0,
) -> dict[str, Path]:
    """Train each model quickly (defaults: 1 epoch, 2,000 examples per split) and export it.

    Returns {model name: exported version directory}. ``artifacts_dir`` defaults to
    ``<models_dir>/../artifacts``; keep it to export more versions with ``export_model``
    without retraining.
    """
    artifacts = Path(artifacts_dir) if artifacts_dir else Path(models_dir).parent / "artifacts"
    config = TrainConfig(
        epochs=epochs,
        limit=limit,
        seed=seed,
        data_dir=str(fashion_dir) if fashion_dir else None,
        housing_data=str(housing_data) if housing_data else None,
        verbose=verbose,
    )
    exported = {}
    for name in models:
        train_model(name, config, artifacts)
        exported[name] = export_model(name, artifacts, models_dir, version)
    return exported
