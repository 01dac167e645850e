"""The safetensors header: the dtype names, how `save` lays a file out, how `load` checks one.

A safetensors file is three parts:

    [N: 8 bytes, little-endian uint64][header: N bytes of UTF-8 JSON][data section]

The header maps each tensor's key to `{"dtype": "F32", "shape": [2, 3], "data_offsets":
[begin, end]}`, the offsets counted in bytes from the start of the data section, and may hold
`"__metadata__"`, an object of strings. Tensors are stored C-ordered and little-endian.
`decode` accepts a header only if it describes exactly the file it came from: a bounded length,
JSON without repeated keys, known dtypes, `end - begin == prod(shape) * itemsize`, and tensors
that tile the data section from its first byte to its last, without gaps or overlaps. So once a
header is decoded, every read that follows has a known length inside the file.
"""
import json
import math
import re
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

# safetensors' names; what safetensors 0.4+ writes and `safetensors.numpy` reads back.
DTYPES = {name: np.dtype(dtype) for name, dtype in (
    ("BOOL", np.bool_), ("I8", np.int8), ("I16", np.int16), ("I32", np.int32), ("I64", np.int64),
    ("U8", np.uint8), ("U16", np.uint16), ("U32", np.uint32), ("U64", np.uint64),
    ("F16", np.float16), ("F32", np.float32), ("F64", np.float64), ("BF16", jnp.bfloat16),
    ("C64", np.complex64))}
NAMES = {dtype: name for name, dtype in DTYPES.items()}
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
METADATA = "__metadata__"
CHECKSUM = "funcdl.sha256"  # hex SHA-256 of the data section, in the metadata
RESERVED_PREFIX = "funcdl."
_FIELDS = ("dtype", "shape", "data_offsets")
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


class Tensor(NamedTuple):
    """One header entry: `key`, `dtype` (NumPy), `shape`, and its bytes `[begin, end)` counted
    from the start of the data section."""
    key: str
    dtype: np.dtype
    shape: tuple
    begin: int
    end: int


class Header(NamedTuple):
    """A decoded header: the metadata `{str: str}`, the tensors in file order, and where the
    data section starts (`8 + N`) in the file."""
    metadata: dict
    tensors: list
    data_start: int


def file_order(arrays):
    """`[(key, array)]` in the order `save` lays them out: larger items first, then by key, so
    that each tensor starts at a multiple of its item size (the header is padded to 8 bytes)."""
    return sorted(arrays.items(), key=lambda item: (-item[1].dtype.itemsize, item[0]))


def encode(ordered, metadata):
    """The 8-byte length and the space-padded JSON header for `ordered = [(key, array)]`
    (C-contiguous NumPy arrays, written in this order) and `metadata` (`{str: str}`)."""
    header, offset = {METADATA: metadata}, 0
    for key, array in ordered:
        header[key] = {"dtype": NAMES[array.dtype], "shape": list(array.shape),
                       "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    try:
        text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate in a key or a metadata string
        raise ValueError(f"keys and metadata must be valid Unicode text, got {error.object!r}") from None
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def header_length(prefix, file_size, path):
    """N, from the file's first 8 bytes, once it is known to fit in a file of `file_size` bytes."""
    length = int.from_bytes(prefix, "little")
    if length > min(MAX_HEADER_BYTES, file_size - 8):
        raise invalid(path, f"its first 8 bytes give a header of {length} bytes, in a file of "
                            f"{file_size} bytes (the limit is {MAX_HEADER_BYTES})")
    return length


def decode(text, data_bytes, path):
    """The `Header` in the bytes `text`, checked against a data section of `data_bytes` bytes."""
    if not text.startswith(b"{"):
        raise invalid(path, f"its header does not start with '{{': {bytes(text[:20])!r}")
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise invalid(path, f"its header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise invalid(path, f"its header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop(METADATA, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise invalid(path, f"its {METADATA} is not an object of strings: {metadata!r:.200}")
    if CHECKSUM in metadata and not _HEX_SHA256.fullmatch(metadata[CHECKSUM]):
        raise invalid(path, f"its {CHECKSUM} is not 64 hex digits: {metadata[CHECKSUM]!r:.100}")
    tensors = sorted((_tensor(key, entry, path) for key, entry in header.items()),
                     key=lambda t: (t.begin, t.end))
    position = 0
    for tensor in tensors:
        if tensor.begin != position:
            raise invalid(path, f"tensor {tensor.key} starts at byte {tensor.begin} of the data, "
                                f"where {position} was expected (tensors must tile the data)")
        position = tensor.end
    if position != data_bytes:
        raise invalid(path, f"its tensors cover {position} bytes, its data section has {data_bytes}")
    return Header(metadata, tensors, len(text) + 8)


def _tensor(key, entry, path):
    if not isinstance(entry, dict) or sorted(entry) != sorted(_FIELDS):
        raise invalid(path, f"entry {key} must be an object with exactly {', '.join(_FIELDS)}, "
                            f"got {entry!r:.200}")
    name, shape, offsets = (entry[field] for field in _FIELDS)
    if name not in DTYPES:
        raise invalid(path, f"tensor {key} has the dtype {name!r:.40}; known: {', '.join(DTYPES)}")
    if not (isinstance(shape, list) and all(_is_index(n) for n in shape)):
        raise invalid(path, f"tensor {key} has the shape {shape!r:.200}, not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_index, offsets))
            and offsets[0] <= offsets[1]):
        raise invalid(path, f"tensor {key} has the data_offsets {offsets!r:.200}, not [begin, end]")
    dtype, (begin, end) = DTYPES[name], offsets
    if end - begin != math.prod(shape) * dtype.itemsize:
        raise invalid(path, f"tensor {key} of shape {tuple(shape)} {dtype} needs "
                            f"{math.prod(shape) * dtype.itemsize} bytes, its offsets span {end - begin}")
    return Tensor(key, dtype, tuple(shape), begin, end)


def _is_index(value):
    return type(value) is int and 0 <= value < 2**63


def _unique_keys(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = next(key for key in keys if keys.count(key) > 1)
        raise ValueError(f"the key {repeated!r:.100} appears twice")
    return dict(pairs)


def invalid(path, reason):
    return ValueError(f"`path` {path!r} is not a whole safetensors checkpoint: {reason}")
