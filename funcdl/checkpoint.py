"""Checkpoints: any pytree of arrays in one safetensors file, written atomically.

    fdl.checkpoint.save("run.safetensors", {"params": params, "opt_state": opt_state},
                        metadata={"epoch": "3"})
    state = fdl.checkpoint.load("run.safetensors", like={"params": params, "opt_state": opt_state})

Each leaf is stored under its `jax.tree_util.keystr` path (`"['params']['w']"`, `"[1].count"`
for a NamedTuple field inside a tuple), so the file is an ordinary safetensors file that
`safetensors.numpy.load_file` (or `safetensors.torch.load_file`) reads, and the structure comes
back from `like`, never from the file: nothing is unpickled. Optimizer states are NamedTuples of
arrays, so they are pytrees like any other; `None` and empty NamedTuples have no leaves and
take no space.

Leaves are stored with their own dtype and shape: jax and NumPy arrays of bool, (u)int8-64,
float16/32/64, bfloat16 and complex64, 0-d included. Python `bool`/`int`/`float` become 0-d
`bool`/`int64`/`float64` arrays (NumPy's defaults, whatever `jax_enable_x64` says); NumPy
scalars keep their dtype. `load` returns NumPy arrays in host memory; `jax.device_put` them where
they are needed.

Atomicity: the bytes go to a temporary file `.NAME.<random>.tmp` in the folder of `path`, which
is fsynced, then moved over `path` with `os.replace`, then the folder is fsynced. A crash at any
moment leaves either the old file or the new one, whole; a process killed mid-write may leave its
temporary file behind (any other error removes it). The file is assembled in host memory first
(safetensors puts the header before the data), so saving needs its size in free RAM.
"""
import os
import secrets

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy

__all__ = ["save", "load", "metadata"]

# What safetensors 0.4+ writes and `safetensors.numpy.load_file` reads back with the same dtype.
SUPPORTED_DTYPES = tuple(np.dtype(d) for d in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64, jnp.bfloat16, np.complex64))


# ---- save --------------------------------------------------------------------------------------
def save(path, tree, *, metadata=None) -> None:
    """Write every leaf of `tree` to the safetensors file `path`, atomically.

    Args:
      path: a `str` or `os.PathLike`; its folder must exist. An existing file is replaced.
      tree: a pytree whose leaves are jax arrays, NumPy arrays, NumPy scalars or Python
        bool/int/float. A jax array spread over several processes is saved if it is fully
        replicated (each process holds the whole value); call `save` from one process only.
      metadata: a `dict[str, str]` stored in the file's header (see `metadata`), or None.

    Raises:
      TypeError: `path`, `metadata` or a leaf of an unsupported type or dtype.
      ValueError: `path` is a folder, two leaves with the same key, or a leaf sharded over
        processes without being replicated.
    """
    path = _check_path(path)
    if os.path.isdir(path):
        raise ValueError(f"`path` must be a file, got the directory {path!r}")
    metadata = _check_metadata(metadata)
    arrays = _flatten(tree)

    data = safetensors.numpy.save(arrays, metadata=metadata)  # the whole file, as bytes
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    # O_EXCL: a fresh file, with the permissions the umask gives (mkstemp would force 0600).
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(folder)  # makes the rename itself durable


def _check_path(path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"`path` must be a str or os.PathLike of str, got {type(path).__name__}")
    return path


def _check_metadata(metadata):
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise TypeError(f"`metadata` must be a dict[str, str] or None, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"`metadata` must be a dict[str, str], got the item {key!r}: {value!r} "
                f"({type(key).__name__}: {type(value).__name__})"
            )
    return dict(metadata)


