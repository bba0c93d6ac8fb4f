"""Every bad input gets a 4xx JSON error naming the problem; backend faults map to 503/504.

Input errors go through the real gunicorn gateway; backend faults use in-process apps against a
dead port or the fake server (a real server cannot be made slow on demand).
"""

from __future__ import annotations

import base64
import gzip
import io

import numpy as np
import orjson
import pytest
from PIL import Image

from serving.gateway import GatewayConfig, create_app
from tests.helpers.housing import HOUSING_ROW as HOUSE
from tests.helpers.modelserver_process import free_port
from tests.helpers.png import png_file

from .conftest import MAX_BODY_BYTES, MAX_INSTANCES
from .fake_modelserver import FakeModelServer

GOOD = np.zeros((28, 28), dtype=np.int64).tolist()


def _pixels_with(value, row=3, col=5):
    pixels = [[0] * 28 for _ in range(28)]
    pixels[row][col] = value
    return pixels


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb() -> bytes:
    return png_file(10_000, 10_000, None)  # declares 100 Mpx, holds nothing


def _assert_error(reply, status: int, code: str, *fragments: str) -> dict:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    body = reply.json
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    for fragment in fragments:
        assert fragment in body["error"]["message"]
    assert "Traceback" not in reply.body.decode()
    return body


