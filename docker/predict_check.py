"""Helpers for docker/container-test.sh, run with the project's virtualenv on the host.

predict_check.py png DATA_DIR OUT.png   write Fashion-MNIST test image 0 as a PNG
predict_check.py check RESPONSE.json    exit 0 when the gateway's answer names a known class
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from serving.codecs.images import encode_png
from training.data.fashion_mnist import CLASS_NAMES, load_from_dir


def write_png(data_dir: str, out: str) -> None:
    data = load_from_dir(data_dir)
    Path(out).write_bytes(encode_png(data.x_test[0]))


def _strings(value: Any) -> list[str]:
    """Every string anywhere in a JSON value (the answer's exact shape is the gateway's)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def check(response_path: str) -> str | None:
    """Returns the predicted class name, or None when the answer has none."""
    try:
        answer = json.loads(Path(response_path).read_text())
    except ValueError:
        return None
    found = [s for s in _strings(answer) if s in CLASS_NAMES]
    return found[0] if found else None


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "png":
        write_png(argv[1], argv[2])
        return 0
    if len(argv) == 2 and argv[0] == "check":
        name = check(argv[1])
        if name is None:
            print(f"{argv[1]}: no Fashion-MNIST class name in the answer", file=sys.stderr)
            return 1
        print(name)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
