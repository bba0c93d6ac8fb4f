"""What the gateway knows about the served models, from their model cards, cached per version.

Cards are read from ``MODEL_CARDS_DIR/<model>/<version>/assets.extra/model_card.json`` once at
start-up. A version that answers later (a new export picked up by the model server) is looked up on
disk once and remembered -- found or not -- so requests never touch the disk twice for a version.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.modelcard import ModelCardError, load_model_card, version_dirs

log = logging.getLogger("serving.gateway")


@dataclass(frozen=True)
class CardInfo:
    """The parts of a model card the gateway uses on the request path."""

    version: int
    class_names: tuple[str, ...] | None = None
    feature_names: tuple[str, ...] | None = None
    input_features: dict[str, tuple[str, ...]] | None = None
    target: str | None = None
    summary: dict[str, Any] | None = None  # for GET /models


def _card_info(card: dict[str, Any], version: int) -> CardInfo:
    inputs = card.get("input_features")
    summary_keys = ("signature_name", "class_names", "feature_names", "input_features", "target")
    return CardInfo(
        version=version,
        class_names=tuple(card["class_names"]) if card.get("class_names") else None,
        feature_names=tuple(card["feature_names"]) if card.get("feature_names") else None,
        input_features={k: tuple(v) for k, v in inputs.items()}
        if isinstance(inputs, dict)
        else None,
        target=card.get("target"),
        summary={k: card[k] for k in (*summary_keys, "metrics", "exported_at") if k in card},
    )


class ModelCatalog:
    """Model cards of the served models, per version (thread-safe, read mostly)."""

    def __init__(self, cards_dir: Path, model_names: tuple[str, ...]) -> None:
        self.cards_dir = Path(cards_dir)
        self._lock = threading.Lock()
        self._cards: dict[str, dict[int, CardInfo | None]] = {name: {} for name in model_names}
        self._newest: dict[str, CardInfo] = {}
        for name in model_names:
            for directory in version_dirs(self.cards_dir / name):
                self._load(name, int(directory.name))
        found = {
            name: sorted(v for v, c in cards.items() if c) for name, cards in self._cards.items()
        }
        log.info("model cards from %s: %s", self.cards_dir, found)

    def _load(self, model: str, version: int) -> CardInfo | None:
        try:
            info = _card_info(load_model_card(self.cards_dir / model / str(version)), version)
        except (ModelCardError, KeyError, TypeError, AttributeError) as exc:
            log.warning("no usable model card for %s version %d: %s", model, version, exc)
            info = None
        self._cards.setdefault(model, {})[version] = info
        newest = self._newest.get(model)
        if info is not None and (newest is None or info.version > newest.version):
            self._newest[model] = info
        return info

    def card(self, model: str, version: int | None, *, load: bool = True) -> CardInfo | None:
        """The card of ``model``'s ``version``; for an unknown version (or ``None``), the newest
        card known -- class names and features do not change between versions in practice.

        ``load=True`` reads a not-yet-seen version's card from disk (once); pass it only for
        versions the model server reported, so user input cannot grow the cache.
        """
        cards = self._cards.get(model, {})
        if version is not None:
            if version in cards:
                info = cards[version]
            elif not load:
                info = None
            else:
                with self._lock:
                    info = cards[version] if version in cards else self._load(model, version)
            if info is not None:
                return info
        return self._newest.get(model)
