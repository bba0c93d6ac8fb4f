"""TF Serving's REST API (``g3doc/api_rest.md``) over the data plane, on a threaded HTTP/1.1 server.

Routes, matched like TF Serving (case-insensitive, model names and labels percent-decoded):

* ``GET  /v1/models/{m}[/versions/{v}|/labels/{l}]``            model status
* ``GET  /v1/models/{m}[/versions/{v}|/labels/{l}]/metadata``   signature defs
* ``POST /v1/models/{m}[/versions/{v}|/labels/{l}]:predict``    row or columnar JSON
* ``POST ...:classify`` / ``...:regress``                        refused as TF Serving refuses
  them for predict signatures (400), 501 for a real classify/regress signature
* ``GET  <monitoring path>``                                     Prometheus text, when enabled

Errors are ``{"error": "<message>"}`` with TF Serving's gRPC-code -> HTTP mapping; unknown paths
answer 404 and known paths with the wrong method 405, both in JSON. Bodies over
``max_body_bytes`` get 413 without being read. No stack trace ever reaches a client.

The routing and handling live in :class:`RestApi` (plain ``handle(method, path, body)``), so
they can be tested without sockets; :class:`RestServer` only moves bytes.
"""

from __future__ import annotations

import logging
import re
import socket
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import orjson
from google.protobuf import json_format

from serving.codecs import CodecError, tfs_json
from serving.modelserver.errors import ModelServerError
from serving.modelserver.specs import ModelRef
from serving.protos import MODEL_STATE, GetModelStatusResponse, ModelSpec

logger = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
JSON_TYPE = "application/json"
#: Largest request body read; a batch of 1,000 Fashion-MNIST images in JSON is about 3 MB.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
#: An idle keep-alive connection is closed after this many seconds (frees its thread).
DEFAULT_IDLE_TIMEOUT = 120.0
_MAX_VERSION = (1 << 63) - 1

_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?",
    re.IGNORECASE,
)
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_SIGNATURE_METHODS = {
    "classify": ("Classify", "classification", "tensorflow/serving/classify"),
    "regress": ("Regress", "regression", "tensorflow/serving/regress"),
}


@dataclass(frozen=True)
class RestResponse:
    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()


