"""Hostile and malformed input to the gateway (issue 7B), beyond tests/gateway/test_errors.py.

Every case must be refused with a clear 4xx JSON error (``{"error": {"code", "message"}}``), and
none may reach the model server: the in-process cases run against the fake model server and
check its call counter; the HTTP-level ones (a 100 MB upload, chunked bodies, raw paths) run
against the real gunicorn gateway of the session's ``live_stack``.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import zlib

import numpy as np
import orjson
import pytest
from PIL import Image

from serving.gateway import GatewayConfig, create_app
from tests.helpers.png import png_file

PIXELS = np.zeros((28, 28), dtype=np.int64).tolist()
HOUSE = {"wide": [1.0] * 5, "deep": [1.0] * 6}


def _assert_error(status: int, headers, body: bytes, expected_status: int, *codes: str) -> str:
    assert status == expected_status, body[:300]
    assert headers["Content-Type"] == "application/json"
    document = orjson.loads(body)
    assert set(document) == {"error"} and set(document["error"]) == {"code", "message"}
    assert document["error"]["message"] and "Traceback" not in body.decode("utf-8", "replace")
    if codes:
        assert document["error"]["code"] in codes, document
    return document["error"]["message"]


@pytest.fixture(scope="module")
def app_client(fake_backend, models_root):
    # The model cards come from the session's exported models, never from the checkout's models/.
    config = GatewayConfig(model_server_grpc=fake_backend.target, model_cards_dir=models_root)
    return create_app(config).test_client()


@pytest.fixture
def no_backend_calls(fake_backend):
    """Asserts that the test made no call to the model server."""
    before = fake_backend.behaviour.calls
    yield
    assert fake_backend.behaviour.calls == before, "a refused request reached the model server"


def _post(client, path: str, body: bytes, content_type: str = "application/json"):
    reply = client.post(path, data=body, content_type=content_type)
    return reply.status_code, reply.headers, reply.data


# -- images ----------------------------------------------------------------------------------


def _encoded(fmt: str, size: tuple[int, int] = (64, 64)) -> bytes:
    array = np.random.default_rng(3).integers(0, 255, (size[1], size[0]), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _gif_header(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b";"


def _bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def _jpeg_header(width: int, height: int) -> bytes:
    sof = struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def _png_bomb_with_data(side: int) -> bytes:
    """A real decompression bomb: side x side zero pixels, deflated to a few KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


HUGE_IMAGES = {
    "png 100k x 100k declared": png_file(100_000, 100_000, None),
    "png 2^31-1 square declared": png_file(2**31 - 1, 2**31 - 1, None),
    "png 1 x 2^31-1 declared": png_file(1, 2**31 - 1, None),
    "gif 65535 square": _gif_header(65535, 65535),
    "bmp 50k square": _bmp_header(50_000, 50_000),
    "jpeg 65500 square": _jpeg_header(65500, 65500),
    "png bomb 20000 square, real zlib data": _png_bomb_with_data(20_000),
}


@pytest.mark.parametrize("name", list(HUGE_IMAGES))
def test_huge_declared_dimensions_are_refused_before_decoding(app_client, no_backend_calls, name):
    data = HUGE_IMAGES[name]
    assert len(data) < 200_000  # small on the wire; only the header is large
    for content_type in ("image/png", "application/octet-stream"):
        _assert_error(
            *_post(app_client, "/predict", data, content_type),
            400,
            "image_too_large",
            "invalid_image",
        )
    body = orjson.dumps({"instances": [{"b64": base64.b64encode(data).decode()}]})
    _assert_error(*_post(app_client, "/predict", body), 400, "image_too_large", "invalid_image")
    reply = app_client.post(
        "/predict", data={"f": (io.BytesIO(data), "bomb.png")}, content_type="multipart/form-data"
    )
    _assert_error(
        reply.status_code, reply.headers, reply.data, 400, "image_too_large", "invalid_image"
    )


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_images_are_refused(app_client, no_backend_calls, fmt, keep):
    data = _encoded(fmt)
    cut = data[: max(1, int(len(data) * keep))]
    _assert_error(*_post(app_client, "/predict", cut, "image/jpeg"), 400, "invalid_image")


NOT_IMAGES = {
    "html": b"<!doctype html><script>alert(1)</script>",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "pdf": b"%PDF-1.7\n1 0 obj<<>>endobj\n",
    "elf": b"\x7fELF\x02\x01\x01" + b"\x00" * 64,
    "zip": b"PK\x03\x04" + b"\x00" * 40,
    "json": b'{"instances": [[0]]}',
    "png magic only": b"\x89PNG\r\n\x1a\n",
    "jpeg magic only": b"\xff\xd8\xff",
    "nul bytes": b"\x00" * 1000,
}


