"""The TF-free proto classes and the tensor codec agree with TensorFlow's own implementation."""

import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from serving import protos
from serving.codecs import CodecError
from serving.codecs.tensors import ndarray_to_tensor_proto, tensor_proto_to_ndarray


def test_descriptor_set_matches_installed_tensorflow_serving_api():
    result = subprocess.run(
        [sys.executable, "-m", "serving.protos.build", "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_importing_protos_does_not_import_tensorflow():
    code = "import sys, serving.protos, serving.codecs.tensors; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_messages_round_trip_through_generated_classes():
    from tensorflow_serving.apis import predict_pb2

    ours = protos.PredictRequest()
    ours.model_spec.name = "fashion_mnist"
    ours.model_spec.version_label = "stable"
    image = (np.arange(784) % 256).astype(np.uint8).reshape(1, 28, 28)
    ndarray_to_tensor_proto(image, ours.inputs["images"])
    theirs = predict_pb2.PredictRequest.FromString(ours.SerializeToString())
    assert theirs.model_spec.version_label == "stable"
    assert theirs.inputs["images"].tensor_shape.dim[1].size == 28


@pytest.mark.parametrize(
    "array",
    [
        (np.arange(784 * 2) % 256).astype(np.uint8).reshape(2, 28, 28),
        np.linspace(-3, 3, 30, dtype=np.float32).reshape(5, 6),
        np.array([1, -2, 3], dtype=np.int64),
        np.array([b"T-shirt/top", b"Ankle boot"], dtype=object),
        np.array([0.5, 1.5], dtype=np.float16),
    ],
)
def test_tensor_codec_agrees_with_tensorflow(array):
    import tensorflow as tf

    decoded_by_tf = tf.make_ndarray(ndarray_to_tensor_proto(array, tf.make_tensor_proto(0)))
    np.testing.assert_array_equal(decoded_by_tf, array)
    np.testing.assert_array_equal(tensor_proto_to_ndarray(tf.make_tensor_proto(array)), array)


def test_typed_value_fields_and_scalar_fill_decode_like_tensorflow():
    import tensorflow as tf

    proto = tf.make_tensor_proto(7.0, dtype=tf.float32, shape=[2, 3])
    np.testing.assert_array_equal(tensor_proto_to_ndarray(proto), tf.make_ndarray(proto))


def test_content_length_must_match_declared_shape():
    proto = ndarray_to_tensor_proto(np.zeros((2, 28, 28), np.uint8), protos.TensorProto())
    proto.tensor_shape.dim[0].size = 3
    with pytest.raises(CodecError, match="needs 2352"):
        tensor_proto_to_ndarray(proto)


def test_huge_declared_shape_is_refused_before_allocating():
    proto = protos.TensorProto(dtype=1)
    proto.float_val.append(1.0)
    for size in (100_000, 100_000):
        proto.tensor_shape.dim.add().size = size
    with pytest.raises(CodecError, match="more than"):
        tensor_proto_to_ndarray(proto)


def test_a_single_value_fills_the_shape_without_allocating_it():
    # As TensorFlow: one value fills the declared shape. 2**26 float64s (512 MB) declared by a
    # message of a few bytes must not cost that memory before the shape is checked.
    proto = protos.TensorProto(dtype=protos.DATA_TYPE["DT_DOUBLE"])
    proto.double_val.append(2.5)
    for size in (8192, 8192):
        proto.tensor_shape.dim.add().size = size
    tracemalloc.start()
    try:
        array = tensor_proto_to_ndarray(proto)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert array.shape == (8192, 8192) and array.dtype == np.float64
    assert array[0, 0] == array[-1, -1] == 2.5
    assert peak < 1 << 20, peak
    small = protos.TensorProto(dtype=protos.DATA_TYPE["DT_UINT8"])
    small.int_val.append(7)
    small.tensor_shape.dim.add().size = 3
    np.testing.assert_array_equal(tensor_proto_to_ndarray(small), np.array([7, 7, 7], np.uint8))


def test_unsupported_dtype_is_named():
    proto = protos.TensorProto(dtype=protos.DATA_TYPE["DT_COMPLEX64"])
    with pytest.raises(CodecError, match="DT_8"):
        tensor_proto_to_ndarray(proto)


@pytest.mark.parametrize(
    ("dtype_name", "field", "value"),
    [("DT_UINT8", "int_val", 300), ("DT_INT8", "int_val", -129), ("DT_HALF", "half_val", 70000)],
)
def test_typed_values_out_of_range_are_refused_not_wrapped(dtype_name, field, value):
    proto = protos.TensorProto(dtype=protos.DATA_TYPE[dtype_name])
    proto.tensor_shape.dim.add().size = 1
    getattr(proto, field).append(value)
    with pytest.raises(CodecError, match=f"{field} value {value} is out of range"):
        tensor_proto_to_ndarray(proto)


@pytest.mark.parametrize(
    ("dtype_name", "field", "value", "expected_field"),
    [
        ("DT_UINT8", "string_val", b"a", "int_val"),
        ("DT_UINT8", "float_val", 1.0, "int_val"),
        ("DT_FLOAT", "int_val", 1, "float_val"),
    ],
)
def test_values_in_the_wrong_typed_field_are_named(dtype_name, field, value, expected_field):
    # TensorFlow would silently read the empty expected field as zeros.
    proto = protos.TensorProto(dtype=protos.DATA_TYPE[dtype_name])
    proto.tensor_shape.dim.add().size = 2
    getattr(proto, field).extend([value, value])
    with pytest.raises(
        CodecError,
        match=f"takes its values from {expected_field} or tensor_content, but {field} was filled",
    ):
        tensor_proto_to_ndarray(proto)
