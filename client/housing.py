"""Housing features -> the model's ``wide``/``deep`` inputs, in the order the model card gives.

The gRPC client talks to the model server directly, with no gateway to do this split, and
TF Serving's GetModelMetadata does not return the model card (only signatures). So the client
reads the card from a local copy of the exported models: ``--model-card FILE|VERSION_DIR``, or
``--models-dir DIR`` (default ``$MODEL_CARDS_DIR``, else ``models``), where it takes the card of
the version the server actually serves (resolved with GetModelMetadata, then pinned).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from client.errors import EXIT_USAGE, ClientError
from serving.codecs import CodecError
from serving.codecs.housing import features_to_inputs
from serving.modelcard import MODEL_CARD_PATH, ModelCardError, load_model_card


def card_from_path(path: str | Path) -> dict[str, Any]:
    """A model card from a ``model_card.json`` file or an exported version directory."""
    path = Path(path)
    try:
        if path.is_dir():
            return _checked(load_model_card(path), str(path / MODEL_CARD_PATH))
        card = json.loads(path.read_text(encoding="utf-8"))
    except ModelCardError as exc:
        raise ClientError(str(exc), EXIT_USAGE) from None
    except FileNotFoundError:
        raise ClientError(f"{path}: no such model card", EXIT_USAGE) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClientError(f"{path}: unreadable model card ({exc})", EXIT_USAGE) from None
    if not isinstance(card, dict):
        raise ClientError(f"{path}: model card is not a JSON object", EXIT_USAGE)
    return _checked(card, str(path))


def card_for_version(models_dir: str | Path, model: str, version: int) -> dict[str, Any]:
    """The card of ``models_dir/<model>/<version>``, with a hint when it is not there."""
    version_dir = Path(models_dir) / model / str(version)
    if not version_dir.is_dir():
        raise ClientError(
            f"{version_dir}: not found; the server serves {model} version {version} but the local "
            "models dir lacks it (pass --models-dir or --model-card; see docs/clients.md)",
            EXIT_USAGE,
        )
    return card_from_path(version_dir)


def _checked(card: dict[str, Any], where: str) -> dict[str, Any]:
    names = card.get("feature_names")
    groups = card.get("input_features")
    if not (isinstance(names, list) and isinstance(groups, dict) and groups):
        raise ClientError(
            f"{where}: model card has no feature_names/input_features (not a housing model?)",
            EXIT_USAGE,
        )
    for group, members in groups.items():
        if not isinstance(members, list) or any(m not in names for m in members):
            raise ClientError(
                f"{where}: input_features[{group!r}] names features outside feature_names",
                EXIT_USAGE,
            )
    return card


def split_features(
    card: dict[str, Any], rows: list[dict[str, float]], where: str
) -> dict[str, np.ndarray]:
    """Rows of named features -> {"wide": float32 [N, 5], "deep": float32 [N, 6]} following the
    card's ``input_features``, with the conversion the gateway uses (serving.codecs.housing)."""
    groups = {name: tuple(members) for name, members in card["input_features"].items()}
    try:
        return features_to_inputs(rows, groups, tuple(card["feature_names"]))
    except CodecError as exc:
        # "instance i" is the i-th row (0-based) of --features / the CSV file.
        raise ClientError(f"{where}: {exc}", EXIT_USAGE) from None