@pytest.mark.parametrize("name", list(NOT_IMAGES))
@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg", "application/octet-stream"])
def test_non_image_bytes_with_an_image_content_type(
    app_client, no_backend_calls, name, content_type
):
    _assert_error(
        *_post(app_client, "/predict", NOT_IMAGES[name], content_type), 400, "invalid_image"
    )


def test_svg_and_other_types_are_unsupported_media_types(app_client, no_backend_calls):
    for content_type in ("image/svg+xml", "text/html", "application/xml", "application/x-ndjson"):
        _assert_error(
            *_post(app_client, "/predict", NOT_IMAGES["svg"], content_type),
            415,
            "unsupported_media_type",
        )


# -- JSON --------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize("path", ["/predict", "/predict/housing"])
def test_deeply_nested_json_is_refused(app_client, no_backend_calls, depth, path):
    for body in (
        b"[" * depth + b"]" * depth,
        b'{"instances": ' + b"[" * depth + b"]" * depth + b"}",
        b'{"instances": [' + b'{"a":' * depth + b"1" + b"}" * depth + b"]}",
        b"[" * depth,  # never closed
    ):
        _assert_error(*_post(app_client, path, body), 400)


def test_moderately_nested_json_names_the_problem(app_client, no_backend_calls):
    nested: object = 0
    for _ in range(200):
        nested = [nested]
    message = _assert_error(
        *_post(app_client, "/predict", orjson.dumps({"instances": [nested]})), 400, "invalid_input"
    )
    assert "instance 0" in message


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf", b"1e999"])
def test_nan_and_infinity_tokens(app_client, no_backend_calls, token):
    row = b"[" + b",".join([token] + [b"0"] * 27) + b"]"
    pixels = b'{"instances": [[' + b",".join([row] + [b"[" + b"0," * 27 + b"0]"] * 27) + b"]]}"
    _assert_error(*_post(app_client, "/predict", pixels), 400, "invalid_json", "invalid_input")
    house = b'{"instances": [{"wide": [' + token + b',1,1,1,1], "deep": [1,1,1,1,1,1]}]}'
    _assert_error(
        *_post(app_client, "/predict/housing", house), 400, "invalid_json", "invalid_instance"
    )


WRONG_TYPES = [None, True, -1, 1.5, 2**64, "text", [], {}, [[]], [None], {"instances": []}]


@pytest.mark.parametrize("value", WRONG_TYPES, ids=repr)
def test_wrong_types_at_every_level(app_client, fake_backend, value):
    before, accepted = fake_backend.behaviour.calls, 0
    predict_cases = [
        value,  # the whole body
        {"instances": value},
        {"instances": [value]},
        {"instances": [[value] * 28] * 28},
        {"instances": [[0] * 783 + [value]]},
        {"instances": [{"b64": value}]},
        {"instances": [PIXELS], "top_k": value},
        {"instances": [PIXELS], "version": value},
        {"instances": [PIXELS], "version_label": value},
        {"instances": [PIXELS], "invert": value},
        {"instances": [PIXELS], "return_image": value},
    ]
    housing_cases = [
        value,
        {"instances": value},
        {"instances": [value]},
        {"instances": [{"wide": value, "deep": [1.0] * 6}]},
        {"instances": [{"wide": [value] * 5, "deep": [1.0] * 6}]},
        {"instances": [{**HOUSE, "extra": value}]},
        {"instances": [HOUSE], "version": value},
    ]
    for path, cases in (("/predict", predict_cases), ("/predict/housing", housing_cases)):
        for payload in cases:
            status, headers, body = _post(app_client, path, json.dumps(payload).encode())
            if status == 200:  # e.g. 0 as a pixel, null as "parameter not given"
                accepted += 1
            elif status == 404:  # a well-formed label the model server does not know
                _assert_error(status, headers, body, 404, "model_not_found")
                accepted += 1
            else:
                _assert_error(status, headers, body, 400)
    # Only what passed the gateway's checks reached the model server.
    assert fake_backend.behaviour.calls - before == accepted


# -- parameters: unicode and path traversal ---------------------------------------------------

