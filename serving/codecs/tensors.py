"""numpy arrays <-> ``tensorflow.TensorProto``, from raw bytes rather than element by element.

Works on TensorProto instances of either class family (the generated ``tensorflow`` modules or
``serving.protos``), because it only reads and writes fields.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from serving.codecs import CodecError

# DataType enum numbers (tensorflow/core/framework/types.proto) for the dtypes we serve.
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_UINT16, DT_HALF, DT_UINT32, DT_UINT64 = 9, 10, 17, 19, 22, 23

NUMPY_DTYPE_BY_DT: dict[int, np.dtype] = {
    DT_FLOAT: np.dtype("<f4"),
    DT_DOUBLE: np.dtype("<f8"),
    DT_INT32: np.dtype("<i4"),
    DT_UINT8: np.dtype("u1"),
    DT_INT16: np.dtype("<i2"),
    DT_INT8: np.dtype("i1"),
    DT_INT64: np.dtype("<i8"),
    DT_BOOL: np.dtype("?"),
    DT_UINT16: np.dtype("<u2"),
    DT_HALF: np.dtype("<f2"),
    DT_UINT32: np.dtype("<u4"),
    DT_UINT64: np.dtype("<u8"),
    DT_STRING: np.dtype(object),
}
DT_BY_NAME: dict[str, int] = {
    "float32": DT_FLOAT,
    "float64": DT_DOUBLE,
    "int32": DT_INT32,
    "uint8": DT_UINT8,
    "int16": DT_INT16,
    "int8": DT_INT8,
    "int64": DT_INT64,
    "bool": DT_BOOL,
    "uint16": DT_UINT16,
    "float16": DT_HALF,
    "uint32": DT_UINT32,
    "uint64": DT_UINT64,
    "string": DT_STRING,
}
NAME_BY_DT: dict[int, str] = {dt: name for name, dt in DT_BY_NAME.items()}

# Which repeated field holds the values of a dtype when tensor_content is not used.
_VALUE_FIELD_BY_DT = {
    DT_FLOAT: "float_val",
    DT_DOUBLE: "double_val",
    DT_INT32: "int_val",
    DT_UINT8: "int_val",
    DT_INT16: "int_val",
    DT_INT8: "int_val",
    DT_UINT16: "int_val",
    DT_HALF: "half_val",
    DT_INT64: "int64_val",
    DT_BOOL: "bool_val",
    DT_UINT32: "uint32_val",
    DT_UINT64: "uint64_val",
    DT_STRING: "string_val",
}

_ALL_VALUE_FIELDS = frozenset(_VALUE_FIELD_BY_DT.values())

#: A tensor may declare at most this many elements; guards against a tiny message that declares
#: a huge shape and asks us to allocate it.
MAX_ELEMENTS = 1 << 26


def dtype_name(dt: int) -> str:
    """Human name of a DataType number (``"float32"``), or ``"DT_<n>"`` for unsupported ones."""
    return NAME_BY_DT.get(dt, f"DT_{dt}")


def dt_for_numpy(dtype: np.dtype) -> int:
    """The DataType number for a numpy dtype; bytes/str/object arrays map to DT_STRING."""
    if dtype.kind in "OSU":
        return DT_STRING
    for dt, candidate in NUMPY_DTYPE_BY_DT.items():
        if candidate != np.dtype(object) and candidate == dtype.newbyteorder("<"):
            return dt
    raise CodecError(f"unsupported array dtype {dtype}")


def ndarray_to_tensor_proto(array: Any, proto: Any) -> Any:
    """Fill ``proto`` (a TensorProto) with ``array`` and return it.

    Numeric arrays go into ``tensor_content`` as little-endian bytes; strings into ``string_val``.
    """
    array = np.asarray(array)
    dt = dt_for_numpy(array.dtype)
    proto.dtype = dt
    dims = proto.tensor_shape.dim
    del dims[:]
    for size in array.shape:
        dims.add().size = size
    if dt == DT_STRING:
        proto.string_val.extend(
            item if isinstance(item, bytes) else str(item).encode() for item in array.reshape(-1)
        )
    else:
        little = array.astype(NUMPY_DTYPE_BY_DT[dt], copy=False)
        proto.tensor_content = np.ascontiguousarray(little).tobytes()
    return proto


def tensor_shape(proto: Any) -> tuple[int, ...]:
    """The declared shape of a TensorProto; refuses unknown rank and negative sizes."""
    shape_proto = proto.tensor_shape
    if shape_proto.unknown_rank:
        raise CodecError("tensor shape has unknown rank")
    shape = tuple(int(dim.size) for dim in shape_proto.dim)
    if any(size < 0 for size in shape):
        raise CodecError(f"tensor shape {list(shape)} has a negative dimension")
    return shape


def tensor_proto_to_ndarray(proto: Any) -> np.ndarray:
    """Decode a TensorProto into a numpy array, checking that its content matches its shape."""
    dt = int(proto.dtype)
    dtype = NUMPY_DTYPE_BY_DT.get(dt)
    if dtype is None:
        raise CodecError(f"unsupported tensor dtype {dtype_name(dt)}")
    shape = tensor_shape(proto)
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise CodecError(
            f"tensor shape {list(shape)} has {count} elements, more than {MAX_ELEMENTS}"
        )
    # A zero dimension makes the count 0, but numpy still refuses (ValueError) to shape an empty
    # array as e.g. [0, 2**40, 2**40]: bound the other dimensions too.
    if math.prod(max(size, 1) for size in shape) > MAX_ELEMENTS:
        raise CodecError(f"tensor shape {list(shape)} has dimensions larger than {MAX_ELEMENTS}")
    if dt != DT_STRING and proto.tensor_content:
        content = proto.tensor_content
        expected = count * dtype.itemsize
        if len(content) != expected:
            raise CodecError(
                f"tensor_content has {len(content)} bytes but shape {list(shape)} of "
                f"{dtype_name(dt)} needs {expected}"
            )
        return np.frombuffer(content, dtype=dtype).reshape(shape)
    values = getattr(proto, _VALUE_FIELD_BY_DT[dt])
    if dt == DT_STRING:
        flat = np.empty(len(values), dtype=object)
        flat[:] = list(values)
    elif dt == DT_HALF:  # half_val holds the float16 bit patterns in int32s
        flat = _checked_integers(values, np.dtype("<u2"), "half_val").view(np.float16)
    elif dtype.kind in "iu":
        flat = _checked_integers(values, dtype, _VALUE_FIELD_BY_DT[dt])
    else:
        flat = np.asarray(values, dtype=dtype) if len(values) else np.empty(0, dtype)
    if len(flat) == count:
        return flat.reshape(shape)
    if len(flat) == 1 and count > 1:
        # TensorFlow fills a shape from a single value. A read-only broadcast view, not a
        # filled copy: a message of a few bytes declaring 2**26 float64s would otherwise cost
        # 512 MB before any check of the shape against the signature.
        return np.broadcast_to(flat[:1].reshape(()), shape)
    field = _VALUE_FIELD_BY_DT[dt]
    if not len(flat):
        # The values were put in the wrong field (string_val for uint8, float_val for int): say
        # so, rather than "0 values".
        for other in _ALL_VALUE_FIELDS - {field}:
            if len(getattr(proto, other)):
                raise CodecError(
                    f"a {dtype_name(dt)} tensor takes its values from {field} or "
                    f"tensor_content, but {other} was filled"
                )
    raise CodecError(f"tensor has {len(flat)} values but shape {list(shape)} needs {count}")


def _checked_integers(values: Any, dtype: np.dtype, field: str) -> np.ndarray:
    """Integer field values as ``dtype``, refusing values the dtype cannot hold (no wrap-around)."""
    wide = np.asarray(
        values, dtype=np.uint64 if dtype.kind == "u" and dtype.itemsize == 8 else np.int64
    )
    if len(wide):
        info = np.iinfo(dtype)
        low, high = wide.min(), wide.max()
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            name = _numpy_dtype_name(dtype)
            raise CodecError(f"{field} value {int(bad)} is out of range for {name}")
    return wide.astype(dtype)


def _numpy_dtype_name(dtype: np.dtype) -> str:
    """Human name of a numpy dtype as used in error messages (``"uint8"``)."""
    return np.dtype(dtype).newbyteorder("=").name
