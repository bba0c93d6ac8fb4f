"""Read the model card that `python -m training export` writes next to the warmup records.

Deliberately free of TensorFlow: the gateway imports this.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

MODEL_CARD_PATH = Path("assets.extra") / "model_card.json"
REQUIRED_KEYS = ("name", "version", "signature_name", "inputs", "outputs")


class ModelCardError(ValueError):
    """The model card is missing or malformed."""


def load_model_card(version_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The model card of one exported version directory (models/<name>/<version>)."""
    path = Path(version_dir) / MODEL_CARD_PATH
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelCardError(f"{path}: no model card") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelCardError(f"{path}: unreadable model card ({exc})") from exc
    if not isinstance(card, dict):
        raise ModelCardError(f"{path}: model card is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        raise ModelCardError(f"{path}: model card lacks {', '.join(missing)}")
    return card


def version_dirs(model_base_dir: str | os.PathLike[str]) -> list[Path]:
    """Exported version directories (integer names, as TF Serving sees them), oldest first."""
    base = Path(model_base_dir)
    if not base.is_dir():
        return []
    found = [p for p in base.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name))


def latest_model_card(model_base_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The model card of the highest version under models/<name>/ (what TF Serving serves
    with its default "latest" policy)."""
    dirs = version_dirs(model_base_dir)
    if not dirs:
        raise ModelCardError(f"{model_base_dir}: no exported versions")
    return load_model_card(dirs[-1])
