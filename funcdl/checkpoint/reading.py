"""`load` and `metadata`: a checkpoint's header checked first, then its tensors read and verified."""
import hashlib
import os
from typing import Any

import jax
import numpy as np

from funcdl.checkpoint import files, header

_CHUNK_BYTES = 1 << 20  # what `load` hashes at a time of the tensors it does not keep


def load(path: str | os.PathLike, like: Any = None, *, strict: bool = True) -> Any:
    """Read the checkpoint at `path`: the pytree `like` describes, or `{key: array}`.

    The header is read and checked first (against the file's size and, with `like`, against
    `like`'s keys, shapes and dtypes), so a mismatch costs no tensor read. Then each tensor that
    is returned is read straight into its own NumPy array (peak memory: those arrays plus the
    header). Where the file holds `"funcdl.sha256"` (every file `save` writes), the whole data
    section is hashed, the tensors not kept included, and must match it.

    Args:
      path: a `str` or `os.PathLike`.
      like: a pytree whose leaves have `.shape` and `.dtype` (jax or NumPy arrays,
        `jax.ShapeDtypeStruct`s) or are Python/NumPy scalars; or None.
      strict: with `like`, whether a key of the file that `like` lacks is an error (True) or
        skipped (False; e.g. the params of a `{"params", "opt_state"}` file for inference).
        Missing leaves and shape or dtype differences are errors either way.

    Returns:
      With `like`: a pytree of `like`'s structure whose leaves are NumPy arrays of the stored
      values (each with the shape and dtype of `like`'s leaf). Without: a dict from each key
      (`jax.tree_util.keystr` of the saved leaf's path), sorted, to its NumPy array.

    Raises:
      FileNotFoundError: no file at `path`.
      PermissionError: a file at `path` that this process may not read (it exists: do not
        start afresh over it).
      ValueError: `path` is not a regular file (a directory, a FIFO, a device, a socket), or
        not a whole safetensors file (empty, truncated, random bytes, an inconsistent header),
        or its data differ from its `"funcdl.sha256"` (a flipped byte, a file rewritten while it
        was read); or, with `like`, a leaf missing from the file, a key in the file that `like`
        does not have (with `strict=True`), or a leaf of another shape or dtype (the first
        such, in `like`'s order, by its path). Every message names `path`.
      TypeError: `path`, `strict` or a leaf of `like` of the wrong type.
    Nothing is returned unless every byte asked for was read and verified.

    Examples:
      >>> import os, tempfile
      >>> import jax, numpy as np
      >>> import funcdl as fdl
      >>> folder = tempfile.TemporaryDirectory()
      >>> path = os.path.join(folder.name, "run.safetensors")
      >>> state = {"params": {"w": np.ones((2, 3), np.float32)}, "opt_state": np.zeros(3)}
      >>> fdl.checkpoint.save(path, state)
      >>> like = {"params": {"w": jax.ShapeDtypeStruct((2, 3), np.float32)}}
      >>> params = fdl.checkpoint.load(path, like, strict=False)["params"]
      >>> params["w"].shape, params["w"].dtype, float(params["w"].sum())
      ((2, 3), dtype('float32'), 6.0)
      >>> folder.cleanup()
    """
    path = files.check_path(path)
    if not isinstance(strict, bool):
        raise TypeError(f"`strict` must be a bool, got {type(strict).__name__}")
    expected = treedef = None
    if like is not None:
        key_paths, treedef = jax.tree_util.tree_flatten_with_path(like)
        expected = [(key, *_shape_dtype(leaf, key))
                    for key, leaf in ((jax.tree_util.keystr(k), leaf) for k, leaf in key_paths)]
    fd, size = files.open_regular(path)
    try:
        head = _read_header(fd, size, path)
        keep = ({t.key for t in head.tensors} if expected is None
                else _match(head, expected, strict, path))
        arrays = _read_tensors(fd, head, keep, path)
    finally:
        os.close(fd)
    if expected is None:
        return dict(sorted(arrays.items()))
    return jax.tree_util.tree_unflatten(treedef, [arrays[key] for key, _, _ in expected])


def metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `dict[str, str]` saved with the checkpoint at `path`, `"funcdl.sha256"` included.

    Reads the header only: it is checked against the file's size as in `load`, but the data
    are not hashed (`load` does that).

    Raises:
      FileNotFoundError, PermissionError, ValueError, TypeError: as `load`, for the header.

    Examples:
      >>> import os, tempfile
      >>> import numpy as np
      >>> import funcdl as fdl
      >>> folder = tempfile.TemporaryDirectory()
      >>> path = os.path.join(folder.name, "run.safetensors")
      >>> fdl.checkpoint.save(path, {"w": np.zeros(2)}, metadata={"epoch": "3"})
      >>> meta = fdl.checkpoint.metadata(path)
      >>> meta["epoch"], sorted(meta)
      ('3', ['epoch', 'funcdl.sha256'])
      >>> folder.cleanup()
    """
    path = files.check_path(path)
    fd, size = files.open_regular(path)
    try:
        return dict(_read_header(fd, size, path).metadata)
    finally:
        os.close(fd)


def _shape_dtype(leaf, key):
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            raise TypeError(f"leaf {key} of `like` is a typed PRNG key ({leaf.dtype}); checkpoints "
                            "hold `jax.random.key_data(key)`: pass that, then wrap_key_data")
        return tuple(leaf.shape), np.dtype(leaf.dtype)
    if isinstance(leaf, (np.generic, bool, int, float)):
        array = np.asarray(leaf)
        return array.shape, array.dtype
    raise TypeError(f"leaf {key} of `like` must have a shape and a dtype (an array or a "
                    f"jax.ShapeDtypeStruct) or be a number, got {type(leaf).__name__}")


def _read_header(fd, size, path):
    if size < 8:
        raise header.invalid(path, f"it has {size} bytes, fewer than the 8 of its header's length")
    prefix = bytearray(8)
    files.read_exactly(fd, prefix, path)
    text = bytearray(header.header_length(prefix, size, path))
    files.read_exactly(fd, text, path)
    return header.decode(bytes(text), size - 8 - len(text), path)


def _match(head, expected, strict, path):
    """The keys to read for `like`'s `expected = [(key, shape, dtype)]`, or the first mismatch."""
    stored = {tensor.key: tensor for tensor in head.tensors}
    for key, shape, dtype in expected:
        if key not in stored:
            raise ValueError(f"checkpoint {path!r} has no leaf {key}: `like` expects shape "
                             f"{shape} {dtype}, the file has no such key")
        found = stored[key]
        if found.shape != shape or found.dtype != dtype:
            raise ValueError(f"checkpoint {path!r} differs from `like` at leaf {key}: expected shape "
                             f"{shape} {dtype}, found shape {found.shape} {found.dtype}")
    keep = {key for key, _, _ in expected}
    extra = sorted(key for key in stored if key not in keep)
    if strict and extra:
        found = stored[extra[0]]
        raise ValueError(f"checkpoint {path!r} has a leaf {extra[0]} (shape {found.shape} "
                         f"{found.dtype}) that `like` does not have ({len(extra)} extra in all; "
                         "strict=False skips them)")
    return keep


def _read_tensors(fd, head, keep, path):
    """`{key: array}` for the tensors in `keep`, after the checksum (if any) matched."""
    checksum = head.metadata.get(header.CHECKSUM)
    digest = hashlib.sha256() if checksum is not None else None
    arrays, scratch = {}, None
    for tensor in head.tensors:  # in file order: one pass from the header's end
        size = tensor.end - tensor.begin
        if tensor.key in keep:
            try:
                array = np.empty(tensor.shape, tensor.dtype)
            except ValueError as error:  # more dimensions or elements than NumPy allows
                raise header.invalid(path, f"tensor {tensor.key}: {error}") from None
            data = array.reshape(-1).view(np.uint8)  # the array's own memory, 0-d included
            files.read_exactly(fd, data, path)
            arrays[tensor.key] = array
            if digest is not None:
                digest.update(data)
        elif digest is not None:
            scratch = scratch if scratch is not None else np.empty(_CHUNK_BYTES, np.uint8)
            for start in range(0, size, _CHUNK_BYTES):
                data = scratch[:min(_CHUNK_BYTES, size - start)]
                files.read_exactly(fd, data, path)
                digest.update(data)
        else:
            os.lseek(fd, size, os.SEEK_CUR)
    if digest is not None and digest.hexdigest() != checksum:
        raise ValueError(f"checkpoint {path!r} is corrupted: the SHA-256 of its data is "
                         f"{digest.hexdigest()}, its header says {checksum} (a changed byte, or "
                         "a file rewritten while it was read)")
    return arrays
