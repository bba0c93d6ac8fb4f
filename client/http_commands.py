"""``python -m client http ...``: the gateway's HTTP API (docs/gateway.md), with urllib3.

Image files are converted here with ``serving.codecs.images`` (the gateway's own conversion) and
sent as pixels, or with ``--upload`` sent as they are for the gateway to convert.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3

from client import inputs, output
from client.errors import EXIT_REJECTED, EXIT_UNAVAILABLE, EXIT_USAGE, ClientError

PREDICT_PATH = "/predict"
HOUSING_PATH = "/predict/housing"
UPLOAD_FIELD = "image"
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")  # what an Authorization header can carry as is


class Gateway:
    """A small urllib3 wrapper: JSON in and out, errors turned into ClientErrors."""

    def __init__(self, url: str, timeout: float, api_key: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f"--url: expected http(s)://host:port, got {url!r}", EXIT_USAGE)
        try:
            port = parts.port  # ValueError unless 0..65535
        except ValueError:
            port = 0
        if port == 0:  # None (the scheme's default) is fine
            raise ClientError(
                f"--url: expected http(s)://host:port with a port 1..65535, got {url!r}",
                EXIT_USAGE,
            )
        if api_key and not _HEADER_SAFE.fullmatch(api_key):
            # Never echoed: the key is a secret.
            raise ClientError(
                "GATEWAY_API_KEY must be printable ASCII without spaces (value not shown)",
                EXIT_USAGE,
            )
        self.url = url.rstrip("/")
        # No retries: a refused connection or a timeout is reported at once, with the reason.
        # The key goes in a header on every request (the gateway checks it when it has
        # GATEWAY_API_KEYS); it is never printed.
        self.auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.pool = urllib3.PoolManager(
            timeout=urllib3.Timeout(total=timeout), retries=False, maxsize=1
        )
        self.timeout = timeout

    def post(self, path: str, query: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        params = {k: v for k, v in query.items() if v is not None}
        target = self.url + path + (f"?{urlencode(params)}" if params else "")
        kwargs["headers"] = {**self.auth, **kwargs.get("headers", {})}
        try:
            response = self.pool.request("POST", target, **kwargs)
        except urllib3.exceptions.NewConnectionError as exc:
            # Checked first: urllib3 makes it a subclass of ConnectTimeoutError.
            raise ClientError(f"{target}: unreachable ({_short(exc)})", EXIT_UNAVAILABLE) from None
        except urllib3.exceptions.TimeoutError:
            raise ClientError(
                f"{target}: no answer within {self.timeout:g} s", EXIT_UNAVAILABLE
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ClientError(
                f"{target}: unreachable ({_short(reason)})", EXIT_UNAVAILABLE
            ) from None
        body = _json_or_none(response.data)
        if response.status >= 400:
            detail = _error_detail(body, response.data)
            code = EXIT_REJECTED if 400 <= response.status < 500 else EXIT_UNAVAILABLE
            raise ClientError(f"{target}: HTTP {response.status}: {detail}", code)
        if not isinstance(body, dict):
            raise ClientError(f"{target}: the answer is not a JSON object", EXIT_UNAVAILABLE)
        return body


def _short(reason: object) -> str:
    text = str(reason)
    # urllib3 wraps the OS error in a long repr; keep its last, meaningful part.
    return text.rsplit(": ", 1)[-1] if "Errno" in text else text


def _json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


def _error_detail(body: Any, raw: bytes) -> str:
    # The gateway answers {"error": {"code": ..., "message": ...}} (docs/gateway.md).
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return f"{error['message']} ({error.get('code', 'error')})"
    if error:
        return str(error)
    text = raw.decode("utf-8", "replace").strip()
    return text[:200] or "(empty body)"


def _selector(args: argparse.Namespace) -> dict[str, Any]:
    return {"version": args.version, "version_label": args.label}


def cmd_predict(args: argparse.Namespace) -> None:
    gateway = Gateway(args.url, args.timeout, args.api_key)
    query = _selector(args)
    answers: list[dict[str, Any]] = []
    batch = None
    if args.upload:
        sources = _upload_sources(args)
        for start in range(0, len(sources), args.batch_size):
            fields: list[tuple[str, Any]] = [
                (UPLOAD_FIELD, (Path(name).name, _read(name), "application/octet-stream"))
                for name in sources[start : start + args.batch_size]
            ]
            if args.invert != "auto":
                fields.append(("invert", args.invert))
            answers.append(gateway.post(PREDICT_PATH, query, fields=fields))
    else:
        # Converted here with the gateway's own codec; pixels are then taken as sent.
        batch = inputs.image_batch(args)
        sources = batch.sources
        for start in range(0, len(batch.images), args.batch_size):
            chunk = batch.images[start : start + args.batch_size]
            body = json.dumps({"instances": chunk.tolist()}, separators=(",", ":"))
            answers.append(gateway.post(PREDICT_PATH, query, body=body, headers=JSON_HEADERS))
    result = output.ImagePredictions(
        model="fashion_mnist",
        version=None,
        sources=sources,
        class_ids=[],
        class_names=[],
        probabilities=[],
    )
    for answer in answers:
        result.model = str(answer.get("model", result.model))
        result.version = answer.get("version", result.version)
        for item in _predictions(answer):
            result.class_ids.append(int(item["class_id"]))
            result.class_names.append(str(item["class_name"]))
            result.probabilities.append([round(float(p), 6) for p in item["probabilities"]])
    if len(result.class_ids) != len(sources):
        raise ClientError(
            f"{args.url}: {len(result.class_ids)} predictions for {len(sources)} images",
            EXIT_UNAVAILABLE,
        )
    if batch is not None and batch.true_labels is not None:
        result.true_ids = batch.true_labels.tolist()
        result.true_names = inputs.true_names(batch)
    output.show_image_predictions(result, as_json=args.json)


def _upload_sources(args: argparse.Namespace) -> list[str]:
    if args.test_images is not None or not args.images:
        raise ClientError("--upload sends image files: give IMAGE files", EXIT_USAGE)
    for name in args.images:
        if Path(name).suffix.lower() == ".npy":
            raise ClientError(f"{name}: --upload sends image files, not .npy arrays", EXIT_USAGE)
    return list(args.images)


def _read(name: str) -> bytes:
    try:
        return Path(name).read_bytes()
    except FileNotFoundError:
        raise ClientError(f"{name}: no such file", EXIT_USAGE) from None
    except OSError as exc:
        raise ClientError(f"{name}: cannot read ({exc.strerror or exc})", EXIT_USAGE) from None


def _predictions(answer: dict[str, Any]) -> list[dict[str, Any]]:
    predictions = answer.get("predictions")
    if not isinstance(predictions, list):
        raise ClientError("the gateway's answer has no predictions list", EXIT_UNAVAILABLE)
    return predictions


def cmd_housing(args: argparse.Namespace) -> None:
    gateway = Gateway(args.url, args.timeout, args.api_key)
    rows = inputs.feature_rows(args)  # syntax checked here; feature names checked by the gateway
    query = _selector(args)
    result = output.HousingPredictions(model="housing", version=None, rows=rows, main=[], aux=[])
    for start in range(0, len(rows), args.batch_size):
        body = json.dumps({"instances": rows[start : start + args.batch_size]})
        answer = gateway.post(HOUSING_PATH, query, body=body, headers=JSON_HEADERS)
        result.model = str(answer.get("model", result.model))
        result.version = answer.get("version", result.version)
        if "unit" in answer:
            result.target = f"median house value in {answer['unit']}"
        for item in _predictions(answer):
            result.main.append(float(item["main"]))
            if "aux" in item:
                result.aux.append(float(item["aux"]))
    output.show_housing_predictions(result, as_json=args.json)