HOSTILE_LABELS = [
    "../../etc/passwd",
    "..",
    ".",
    "..%2f..%2fetc",
    "%2e%2e%2f",
    "%252e%252e%252f",
    "..\\..\\windows",
    "stable/../canary",
    "/stable",
    "stable\x00",
    "stable\n",
    "stable ",
    "稳定",
    "\uff53\uff54\uff41\uff42\uff4c\uff45",  # fullwidth "stable"
    "stable\u202e",  # right-to-left override
    "caf\u00e9",
    "\U0001f600",
    "a" * 65,
    "",
]
HOSTILE_VERSIONS = [
    "../1",
    "1/../2",
    "1%00",
    "1\x00",
    "0",
    "-1",
    "1.0",
    "1e3",
    "0x10",
    "\uff11",
    "9" * 30,
    "",
    " ",
]


@pytest.mark.parametrize("label", HOSTILE_LABELS, ids=repr)
def test_hostile_version_labels_are_refused_before_the_backend(app_client, no_backend_calls, label):
    for path, payload in (
        ("/predict", {"instances": [PIXELS]}),
        ("/predict/housing", {"instances": [HOUSE]}),
    ):
        body = orjson.dumps({**payload, "version_label": label})
        message = _assert_error(*_post(app_client, path, body), 400, "invalid_parameter")
        assert "version_label" in message
        reply = app_client.post(
            path,
            query_string={"version_label": label},
            data=orjson.dumps(payload),
            content_type="application/json",
        )
        _assert_error(reply.status_code, reply.headers, reply.data, 400, "invalid_parameter")


@pytest.mark.parametrize("version", HOSTILE_VERSIONS, ids=repr)
def test_hostile_versions_are_refused_before_the_backend(app_client, no_backend_calls, version):
    reply = app_client.post(
        "/predict",
        query_string={"version": version},
        data=orjson.dumps({"instances": [PIXELS]}),
        content_type="application/json",
    )
    _assert_error(reply.status_code, reply.headers, reply.data, 400, "invalid_parameter")
    body = orjson.dumps({"instances": [PIXELS], "version": version})
    _assert_error(*_post(app_client, "/predict", body), 400, "invalid_parameter")


def test_unicode_in_parameter_names_and_fields(app_client, no_backend_calls):
    reply = app_client.post(
        "/predict",
        query_string={"t\u043ep_k": "1"},  # Cyrillic o
        data=orjson.dumps({"instances": [PIXELS]}),
        content_type="application/json",
    )
    _assert_error(reply.status_code, reply.headers, reply.data, 400, "unknown_parameter")
    body = orjson.dumps({"instances": [PIXELS], "vérsion": 1})
    _assert_error(*_post(app_client, "/predict", body), 400, "unknown_field")
    body = orjson.dumps({"instances": [{**HOUSE, "MédInc": 1.0}]})
    _assert_error(*_post(app_client, "/predict/housing", body), 400)
    # Invalid UTF-8 inside a JSON string.
    _assert_error(
        *_post(app_client, "/predict", b'{"instances": [], "version_label": "\xff"}'),
        400,
        "invalid_json",
    )


def test_valid_labels_do_reach_the_backend(app_client, fake_backend):
    """The counterpart of the above: the checks are not refusing everything."""
    before = fake_backend.behaviour.calls
    reply = app_client.post("/predict?version_label=stable", json={"instances": [PIXELS]})
    assert reply.status_code == 200
    assert fake_backend.behaviour.calls == before + 1


# -- debug, errors and headers ------------------------------------------------------------------


def test_debug_is_never_on_and_errors_carry_no_trace(monkeypatch, fake_backend):
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_app(GatewayConfig(model_server_grpc=fake_backend.target))
    assert app.debug is False and app.config["DEBUG"] is False

    def explode(*_args, **_kwargs):
        raise ZeroDivisionError("secret-internal-detail")

    monkeypatch.setattr(app.extensions["gateway"], "predict", explode)
    reply = app.test_client().post("/predict", json={"instances": [PIXELS]})
    message = _assert_error(reply.status_code, reply.headers, reply.data, 500, "internal")
    assert "secret" not in message and "ZeroDivision" not in reply.data.decode()


def test_security_headers_on_every_kind_of_response(app_client):
    replies = [
        app_client.get("/healthz"),
        app_client.get("/nowhere"),
        app_client.post("/predict", data=b"x", content_type="text/plain"),
        app_client.post("/predict", json={"instances": [PIXELS]}),
        app_client.get("/metrics"),
        app_client.get("/openapi.json"),
        app_client.get("/", headers={"Accept": "text/html"}),
        app_client.get("/demo/static/demo/demo.js"),
    ]
    for reply in replies:
        assert reply.headers["X-Content-Type-Options"] == "nosniff", reply.request.path
        assert reply.headers["Referrer-Policy"] == "no-referrer"
    page = replies[6]
    assert page.mimetype == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


