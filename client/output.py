"""What the commands print: a readable table by default, or JSON with ``--json``.

Both clients (gRPC and HTTP) fill the same result types, so their output is identical.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass
class ImagePredictions:
    model: str
    version: int | None
    sources: list[str]
    class_ids: list[int]
    class_names: list[str]
    probabilities: list[list[float]]  # one row of class probabilities per image
    true_ids: list[int] | None = None  # --test-images only
    true_names: list[str] | None = None

    def accuracy(self) -> float | None:
        if self.true_ids is None or not self.true_ids:
            return None
        hits = sum(p == t for p, t in zip(self.class_ids, self.true_ids, strict=True))
        return hits / len(self.true_ids)


@dataclass
class HousingPredictions:
    model: str
    version: int | None
    rows: list[dict[str, float]]
    main: list[float]
    aux: list[float] = field(default_factory=list)
    target: str = "median house value in $100k"


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain text table; numeric-looking columns are right-aligned."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    numeric = [all(_is_number(r[i]) for r in rows) and rows for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("%"))
    except ValueError:
        return False
    return True


def print_json(obj: Any, stream: TextIO | None = None) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False), file=stream or sys.stdout)


def show_image_predictions(result: ImagePredictions, *, as_json: bool) -> None:
    accuracy = result.accuracy()
    if as_json:
        predictions = []
        for i, source in enumerate(result.sources):
            item: dict[str, Any] = {
                "source": source,
                "class_id": result.class_ids[i],
                "class_name": result.class_names[i],
                "probability": result.probabilities[i][result.class_ids[i]],
                "probabilities": result.probabilities[i],
            }
            if result.true_ids is not None and result.true_names is not None:
                item["true_class_id"] = result.true_ids[i]
                item["true_class_name"] = result.true_names[i]
            predictions.append(item)
        doc: dict[str, Any] = {
            "model": result.model,
            "version": result.version,
            "predictions": predictions,
        }
        if accuracy is not None:
            doc["accuracy"] = accuracy
        print_json(doc)
        return
    headers = ["input", "prediction", "probability"]
    if result.true_ids is not None:
        headers = ["input", "true", "prediction", "probability", "ok"]
    rows = []
    for i, source in enumerate(result.sources):
        prob = f"{result.probabilities[i][result.class_ids[i]]:.3f}"
        if result.true_ids is not None and result.true_names is not None:
            ok = "yes" if result.true_ids[i] == result.class_ids[i] else "NO"
            rows.append([source, result.true_names[i], result.class_names[i], prob, ok])
        else:
            rows.append([source, result.class_names[i], prob])
    print(f"model {result.model}, version {result.version}")
    print(format_table(headers, rows))
    if accuracy is not None and result.true_ids is not None:
        hits = round(accuracy * len(result.true_ids))
        print(f"accuracy: {hits}/{len(result.true_ids)} = {accuracy:.1%}")


def show_housing_predictions(result: HousingPredictions, *, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "model": result.model,
                "version": result.version,
                "target": result.target,
                "predictions": [
                    {
                        "features": row,
                        "main": main,
                        **({"aux": result.aux[i]} if result.aux else {}),
                    }
                    for i, (row, main) in enumerate(zip(result.rows, result.main, strict=True))
                ],
            }
        )
        return
    headers = ["row", "prediction", "aux"] if result.aux else ["row", "prediction"]
    rows = []
    for i, main in enumerate(result.main):
        cells = [str(i + 1), f"{main:.4f}"]
        if result.aux:
            cells.append(f"{result.aux[i]:.4f}")
        rows.append(cells)
    print(f"model {result.model}, version {result.version}; prediction = {result.target}")
    print(format_table(headers, rows))
