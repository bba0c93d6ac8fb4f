"""serving/codecs/json_pixels.py: the vectorised reader of big JSON pixel batches.

Its contract: when it answers, orjson reads the same body to the same images and the same other
fields; anything it is not sure of is None (the general path then answers or words the error).
"""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.codecs.json_pixels import split_pixel_instances


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 28, 28), dtype=np.uint8)


def _agrees_with_orjson(body: bytes) -> tuple[dict, np.ndarray] | None:
    """The fast answer, after checking it against orjson's reading of the same body."""
    answer = split_pixel_instances(body)
    if answer is not None:
        fields, images = answer
        document = orjson.loads(body)  # must not raise: the fast path accepted only JSON
        expected = np.array(document.pop("instances"), dtype=np.int64)
        assert fields == document
        assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)
        np.testing.assert_array_equal(
            images.reshape(len(expected), -1), expected.reshape(len(expected), -1)
        )
    return answer


@pytest.mark.parametrize(
    "dumps",
    [
        orjson.dumps,
        json.dumps,  # ", " separators
        lambda doc: json.dumps(doc, indent=2),  # newlines and indentation
    ],
)
def test_reads_nested_and_flat_images_as_orjson_does(dumps):
    images = _images(5)
    for instances in (images.tolist(), images.reshape(5, 784).tolist()):
        body = dumps({"instances": instances, "top_k": 3, "version_label": "stable"})
        body = body if isinstance(body, bytes) else body.encode()
        fields, got = _agrees_with_orjson(body)
        assert fields == {"top_k": 3, "version_label": "stable"}
        np.testing.assert_array_equal(got, images)


def test_extreme_values_and_single_digits():
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[0, 0, :3] = (0, 9, 10)
    images[1, 27, -3:] = (99, 100, 255)
    _, got = _agrees_with_orjson(orjson.dumps({"instances": images.tolist()}))
    np.testing.assert_array_equal(got, images)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"255", b"256"),  # out of range: the general path names the instance
        (b"255", b"1255"),  # four digits
        (b",7,", b",07,"),  # leading zero: not JSON
        (b",7,", b",-7,"),
        (b",7,", b",7.0,"),
        (b",7,", b",7e0,"),
        (b",7,", b",true,"),
        (b",7,", b',"7",'),
        (b",7,", b",,"),  # empty element
        (b",7,", b",7 7,"),  # two numbers without a comma
        (b",7,", b",7,7,"),  # a row of 29
        (b",7,", b",[7],"),  # deeper nesting
        (b"]]", b"],]]"),  # trailing comma
        (b'"instances"', b'"\\u0069nstances"'),  # escaped key
        (b'"instances"', b'"instance"'),
    ],
)
def test_anything_but_the_plain_form_is_left_to_the_general_path(old, new):
    images = _images(2)
    images[0, 0, :3] = (255, 7, 1)
    body = orjson.dumps({"instances": images.tolist()}).replace(b"[255,7,1", b"[255,7,1", 1)
    assert old in body
    assert split_pixel_instances(body.replace(old, new, 1)) is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [], "top_k": 1}',
        b'{"instances": [[]]}',
        b'{"instances": [' + b"[" + b",".join([b"1"] * 27) + b"]" * 2,  # 27 pixels, truncated
        b'{"other": {"instances": [[1]]}, "instances": []}',  # the key twice
        b'{"x": {"instances": ' + orjson.dumps(_images(1).tolist()) + b"}}",  # not top level
        b"[" + orjson.dumps({"instances": _images(1).tolist()}) + b"]",  # not an object
        orjson.dumps({"instances": _images(1).tolist()})[:-1],  # unterminated object
        orjson.dumps({"instances": _images(1).tolist()}) + b"x",  # trailing garbage
    ],
)
def test_wrong_documents_are_left_to_the_general_path(body):
    assert split_pixel_instances(body) is None


@pytest.mark.parametrize(
    "after",
    [b"", b', "top_k": 2', b', "version_label": "a]b"', b', "x": [1, 2]', b', "y": {"z": [[3]]}'],
)
def test_fields_after_the_images_never_change_the_answer(after):
    images = _images(3)
    body = orjson.dumps({"instances": images.tolist()})[:-1] + after + b"}"
    answer = _agrees_with_orjson(body)
    if after in (b"", b', "top_k": 2'):  # the usual shapes take the fast path
        assert answer is not None
        np.testing.assert_array_equal(answer[1], images)


def test_mixed_layouts_and_ragged_images_are_left_to_the_general_path():
    nested, flat = _images(1).tolist(), _images(1).reshape(1, 784).tolist()
    assert split_pixel_instances(orjson.dumps({"instances": nested + flat})) is None
    ragged = _images(2).tolist()
    ragged[0][0].append(1)
    ragged[0][1].pop()  # still 784 pixels in image 0, but rows of 29 and 27
    assert split_pixel_instances(orjson.dumps({"instances": ragged})) is None
    short = _images(2).tolist()
    short[1].pop()  # 27 rows
    assert split_pixel_instances(orjson.dumps({"instances": short})) is None


@given(
    body=st.binary(min_size=0, max_size=64),
    where=st.integers(0, 10_000),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_corruption_never_gives_an_answer_orjson_disagrees_with(body, where):
    clean = orjson.dumps({"instances": _images(2, seed=where).tolist(), "top_k": 2})
    at = where % len(clean)
    corrupted = clean[:at] + body + clean[at + len(body) // 2 :]
    _agrees_with_orjson(corrupted)


@given(
    images=st.lists(
        st.lists(st.integers(0, 255), min_size=784, max_size=784), min_size=1, max_size=3
    ),
    flat=st.booleans(),
    spaces=st.sampled_from(["", " ", "\n", "\t", "\r\n  "]),
)
@settings(max_examples=60, deadline=None)
def test_any_valid_batch_is_read_exactly(images, flat, spaces):
    array = np.array(images, dtype=np.uint8)
    instances = array.tolist() if flat else array.reshape(-1, 28, 28).tolist()
    text = json.dumps({"instances": instances}, separators=(spaces + "," + spaces, ":" + spaces))
    _, got = _agrees_with_orjson(text.encode())
    np.testing.assert_array_equal(got.reshape(len(images), 784), array)
