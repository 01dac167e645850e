"""`save`: a pytree's leaves into one safetensors file, with its SHA-256, written atomically."""
import hashlib
import os
import secrets
from typing import Any

import jax
import numpy as np

from funcdl.checkpoint import files, header


def save(path: str | os.PathLike, tree: Any, *, metadata: dict[str, str] | None = None) -> None:
    """Write every leaf of `tree` to the safetensors file `path`, atomically.

    Each leaf is stored under its `jax.tree_util.keystr` path with its own shape and dtype; the
    metadata gets `"funcdl.sha256"`, the SHA-256 of the data section, which `load` verifies. The
    bytes go to a temporary file `.NAME.<random>.tmp` beside `path`, which is fsynced, moved over
    `path` with `os.replace`, and the folder fsynced: a crash at any moment leaves the old file
    or the new one, whole. The arrays are written from where they are (no copy of the file is
    assembled in memory); jax arrays are first copied to host memory.

    Args:
      path: a `str` or `os.PathLike`; its folder must exist. An existing file is replaced.
      tree: a pytree whose leaves are jax arrays, NumPy arrays, NumPy scalars or Python
        bool/int/float, of the dtypes in the module docstring. A jax array spread over several
        processes is saved if it is fully replicated (each process holds the whole value); call
        `save` from one process only.
      metadata: a `dict[str, str]` stored in the file's header (see `metadata`), or None. Keys
        starting with `"funcdl."` are reserved for funcdl's own entries.

    Raises:
      TypeError: `path`, `metadata` or a leaf of an unsupported type or dtype.
      ValueError: `path` is a folder, a metadata key starts with `"funcdl."`, two leaves have the
        same key, or a leaf is sharded over processes without being replicated.
      OSError: writing failed (a missing folder, no space left, no permission, a read-only file
        system): the same class and errno as the OS's error, its message naming `path`. The
        temporary file is removed and an existing file at `path` is left as it was.

    Examples:
      >>> import os, tempfile
      >>> import numpy as np
      >>> import funcdl as fdl
      >>> folder = tempfile.TemporaryDirectory()
      >>> path = os.path.join(folder.name, "run.safetensors")
      >>> fdl.checkpoint.save(path, {"w": np.eye(2, dtype=np.float32), "step": 3},
      ...                     metadata={"epoch": "3"})
      >>> sorted(fdl.checkpoint.load(path))
      ["['step']", "['w']"]
      >>> folder.cleanup()
    """
    path = files.check_path(path)
    if os.path.isdir(path):
        raise ValueError(f"`path` must be a file, got the directory {path!r}")
    metadata = _check_metadata(metadata)
    ordered = header.file_order(_flatten(tree))
    views = [array.reshape(-1).view(np.uint8) for _, array in ordered]  # reshape: 0-d too
    digest = hashlib.sha256()
    for view in views:
        digest.update(view)
    head = header.encode(ordered, {**metadata, header.CHECKSUM: digest.hexdigest()})
    _write_atomically(path, [head, *views])


def _write_atomically(path, chunks):
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    try:
        # O_EXCL: a fresh file, with the permissions the umask gives (mkstemp would force 0600).
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o666)
    except FileNotFoundError as error:
        error.strerror = f"its folder {folder!r} does not exist"
        raise files.naming(error, path, "write") from error
    except OSError as error:
        raise files.naming(error, path, "write") from error
    try:
        try:
            for chunk in chunks:
                files.write_all(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise files.naming(error, path, "write") from error
        raise
    try:
        files.fsync_folder(folder)  # makes the rename itself durable
    except OSError as error:
        raise files.naming(error, path, "write") from error


def _check_metadata(metadata):
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"`metadata` must be a dict[str, str] or None, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"`metadata` must be a dict[str, str], got the item {key!r}: {value!r} "
                f"({type(key).__name__}: {type(value).__name__})"
            )
        if key.startswith(header.RESERVED_PREFIX):
            raise ValueError(f"`metadata` keys starting with {header.RESERVED_PREFIX!r} are "
                             f"reserved for funcdl, got {key!r}")
    return dict(metadata)


def _flatten(tree):
    """`{keystr(path): C-contiguous NumPy array}` for every leaf, in tree order."""
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
    if array.dtype not in header.NAMES:
        names = ", ".join(d.name for d in header.NAMES)
        raise TypeError(f"leaf {key} of `tree` must have one of the dtypes {names}, got {array.dtype}")
    # not np.ascontiguousarray, which turns a 0-d array into shape (1,)
    return array if array.flags.c_contiguous else array.copy(order="C")