def _flatten(tree):
    """`{keystr(path): contiguous NumPy array}` for every leaf, in tree order."""
    arrays = {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = jax.tree_util.keystr(key_path)
        if key in arrays:
            raise ValueError(f"`tree` has two leaves with the key {key}; keys must be unique")
        arrays[key] = _to_numpy(leaf, key)
    return arrays


def _to_numpy(leaf, key):
    if isinstance(leaf, jax.Array):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            raise TypeError(f"leaf {key} of `tree` is a typed PRNG key ({leaf.dtype}); "
                            "save `jax.random.key_data(key)` instead")
        if not leaf.is_fully_addressable:
            if not leaf.is_fully_replicated:
                raise ValueError(
                    f"leaf {key} of `tree` must be fully replicated or local to this process, got "
                    f"an array sharded over processes ({leaf.sharding}); gather it first, e.g. "
                    "with jax.experimental.multihost_utils.process_allgather"
                )
            leaf = leaf.addressable_data(0)
        array = np.asarray(leaf)
    elif isinstance(leaf, (np.ndarray, np.generic, bool, int, float)):
        array = np.asarray(leaf)
    else:
        raise TypeError(f"leaf {key} of `tree` must be an array or a number, got {type(leaf).__name__}")
    if array.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(d.name for d in SUPPORTED_DTYPES)
        raise TypeError(f"leaf {key} of `tree` must have one of the dtypes {names}, got {array.dtype}")
    # not np.ascontiguousarray, which turns a 0-d array into shape (1,)
    return array if array.flags.c_contiguous else array.copy(order="C")


def _fsync_folder(path):
    """fsync a folder, where the OS allows opening one (Windows does not)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- load --------------------------------------------------------------------------------------
def load(path, like=None):
    """Read the checkpoint at `path`: the pytree `like` describes, or `{key: array}`.

    Args:
      path: a `str` or `os.PathLike`.
      like: a pytree whose leaves have `.shape` and `.dtype` (jax or NumPy arrays,
        `jax.ShapeDtypeStruct`s) or are Python/NumPy scalars; or None.

    Returns:
      With `like`: a pytree of `like`'s structure whose leaves are NumPy arrays of the stored
      values (each with the shape and dtype of `like`'s leaf). Without: a dict from each key
      (`jax.tree_util.keystr` of the saved leaf's path) to its NumPy array.

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: `path` is not a whole safetensors file (a directory, empty, truncated,
        random bytes); or, with `like`, a leaf missing from the file, a key in the file that
        `like` does not have, or a leaf of another shape or dtype (the first such, by its path).
      TypeError: `path` of the wrong type.
    Nothing is returned unless the whole file was read and matched.
    """
    path = _check_path(path)
    stored = _read(path)
    if like is None:
        return stored
    key_paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    leaves = []
    for key_path, expected in key_paths:
        key = jax.tree_util.keystr(key_path)
        shape, dtype = _shape_dtype(expected, key)
        if key not in stored:
            raise ValueError(f"checkpoint {path!r} has no leaf {key}: `like` expects shape "
                             f"{shape} {dtype}, the file has no such key")
        found = stored[key]
        if found.shape != shape or found.dtype != dtype:
            raise ValueError(f"checkpoint {path!r} differs from `like` at leaf {key}: expected shape "
                             f"{shape} {dtype}, found shape {found.shape} {found.dtype}")
        leaves.append(found)
    expected_keys = {jax.tree_util.keystr(key_path) for key_path, _ in key_paths}
    extra = [key for key in stored if key not in expected_keys]
    if extra:
        found = stored[extra[0]]
        raise ValueError(f"checkpoint {path!r} has a leaf {extra[0]} (shape {found.shape} "
                         f"{found.dtype}) that `like` does not have ({len(extra)} extra in all)")
    return jax.tree_util.tree_unflatten(treedef, leaves)


def metadata(path) -> dict:
    """The `dict[str, str]` saved with the checkpoint at `path` (`{}` if there was none).

    Raises FileNotFoundError / ValueError as `load` does.
    """
    path = _check_path(path)
    with _safe_open(path) as file:
        return dict(file.metadata() or {})


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


def _read(path):
    """Every tensor of the file, copied into memory before anything returns (a memory map of a
    file that a later `save` replaces must not be what the caller holds)."""
    with _safe_open(path) as file:
        try:
            return {key: np.array(file.get_tensor(key), copy=True) for key in file.keys()}
        except (safetensors.SafetensorError, OSError, ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"`path` {path!r} is not a readable checkpoint: {error}") from None


def _safe_open(path):
    """`safetensors.safe_open(path)`, with the file's problems as funcdl's errors."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at `path` {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"`path` must be a checkpoint file, got the directory {path!r}")
    try:
        return safetensors.safe_open(path, framework="np")
    except FileNotFoundError:  # removed since the check above
        raise FileNotFoundError(f"no checkpoint at `path` {path!r}") from None
    except (safetensors.SafetensorError, OSError) as error:
        raise ValueError(f"`path` {path!r} is not a whole safetensors checkpoint: {error}") from None
