"""serving.modelcard: the TensorFlow-free reader the gateway uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from serving.modelcard import ModelCardError, latest_model_card, load_model_card, version_dirs


def write_card(version_dir: Path, **fields: object) -> None:
    card = {
        "name": "m",
        "version": int(version_dir.name),
        "signature_name": "serving_default",
        "inputs": {},
        "outputs": {},
        **fields,
    }
    (version_dir / "assets.extra").mkdir(parents=True)
    (version_dir / "assets.extra" / "model_card.json").write_text(json.dumps(card))


def test_latest_is_the_highest_integer_version(tmp_path: Path) -> None:
    for v in ("2", "10", "9"):
        write_card(tmp_path / v)
    (tmp_path / ".export-11-abc").mkdir()  # an export in progress is not a version
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in version_dirs(tmp_path)] == ["2", "9", "10"]
    assert latest_model_card(tmp_path)["version"] == 10
    assert load_model_card(tmp_path / "9")["version"] == 9


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match="no exported versions"):
        latest_model_card(tmp_path / "absent")
    (tmp_path / "1").mkdir()
    with pytest.raises(ModelCardError, match="no model card"):
        load_model_card(tmp_path / "1")
    (tmp_path / "1" / "assets.extra").mkdir()
    path = tmp_path / "1" / "assets.extra" / "model_card.json"
    path.write_text("{not json")
    with pytest.raises(ModelCardError, match="unreadable"):
        load_model_card(tmp_path / "1")
    path.write_text(json.dumps({"name": "m"}))
    with pytest.raises(ModelCardError, match="lacks version"):
        load_model_card(tmp_path / "1")
    path.write_text("[1, 2]")
    with pytest.raises(ModelCardError, match="not a JSON object"):
        load_model_card(tmp_path / "1")


def test_does_not_import_tensorflow() -> None:
    code = "import sys, serving.modelcard; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_reads_a_real_export(models_root: Path) -> None:
    card = latest_model_card(models_root / "fashion_mnist")
    assert card["name"] == "fashion_mnist" and card["outputs"]["class_ids"]["dtype"] == "int64"