JSON_CASES = [
    # (path, payload, status, code, fragments)
    ("/predict", {"instances": []}, 400, "empty_instances", ["at least one"]),
    ("/predict", {"instances": [GOOD] * (MAX_INSTANCES + 1)}, 400, "too_many_instances",
     [f"{MAX_INSTANCES + 1} instances", f"limit is {MAX_INSTANCES}"]),
    ("/predict", {"images": [GOOD]}, 400, "unknown_field", ["'images'"]),
    ("/predict", {"top_k": 1}, 400, "missing_instances", ["instances"]),
    ("/predict", {"instances": GOOD[0][0]}, 400, "invalid_instances", ["must be a list"]),
    ("/predict", [GOOD], 400, "invalid_json", ["expected a JSON object"]),
    ("/predict", {"instances": [GOOD, _pixels_with(256)]}, 400, "invalid_input",
     ["instance 1", "pixel [3, 5] is 256", "0..255"]),
    ("/predict", {"instances": [_pixels_with(-3)]}, 400, "invalid_input", ["pixel [3, 5] is -3"]),
    ("/predict", {"instances": [_pixels_with(1.5)]}, 400, "invalid_input", ["is 1.5"]),
    ("/predict", {"instances": [_pixels_with(1e300)]}, 400, "invalid_input", ["is 1e+300,"]),
    ("/predict", {"instances": [_pixels_with(300.0)]}, 400, "invalid_input", ["is 300,"]),
    ("/predict", {"instances": [_pixels_with("12")]}, 400, "invalid_input", ["string"]),
    ("/predict", {"instances": [_pixels_with(None)]}, 400, "invalid_input", ["null"]),
    ("/predict", {"instances": [_pixels_with(True)]}, 400, "invalid_input", ["boolean"]),
    ("/predict", {"instances": [GOOD[:27]]}, 400, "invalid_input", ["instance 0", "[27, 28]"]),
    ("/predict", {"instances": [[0] * 700]}, 400, "invalid_input", ["[700]"]),
    ("/predict", {"instances": [GOOD, [*GOOD[:27], [0] * 3]]}, 400, "invalid_input",
     ["instance 1", "row 27 has 3 pixels"]),
    ("/predict", {"instances": [{"b64": "!!!"}]}, 400, "invalid_instance",
     ["instance 0", "not valid base64", "'!' at position 0"]),
    ("/predict", {"instances": [{"b64": "data:image/png;base64,iVBORw0KGgo="}]}, 400,
     "invalid_instance", ["data URL", "after 'data:image/png;base64,'"]),
    ("/predict", {"instances": [{"b64": "iVBOR_w0"}]}, 400, "invalid_instance",
     ["URL-safe", "position 5"]),
    ("/predict", {"instances": [{"b64": base64.b64encode(b"hello").decode()}]}, 400,
     "invalid_image", ["instance 0", "not a decodable image"]),
    ("/predict", {"instances": [{"png": "x"}]}, 400, "invalid_instance", ["'png'"]),
    ("/predict", {"instances": [{"b64": base64.b64encode(_bomb()).decode()}]}, 400,
     "image_too_large", ["10000x10000"]),
    ("/predict", {"instances": [GOOD], "top_k": 0}, 400, "invalid_parameter", ["top_k", "1..10"]),
    ("/predict", {"instances": [GOOD], "top_k": 11}, 400, "invalid_parameter", ["got 11"]),
    ("/predict", {"instances": [GOOD], "top_k": "3"}, 400, "invalid_parameter", ["integer"]),
    ("/predict", {"instances": [GOOD], "version": 0}, 400, "invalid_parameter", ["version"]),
    ("/predict", {"instances": [GOOD], "version": 1, "version_label": "stable"}, 400,
     "invalid_parameter", ["not both"]),
    ("/predict", {"instances": [GOOD], "invert": "maybe"}, 400, "invalid_parameter",
     ["auto, always, never"]),
    ("/predict/housing", {"instances": []}, 400, "empty_instances", []),
    ("/predict/housing", {"instances": [{k: v for k, v in HOUSE.items() if k != "Latitude"}]},
     400, "missing_feature", ["instance 0", "'Latitude'"]),
    ("/predict/housing", {"instances": [HOUSE, {**HOUSE, "Rooms": 3}]}, 400, "unknown_feature",
     ["instance 1", "'Rooms'"]),
    ("/predict/housing", {"instances": [{**HOUSE, "MedInc": "high"}]}, 400, "invalid_instance",
     ["'MedInc'", "must be a number"]),
    ("/predict/housing", {"instances": [{**HOUSE, "MedInc": 1e300}]}, 400, "invalid_instance",
     ["float32"]),
    ("/predict/housing", {"instances": [{"wide": [1, 2, 3], "deep": [1] * 6}]}, 400,
     "invalid_instance", ["'wide' must be a list of 5 numbers, got a list of 3"]),
    ("/predict/housing", {"instances": [[1] * 8]}, 400, "invalid_instance", ["object"]),
    ("/predict/housing", {"instances": [HOUSE], "top_k": 3}, 400, "unknown_field", ["top_k"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "payload", "status", "code", "fragments"),
    JSON_CASES,
    ids=[f"{case[0]}:{case[3]}:{i}" for i, case in enumerate(JSON_CASES)],
)
def test_bad_json_input(http, path, payload, status, code, fragments):
    _assert_error(http.post_json(path, payload), status, code, *fragments)


def test_a_pixel_beyond_64_bits_is_shown_as_the_float_it_was_read_as(http):
    # orjson reads integers beyond 64 bits as floats; the message shows that float, not digits
    # nobody sent (1000000000000000019884624838656).
    body = orjson.dumps({"instances": [_pixels_with(7)]}).replace(b"7", b"1" + b"0" * 30)
    _assert_error(
        http.post("/predict", body, "application/json"),
        400,
        "invalid_input",
        "instance 0",
        "pixel [3, 5] is 1e+30, expected an integer 0..255",
    )


def test_json_infinity_and_nan_literals_are_malformed_json(http):
    for literal in (b"NaN", b"Infinity"):
        body = b'{"instances": [[' + literal + b"," + b"0," * 782 + b"0]]}"
        _assert_error(http.post("/predict", body, "application/json"), 400, "invalid_json")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "fragment"),
    [
        (b'{"instances": [', "application/json", 400, "invalid_json", "malformed JSON"),
        (b"", "application/json", 400, "invalid_json", "empty"),
        (b"\xff\xfe", "application/json", 400, "invalid_json", "malformed JSON"),
        (b"instances=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type",
         "application/json"),
        (b"hi", "text/plain", 415, "unsupported_media_type", "'text/plain'"),
        (b"not an image", "image/png", 400, "invalid_image", "not a decodable image"),
        (b"", "image/jpeg", 400, "invalid_image", "empty"),
        (b"{}", "", 415, "unsupported_media_type", "no Content-Type"),
    ],
)  # fmt: skip
def test_bad_bodies(http, body, content_type, status, code, fragment):
    headers = {"Content-Type": content_type} if content_type else {}
    reply = http.request("POST", "/predict", body=body, headers=headers)
    _assert_error(reply, status, code, fragment)