def test_limits_are_on_by_default():
    config = GatewayConfig.from_env({})
    assert 0 < config.max_body_bytes <= 16 * 1024 * 1024
    assert 0 < config.max_instances <= 1024
    assert 0 < config.max_image_pixels <= 100_000_000
    app = create_app(config)
    assert app.config["MAX_CONTENT_LENGTH"] == config.max_body_bytes
    assert app.config["MAX_FORM_PARTS"] <= config.max_instances + 16


def test_too_many_instances_and_pixels_use_the_default_limits(app_client, no_backend_calls):
    limit = GatewayConfig().max_instances
    body = orjson.dumps({"instances": [[0] * 784] * (limit + 1)})
    _assert_error(*_post(app_client, "/predict", body), 400, "too_many_instances")
    body = orjson.dumps({"instances": [HOUSE] * (limit + 1)})
    _assert_error(*_post(app_client, "/predict/housing", body), 400, "too_many_instances")
    side = int(GatewayConfig().max_image_pixels ** 0.5) + 1
    _assert_error(
        *_post(app_client, "/predict", png_file(side, side, None), "image/png"),
        400,
        "image_too_large",
    )


# -- over HTTP, against the real gunicorn gateway -----------------------------------------------


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _exchange(port: int, data: bytes, body_chunks=(), timeout: float = 20.0) -> bytes:
    """Send ``data`` (head and maybe some body), then ``body_chunks`` as long as the server
    reads them, and return everything it answered until it closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: what we want
        received = []
        while True:
            try:
                piece = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not piece:
                break
            received.append(piece)
    return b"".join(received)


def _split(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def test_100_mb_content_length_is_refused_without_reading_it(live_stack):
    # Only the headers and 1 KB are sent: an answer at all means the rest was never awaited.
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: 104857600\r\nConnection: close\r\n\r\n"
    )
    status, body = _split(_exchange(_port(live_stack.gateway_url), head + b"\x89PNG" * 256))
    assert status == 413
    assert orjson.loads(body)["error"]["code"] == "payload_too_large"


def test_chunked_body_without_length_is_cut_at_the_limit(live_stack):
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    block = b"\x00" * (1024 * 1024)
    chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    # Up to 100 MB offered; the gateway must stop reading after its 8 MiB limit and answer 413.
    answer = _exchange(_port(live_stack.gateway_url), head, [chunk] * 100)
    status, body = _split(answer)
    assert status == 413
    assert orjson.loads(body)["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"deflate,chunked", b"identity, chunked"])
def test_transfer_codings_other_than_chunked_are_refused_unread(live_stack, coding):
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: " + coding + b"\r\nConnection: close\r\n\r\n"
    )
    block = b"\x00" * (1024 * 1024)
    chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    status, body = _split(_exchange(_port(live_stack.gateway_url), head, [chunk] * 20))
    assert status == 501
    error = orjson.loads(body)["error"]
    assert error["code"] == "unsupported_transfer_encoding"
    assert coding.decode().split(",")[0].strip() in error["message"]


@pytest.mark.parametrize(
    "raw_path",
    [
        "/demo/static/../../config.py",
        "/demo/static/..%2f..%2fconfig.py",
        "/demo/static/%2e%2e/%2e%2e/app.py",
        "/demo/static/%2e%2e%2f%2e%2e%2fapp.py",
        "/demo/static/demo/..%5c..%5capp.py",
        "/demo/static//etc/passwd",
        "/demo/static/%252e%252e/app.py",
        "/../../etc/passwd",
        "/predict/..%2fmodels",
    ],
)
def test_path_traversal_in_urls_serves_no_file(live_stack, raw_path):
    head = f"GET {raw_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    answer = _exchange(_port(live_stack.gateway_url), head)
    status, body = _split(answer)
    assert b"import" not in body and b"root:" not in body
    if status == 308:  # werkzeug merges "//": the redirect stays under /demo/static/
        location = answer.partition(b"\r\nLocation: ")[2].split(b"\r\n")[0]
        assert location.split(b"/", 3)[3].startswith(b"demo/static/"), location
        return
    assert status in (400, 404), body[:200]
    assert set(orjson.loads(body)) == {"error"}
