"""The exported SavedModels: signatures, numerics, warmup records, model card, versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.export import SIGNATURES, signature_specs

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def loaded(models_root: Path) -> dict:
    return {name: tf.saved_model.load(str(models_root / name / "1")) for name in SIGNATURES}


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_signature_matches_contract(loaded: dict, name: str) -> None:
    signature = loaded[name].signatures["serving_default"]
    assert signature_specs(signature) == SIGNATURES[name]


def test_layout(models_root: Path) -> None:
    for name in SIGNATURES:
        version = models_root / name / "1"
        assert (version / "saved_model.pb").is_file()
        assert (version / "variables").is_dir()
        assert (version / "assets.extra" / "tf_serving_warmup_requests").is_file()
        assert (version / "assets.extra" / "model_card.json").is_file()
    # No temp directories left behind by the atomic export.
    assert sorted(p.name for p in (models_root / "housing").iterdir()) == ["1"]