def test_truncated_png_is_refused(http):
    data = _png(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    reply = http.post("/predict", data[: len(data) // 2], "image/png")
    _assert_error(reply, 400, "invalid_image", "body")


def test_png_with_rows_missing_is_refused(http):
    # A complete zlib stream with 14 of 28 rows: Pillow alone would answer with the rest black.
    rows = b"".join(b"\x00" + bytes(range(100, 128)) for _ in range(14))
    reply = http.post("/predict", png_file(28, 28, rows), "image/png")
    _assert_error(reply, 400, "invalid_image", "ends after 14 of 28 rows")


def test_housing_wants_json(http):
    _assert_error(http.post("/predict/housing", b"x", "text/csv"), 415, "unsupported_media_type")


def test_multipart_errors(http):
    png = _png(np.zeros((28, 28), np.uint8))
    reply = http.request("POST", "/predict", fields={"top_k": "2"})
    _assert_error(reply, 400, "empty_instances", "image files")
    reply = http.request("POST", "/predict", fields={"a": ("a.png", b"", "image/png")})
    _assert_error(reply, 400, "invalid_image", "'a.png'", "empty")
    reply = http.request("POST", "/predict", fields={"a": ("a.txt", b"hello", "text/plain")})
    _assert_error(reply, 400, "invalid_image", "file 0", "not a decodable image")
    reply = http.request("POST", "/predict", fields={"a": ("a.png", png, "image/png"), "k": "1"})
    _assert_error(reply, 400, "unknown_field", "'k'")
    reply = http.request(
        "POST", "/predict?top_k=2", fields={"a": ("a.png", png, "image/png"), "top_k": "3"}
    )
    _assert_error(reply, 400, "invalid_parameter", "both")


@pytest.mark.parametrize(
    ("query", "code", "fragment"),
    [
        ("?top_k=x", "invalid_parameter", "top_k must be an integer"),
        ("?version=-1", "invalid_parameter", "version must be"),
        ("?version_label=a%20b", "invalid_parameter", "version_label"),
        ("?topk=3", "unknown_parameter", "'topk'"),
    ],
)
def test_bad_query_parameters(http, query, code, fragment):
    reply = http.post_json(f"/predict{query}", {"instances": [GOOD]})
    _assert_error(reply, 400, code, fragment)


def test_parameter_given_twice_is_refused(http):
    reply = http.post_json("/predict?top_k=2", {"instances": [GOOD], "top_k": 2})
    _assert_error(reply, 400, "invalid_parameter", "both in the query string and the JSON body")


def test_body_too_large_is_413(http):
    reply = http.post("/predict", b"0" * (MAX_BODY_BYTES + 1), "image/png")
    _assert_error(reply, 413, "payload_too_large", str(MAX_BODY_BYTES))


def test_unknown_route_and_wrong_method(http):
    _assert_error(http.get("/nowhere"), 404, "not_found")
    reply = http.get("/predict")
    _assert_error(reply, 405, "method_not_allowed", "POST")
    assert "POST" in reply.headers["Allow"]
    _assert_error(http.request("DELETE", "/healthz"), 405, "method_not_allowed")


# -- backend faults and unexpected errors (in-process apps) ---------------------------------


def _client(target: str, **overrides):
    config = GatewayConfig(model_server_grpc=target, retry_backoff_seconds=0.01, **overrides)
    return create_app(config).test_client()


def _post(client, path="/predict", payload=None):
    reply = client.post(path, data=orjson.dumps(payload or {"instances": [GOOD]}),
                        content_type="application/json")  # fmt: skip
    return reply.status_code, reply.headers, orjson.loads(reply.data)


def test_unreachable_model_server_is_503_with_retry_after():
    client = _client(f"127.0.0.1:{free_port()}", timeout_seconds=1.0)
    status, headers, body = _post(client)
    assert status == 503
    assert body["error"]["code"] == "backend_unavailable"
    assert "unavailable" in body["error"]["message"]
    assert int(headers["Retry-After"]) >= 1
    status, headers, body = _post(client, "/predict/housing", {"instances": [{
        "wide": [1] * 5, "deep": [1] * 6}]})  # fmt: skip
    assert status == 503


def test_slow_model_server_is_504():
    fake = FakeModelServer().start()
    try:
        fake.behaviour.delay = 1.0
        status, _headers, body = _post(_client(fake.target, timeout_seconds=0.2))
        assert status == 504
        assert body["error"]["code"] == "backend_timeout"
        assert "no answer" in body["error"]["message"]
    finally:
        fake.stop()


def test_unexpected_exception_is_500_without_trace(monkeypatch):
    fake = FakeModelServer().start()
    try:
        app = create_app(GatewayConfig(model_server_grpc=fake.target))
        state = app.extensions["gateway"]

        def explode(*_args, **_kwargs):
            raise RuntimeError("secret internal detail")

        monkeypatch.setattr(state, "predict", explode)
        reply = app.test_client().post("/predict", json={"instances": [GOOD]})
        assert reply.status_code == 500
        body = orjson.loads(reply.data)
        assert body["error"]["code"] == "internal"
        assert "secret" not in reply.data.decode() and "Traceback" not in reply.data.decode()
    finally:
        fake.stop()


def test_named_housing_features_without_a_model_card_are_500_model_card_missing(tmp_path):
    fake = FakeModelServer().start()
    try:
        app = create_app(GatewayConfig(model_server_grpc=fake.target, model_cards_dir=tmp_path))
        reply = app.test_client().post("/predict/housing", json={"instances": [HOUSE]})
        assert reply.status_code == 500
        error = orjson.loads(reply.data)["error"]
        assert error["code"] == "model_card_missing"
        assert error["message"].startswith("instance 0: named features need the housing model card")
        assert "MODEL_CARDS_DIR" in error["message"]
    finally:
        fake.stop()


# -- found by the black-box audit: silently half-read or misleadingly answered inputs ---------


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/predict", b'{"instances": [], "instances": [' + orjson.dumps(GOOD) + b"]}",
         "duplicate key 'instances' in the JSON object"),
        ("/predict", b'{"instances": [' + orjson.dumps(GOOD) + b'], "top_k": 1, "top_k": 9}',
         "duplicate key 'top_k'"),
        # an escaped key is the same key
        ("/predict", b'{"instances": [], "instanc\\u0065s": [' + orjson.dumps(GOOD) + b"]}",
         "duplicate key 'instances'"),
        # the big-body pixel fast path
        ("/predict", b'{"top_k": 1, "instances": [' + b",".join([orjson.dumps(GOOD)] * 30)
         + b'], "top_k": 5}', "duplicate key 'top_k'"),
        ("/predict", b'{"instances": [{"b64": "AAAA"}, {"b64": "!!", "b64": "AAAA"}]}',
         "duplicate key 'b64' in instance 1"),
        ("/predict/housing", b'{"instances": [{"MedInc": "x", ' + orjson.dumps(HOUSE)[1:] + b"]}",
         "duplicate key 'MedInc' in instance 0"),
    ],
)  # fmt: skip
def test_duplicate_json_keys_are_refused(http, path, body, fragment):
    _assert_error(http.post(path, body, "application/json"), 400, "invalid_json", fragment)


