"""Container health probe using only the standard library (slim images have no curl).

Usage:
  healthcheck.py URL                    healthy when GET URL answers 2xx
  healthcheck.py --model-available URL  healthy when URL is a TF Serving model status
                                        (GET /v1/models/<name>) with a version AVAILABLE
Exit 0 = healthy, 1 = unhealthy (one line on stderr says why).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 3.0


def probe(url: str, *, model_available: bool) -> str | None:
    """Returns None when healthy, else the reason."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:  # noqa: S310 (fixed local URL)
            body = resp.read()
    except (urllib.error.URLError, OSError) as exc:
        return f"GET {url} failed: {exc}"
    if not model_available:
        return None
    try:
        versions = json.loads(body)["model_version_status"]
    except (ValueError, KeyError, TypeError):
        return f"GET {url}: not a TF Serving model status"
    if any(v.get("state") == "AVAILABLE" for v in versions):
        return None
    states = ",".join(str(v.get("state")) for v in versions) or "no versions"
    return f"GET {url}: no AVAILABLE version ({states})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--model-available", action="store_true")
    args = parser.parse_args(argv)
    reason = probe(args.url, model_available=args.model_available)
    if reason:
        print(reason, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
