"""Request security policy of the gateway: optional API keys and response security headers.

``install(app, config)`` (called once by the app factory, after the metrics hooks so refused
requests are still counted):

- API keys (``GATEWAY_API_KEYS``; off when unset). A request to anything but the open endpoints
  needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``: none -> 401 with
  ``WWW-Authenticate``, a wrong one -> 403. The check runs before any body is read. Keys are
  compared as SHA-256 digests with ``hmac.compare_digest`` against every configured key (no early
  exit), so neither a key's value nor its length leaks through timing. Keys are never logged.
- Security headers on every response: ``X-Content-Type-Options: nosniff`` and
  ``Referrer-Policy: no-referrer``; HTML without its own policy gets a deny-all CSP.
- Bodies without a Content-Length (chunked) are read up to ``GATEWAY_MAX_BODY_BYTES`` + 1 bytes
  and refused with 413 past the limit. werkzeug alone would silently cut such a body at the limit
  and hand the view a truncated upload. Transfer codings other than plain ``chunked`` (e.g.
  ``gzip, chunked``, which gunicorn passes on compressed) get 501.
- Flask's debug mode is forced off (``FLASK_DEBUG`` in the environment must not turn a served app
  into one that propagates exceptions).

See docs/security.md.
"""

from __future__ import annotations

import hashlib
import hmac
import io
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from serving.gateway.config import GatewayConfig
from serving.gateway.errors import error_response, unsupported_coding_message

#: Paths anyone may call: probes, the API description and the demo page (``/``, which answers
#: API clients with the JSON index); everything under ``/demo/`` (its files and samples) too.
#: The OpenAPI document marks exactly these as open.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/"})
OPEN_PREFIX = "/demo/"
METRICS_PATH = "/metrics"
REALM = 'Bearer realm="fashion-serving gateway"'
SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <key>, a key from GATEWAY_API_KEYS.",
    },
    "apiKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The same keys, in the X-API-Key header.",
    },
}
_REQUIREMENT = [{"bearerAuth": []}, {"apiKeyHeader": []}]
_HTML_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"


def _digest(value: str) -> bytes:
    # surrogatepass: any str a header can decode to hashes without raising.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class ApiKeyCheck:
    """Decides whether a request's credentials match one of the configured keys."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._digests = tuple(_digest(key) for key in keys)

    def matches(self, candidate: str) -> bool:
        digest = _digest(candidate)
        found = False
        for known in self._digests:  # every key, no early exit
            found |= hmac.compare_digest(digest, known)
        return found


def presented_keys(headers: Any) -> list[str]:
    """The keys a request presents (``Authorization: Bearer`` and/or ``X-API-Key``)."""
    keys = []
    authorization = headers.get("Authorization", "")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        keys.append(token.strip())
    api_key = headers.get("X-API-Key", "").strip()
    if api_key:
        keys.append(api_key)
    return keys


def install(app: Flask, config: GatewayConfig) -> None:
    app.config["DEBUG"] = False
    app.debug = False
    if config.api_keys:
        _install_auth(app, ApiKeyCheck(config.api_keys), config.metrics_require_key)
    limit = config.max_body_bytes

    @app.before_request
    def _bounded_streaming_body() -> Response | None:
        # After the key check (an unauthenticated body is never read).
        environ = request.environ
        codings = [
            coding.strip().lower()
            for coding in environ.get("HTTP_TRANSFER_ENCODING", "").split(",")
            if coding.strip()
        ]
        if codings and codings != ["chunked"]:
            # gunicorn only undoes "chunked": a "gzip, chunked" body would reach the parsers
            # compressed (and once escaped the size limit below).
            return error_response(
                501,
                "unsupported_transfer_encoding",
                unsupported_coding_message(repr(", ".join(codings)[:64])),
            )
        chunked = codings == ["chunked"]
        if not chunked and environ.get("CONTENT_LENGTH"):
            return  # werkzeug refuses a too-large Content-Length before reading anything
        if request.method not in ("POST", "PUT", "PATCH") or not chunked:
            return
        data = environ["wsgi.input"].read(limit + 1)
        if len(data) > limit:
            raise RequestEntityTooLarge()
        # From here on the body is an ordinary one of known length.
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return None

    @app.after_request
    def _security_headers(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        if response.mimetype == "text/html" and "Content-Security-Policy" not in headers:
            headers["Content-Security-Policy"] = _HTML_CSP
            headers.setdefault("X-Frame-Options", "DENY")
        return response


def open_endpoints(app: Flask, metrics_require_key: bool) -> frozenset[str]:
    """Flask endpoint names of the open paths (resolved from the app's routes, so a renamed view
    function cannot silently close or open a path)."""
    open_paths = OPEN_PATHS if metrics_require_key else OPEN_PATHS | {METRICS_PATH}
    return frozenset(
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if rule.rule in open_paths or rule.rule.startswith(OPEN_PREFIX)
    )


def _install_auth(app: Flask, check: ApiKeyCheck, metrics_require_key: bool) -> None:
    # install() runs after every blueprint is registered (app.py), so all routes are known.
    public = open_endpoints(app, metrics_require_key)

    @app.before_request
    def _require_key() -> Response | None:
        # request.endpoint is None for unknown paths: closed too (no probing without a key).
        if request.endpoint in public:
            return None
        keys = presented_keys(request.headers)
        if not keys:
            return error_response(
                401,
                "unauthorized",
                "this endpoint needs an API key: send 'Authorization: Bearer <key>' or "
                "'X-API-Key: <key>'",
                {"WWW-Authenticate": REALM},
            )
        results = [check.matches(key) for key in keys]  # all of them, whatever the first says
        if not any(results):
            return error_response(403, "forbidden", "the API key is not valid")
        return None


def document_security(
    document: dict[str, Any], *, auth: bool, metrics_require_key: bool
) -> dict[str, Any]:
    """Add securitySchemes and per-operation requirements to the OpenAPI ``document`` (in place)
    when keys are on, matching what ``install`` enforces."""
    if not auth:
        return document
    document["components"]["securitySchemes"] = SECURITY_SCHEMES
    unauthorized = {
        "description": "No API key (unauthorized); see WWW-Authenticate.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    forbidden = {
        "description": "The API key is not valid (forbidden).",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for path, item in document["paths"].items():
        open_path = path in OPEN_PATHS or (path == METRICS_PATH and not metrics_require_key)
        for operation in item.values():
            if open_path:
                operation["security"] = []
            else:
                operation["security"] = _REQUIREMENT
                operation["responses"]["401"] = unauthorized
                operation["responses"]["403"] = forbidden
    return document