def test_a_colon_inside_a_string_is_not_a_duplicate(http):
    reply = http.post_json("/predict", {"instances": [GOOD], "version_label": "a:b"})
    _assert_error(reply, 400, "invalid_parameter", "version_label", "'a:b'")


def test_a_parameter_repeated_in_the_query_or_the_form_is_refused(http):
    reply = http.post_json("/predict?top_k=3&top_k=4", {"instances": [GOOD]})
    _assert_error(reply, 400, "invalid_parameter", "top_k given 2 times in the query string")
    png = _png(np.zeros((28, 28), np.uint8))
    reply = http.request(
        "POST", "/predict", fields=[("a", ("a.png", png, "image/png")), ("top_k", "3"),
                                    ("top_k", "5")],
    )  # fmt: skip
    _assert_error(reply, 400, "invalid_parameter", "top_k given 2 times in the form fields")


def test_json_flags_must_be_json_booleans(http):
    reply = http.post_json("/predict", {"instances": [GOOD], "return_image": "true"})
    _assert_error(reply, 400, "invalid_parameter", "return_image", "the string 'true'")
    assert http.post_json("/predict?return_image=true", {"instances": [GOOD]}).status == 200


def test_long_query_integers_get_the_range_message(http):
    reply = http.post_json("/predict?version=9223372036854775808", {"instances": [GOOD]})
    _assert_error(reply, 400, "invalid_parameter", "got 9223372036854775808")
    reply = http.post_json("/predict?top_k=" + "9" * 40, {"instances": [GOOD]})
    _assert_error(reply, 400, "invalid_parameter", "top_k must be 1..10", "40-digit")


@pytest.mark.parametrize("path", ["/predict", "/predict/housing"])
def test_compressed_bodies_are_415(http, path):
    body = gzip.compress(orjson.dumps({"instances": [GOOD]}))
    reply = http.request(
        "POST", path, body=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )  # fmt: skip
    _assert_error(reply, 415, "unsupported_media_type", "Content-Encoding 'gzip'")


def test_named_housing_feature_out_of_float32_is_named(http):
    reply = http.post_json("/predict/housing", {"instances": [{**HOUSE, "AveRooms": -1e39}]})
    _assert_error(reply, 400, "invalid_instance", "feature 'AveRooms' is -1e+39", "float32")


@pytest.mark.parametrize(
    ("content_type", "body", "fragment"),
    [
        ("multipart/form-data", b"--X\r\n\r\n--X--\r\n", "without a boundary"),
        ("multipart/form-data; boundary=X", b"not multipart at all", "no part starts with"),
        ("multipart/form-data; boundary=X",
         b'--X\r\nContent-Disposition: form-data; name="a"; filename="a.png"\r\n\r\nabc',
         "ends before the closing boundary"),
    ],
)  # fmt: skip
def test_malformed_multipart_is_named(http, content_type, body, fragment):
    _assert_error(http.post("/predict", body, content_type), 400, "invalid_multipart", fragment)