def error_response(
    status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> RestResponse:
    return RestResponse(status, tfs_json.encode_error(message), JSON_TYPE, headers)


class _BadRequestError(Exception):
    """A request refused before reaching the data plane (bad URL, bad JSON shape)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _grpc_status_name(status: int) -> str:
    return {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 501: "UNIMPLEMENTED"}.get(status, "UNKNOWN")


class RestApi:
    """The REST semantics: ``handle(method, target, body) -> RestResponse``; thread-safe."""

    def __init__(self, dataplane: Any, metrics: Any, monitoring_path: str | None = None) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.monitoring_path = monitoring_path or None

    # -- routing --

    def handle(self, method: str, target: str, body: bytes) -> RestResponse:
        method = method.upper()
        path = target.split("?", 1)[0]
        try:
            if self.monitoring_path is not None and path == self.monitoring_path:
                if method not in ("GET", "HEAD"):
                    return _method_not_allowed(method, path, "GET")
                exposition, content_type = self.metrics.exposition()
                return RestResponse(200, exposition, content_type)
            match = _PREDICT_PATH.fullmatch(path)
            if match is not None:
                if method != "POST":
                    return _method_not_allowed(method, path, "POST")
                ref = _model_ref(*match.group(1, 2, 3))
                verb = match.group(4).lower()
                if verb == "predict":
                    return self._predict(ref, body)
                return self._classify_or_regress(ref, verb, body)
            match = _STATUS_PATH.fullmatch(path)
            if match is not None:
                if method not in ("GET", "HEAD"):
                    return _method_not_allowed(method, path, "GET")
                if not match.group(1):
                    raise _BadRequestError("Missing model name in request.")
                ref = _model_ref(*match.group(1, 2, 3))
                if match.group(4):
                    return self._metadata(ref)
                return self._status(ref)
        except _BadRequestError as exc:
            return error_response(exc.status, exc.message)
        if path.lower().startswith("/v1/"):
            return error_response(404, f"Malformed request: {method} {path}")
        return error_response(404, f"Not found: {method} {path}")

    # -- handlers --

    def _run(
        self,
        ref: ModelRef,
        api: str,
        work: Callable[[], tuple[int | None, RestResponse]],
    ) -> RestResponse:
        """Run one API call, map every failure to a JSON error and record the metrics."""
        started = time.perf_counter()
        version = ref.version
        status = "OK"
        try:
            version, response = work()
            return response
        except ModelServerError as exc:
            status = exc.code.name
            return error_response(exc.http_status, exc.message)
        except CodecError as exc:
            status = "INVALID_ARGUMENT"
            return error_response(400, str(exc))
        except _BadRequestError as exc:
            status = _grpc_status_name(exc.status)
            return error_response(exc.status, exc.message)
        except Exception:  # a bug, not the caller's fault: log it, tell them nothing internal
            status = "INTERNAL"
            logger.exception("REST %s of %s failed", api, ref.describe())
            return error_response(500, f"Internal error while serving {api}; see server log")
        finally:
            if self.metrics is not None:
                self.metrics.record_request(
                    ref.name, version, api, "REST", status, time.perf_counter() - started
                )

    def _predict(self, ref: ModelRef, body: bytes) -> RestResponse:
        def work() -> tuple[int | None, RestResponse]:
            request = tfs_json.decode_predict_request(
                body,
                lambda name: self.dataplane.signature_inputs(ref, name or DEFAULT_SIGNATURE),
            )
            result = self.dataplane.predict(
                ref, request.inputs, signature_name=request.signature_name or DEFAULT_SIGNATURE
            )
            answer = tfs_json.encode_predict_response(result.outputs, request.format)
            return result.version, RestResponse(200, answer)

        return self._run(ref, "Predict", work)

    def _classify_or_regress(self, ref: ModelRef, verb: str, body: bytes) -> RestResponse:
        api, noun, method_name = _SIGNATURE_METHODS[verb]

        def work() -> tuple[int | None, RestResponse]:
            signature_name = _parse_examples_request(body, verb)
            _, signature_map = self.dataplane.metadata(ref)
            name = signature_name or DEFAULT_SIGNATURE
            if name not in signature_map.signature_def:
                raise _BadRequestError(f"No signature was found with the name: {name}")
            found = signature_map.signature_def[name].method_name
            if found != method_name:
                # TF Serving's answer for a predict signature (signature method check on).
                raise _BadRequestError(
                    f"Expected {noun} signature method_name to be {method_name}. Was: {found}"
                    f" (this model serves predict signatures: use :predict)"
                )
            raise _BadRequestError(
                f"{api} is not implemented by this model server; use :predict", status=501
            )

        return self._run(ref, api, work)

    def _status(self, ref: ModelRef) -> RestResponse:
        def work() -> tuple[int | None, RestResponse]:
            response = GetModelStatusResponse()
            for state in self.dataplane.status(ref):
                entry = response.model_version_status.add()
                entry.version = state.version
                entry.state = MODEL_STATE[state.state]
                entry.status.error_code = state.error_code
                entry.status.error_message = state.error_message
                entry.status.SetInParent()
            text = json_format.MessageToJson(
                response, always_print_fields_with_no_presence=True, indent=2
            )
            return ref.version, RestResponse(200, text.encode())

        return self._run(ref, "GetModelStatus", work)

    def _metadata(self, ref: ModelRef) -> RestResponse:
        def work() -> tuple[int | None, RestResponse]:
            version, signature_map = self.dataplane.metadata(ref)
            spec = ModelSpec(name=ref.name)
            spec.version.value = version
            document = {
                "model_spec": _proto_dict(spec),
                "metadata": {"signature_def": _proto_dict(signature_map)},
            }
            return version, RestResponse(200, orjson.dumps(document, option=orjson.OPT_INDENT_2))

        return self._run(ref, "GetModelMetadata", work)


def _proto_dict(message: Any) -> dict[str, Any]:
    # TF Serving prints metadata with preserve_proto_field_names and every primitive field.
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _model_ref(name: str, version: str | None, label: str | None) -> ModelRef:
    model = unquote(name)
    if version is not None:
        number = int(version)
        if number > _MAX_VERSION:
            raise _BadRequestError(f"Failed to convert version: {version} to numeric.")
        return ModelRef(model, version=number)
    if label is not None:
        return ModelRef(model, label=unquote(label))
    return ModelRef(model)


def _parse_examples_request(body: bytes, verb: str) -> str | None:
    """The checks TF Serving makes on a classify/regress body before looking at the model."""
    doc = tfs_json.loads(body)
    signature_name = tfs_json.request_signature_name(doc)
    if "examples" not in doc:
        raise CodecError(f"When method is {verb}, key 'examples' is expected and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise CodecError("Expecting 'examples' value to be an list/array")
    if not examples:
        raise CodecError("'examples' value is an empty array")
    for example in examples:
        if not isinstance(example, dict):
            raise CodecError(
                f"Example must be JSON object but got JSON {tfs_json.excerpt(example, 40)}"
            )
    return signature_name


def _too_large(length: int, limit: int) -> RestResponse:
    return error_response(413, f"Request body of {length} bytes exceeds the limit of {limit} bytes")


def _method_not_allowed(method: str, path: str, allowed: str) -> RestResponse:
    return error_response(
        405,
        f"Method {method} is not allowed for {path}; use {allowed}",
        headers=(("Allow", allowed if allowed != "GET" else "GET, HEAD"),),
    )


# --------------------------------------------------------------------------------------------
# HTTP transport


class _Handler(BaseHTTPRequestHandler):
    """Moves bytes between the socket and RestApi; one thread per connection (keep-alive)."""

    protocol_version = "HTTP/1.1"
    server_version = "fashion-serving-modelserver"
    # Headers and body go out in one write, and small answers must not wait for Nagle.
    disable_nagle_algorithm = True
    server: RestServer

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout
        super().setup()

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    def _dispatch(self, head: bool = False) -> None:
        body = self._read_body()
        if body is None:
            return
        if body and "gzip" in self.headers.get("Content-Encoding", "").lower():
            body = self._gunzip(body)
            if body is None:
                return
        try:
            response = self.server.api.handle(self.command, self.path, body)
        except Exception:  # RestApi maps every expected failure; this is a bug: log, say 500
            logger.exception("REST %s %s failed", self.command, self.path)
            response = error_response(500, "Internal error; see server log")
        self._write(response, head=head)

    def _gunzip(self, body: bytes) -> bytes | None:
        """TF Serving's HTTP server inflates bodies sent with ``Content-Encoding: gzip``
        (net_http ``auto_uncompress_input``, on by default); the inflated size is held to the
        same limit as a plain body, so a small bomb cannot grow into gigabytes."""
        limit = self.server.max_body_bytes
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing only
        try:
            data = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            self._write(error_response(400, f"Failed to uncompress the gzipped body: {exc}"))
            return None
        if len(data) > limit:
            self._write(
                error_response(413, f"Uncompressed request body exceeds the limit of {limit} bytes")
            )
            return None
        if not inflater.eof:
            self._write(error_response(400, "Failed to uncompress the gzipped body: truncated"))
            return None
        return data

    def handle_expect_100(self) -> bool:
        """Refuse an oversized body before the client sends it: the base class would answer
        100 Continue first, and the client would then upload the whole body for nothing."""
        length_header = self.headers.get("Content-Length")
        limit = self.server.max_body_bytes
        if length_header is not None and length_header.strip().isdigit():
            length = int(length_header)
            if length > limit:
                self.close_connection = True
                self._write(_too_large(length, limit))
                return False
        return super().handle_expect_100()

    def _read_body(self) -> bytes | None:
        limit = self.server.max_body_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._write(error_response(400, f"Invalid Content-Length: {length_header!r}"))
            return None
        if length > limit:
            self.close_connection = True  # the unread body must not be parsed as a request
            self._write(_too_large(length, limit))
            return None
        return self.rfile.read(length)

    def _read_chunked(self, limit: int) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        try:
            while True:
                size_line = self.rfile.readline(1024)
                size_text = size_line.split(b";", 1)[0].strip()
                # Hex digits only: int() would also take "-1" (read(-1) = read to EOF, past
                # the limit), "+5", "0x5" or "1_0".
                if not _CHUNK_SIZE.fullmatch(size_text):
                    raise ValueError(size_text)
                size = int(size_text, 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > limit:
                    self.close_connection = True
                    self._write(
                        error_response(
                            413, f"Request body exceeds the limit of {limit} bytes (chunked)"
                        )
                    )
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)  # the CRLF after each chunk
        except ValueError:
            self.close_connection = True
            self._write(error_response(400, "Malformed chunked request body"))
            return None

    def _write(self, response: RestResponse, head: bool = False) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n")
        payload = b"".join(self._headers_buffer)
        self._headers_buffer = []
        if not head:
            payload += response.body
        try:
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's errors (bad request line, unknown method, huge headers) in JSON."""
        self.close_connection = True
        if code == HTTPStatus.NOT_IMPLEMENTED and self.command:
            code, message = 405, f"Method {self.command} is not allowed"
        text = message or HTTPStatus(code).phrase
        if not hasattr(self, "_headers_buffer"):
            self._headers_buffer = []
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        self._write(error_response(code, text))

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)


class RestServer(ThreadingHTTPServer):
    """Threaded HTTP/1.1 server for :class:`RestApi`; ``serve_forever()`` / ``shutdown()``."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        api: RestApi,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self.api = api
        self.max_body_bytes = max_body_bytes
        self.idle_timeout = idle_timeout
        self._serving = False
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up are routine (load generators do it by the thousand): no trace
        on stderr for them; anything else is logged once, through logging."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            logger.debug("REST client %s went away: %s", client_address, error)
            return
        logger.error("REST connection from %s failed", client_address, exc_info=error)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._serving = True
        super().serve_forever(poll_interval)

    def shutdown(self) -> None:
        """Stop accepting and close the listening socket (open connections die with the
        process: their threads are daemons). Safe to call when never started."""
        if self._serving:
            super().shutdown()
            self._serving = False
        self.server_close()


def make_rest_server(
    dataplane: Any,
    metrics: Any,
    host: str,
    port: int,
    monitoring_path: str | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
) -> RestServer:
    """Bind the REST server (port 0 picks a free port: read ``server.port``); the caller runs
    ``serve_forever()`` in a thread and ``shutdown()`` to stop."""
    api = RestApi(dataplane, metrics, monitoring_path)
    return RestServer((host, port), api, max_body_bytes=max_body_bytes, idle_timeout=idle_timeout)
