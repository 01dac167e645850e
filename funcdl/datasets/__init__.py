"""Small real data sets shipped inside the package (no network), verified by SHA-256 on load.

| loader         | returns                                              | source |
|----------------|------------------------------------------------------|--------|
| `load_boston`  | x float64 `(506, 13)`, y float64 `(506,)` (`medv`)    | Harrison & Rubinfeld (1978), StatLib; R's MASS copy |
| `load_digits`  | x float64 `(1797, 64)` in 0..16, y int64 `(1797,)`   | UCI optical digits (test part), CC BY 4.0, as bundled by scikit-learn |

Boston housing is kept only to reproduce seed 003 (linear regression). Its `black` column
encodes a racially based variable, which is why scikit-learn removed the data set; prefer digits
or synthetic data elsewhere.

Each loader reads its file only if it is a regular file of the shipped size (a FIFO, a device
or a file of another size is a `ValueError` before anything is read, so nothing blocks or reads
without end) and its SHA-256 is the shipped one.

    >>> import funcdl as fdl
    >>> x, y = fdl.datasets.load_digits()
    >>> x.shape, y.shape, int(x.max()), sorted(set(y.tolist())) == list(range(10))
    ((1797, 64), (1797,), 16, True)
"""
import hashlib
import os
import stat
from pathlib import Path

import numpy as np

__all__ = ["load_boston", "load_digits", "BOSTON_FEATURES"]

_HERE = Path(__file__).resolve().parent
# name: (size in bytes, SHA-256) of each shipped file
_SHIPPED = {
    "boston_housing.csv": (36137, "de34377a9f15b743089e8ff434fc6792f668c7e7c0219fb13c5b8aa6cd7b7cb2"),
    "digits_8x8.csv": (265284, "4faf08295f17d77e9a147ed5ea842ec501bd089cc6e61627f36ef15c1b48ea5b"),
}
BOSTON_FEATURES = ("crim", "zn", "indus", "chas", "nox", "rm", "age", "dis", "rad", "tax",
                   "ptratio", "black", "lstat")


def _read_verified(name, path=None):
    """The table in the shipped CSV `name` as float64 `(rows, columns)`, after its SHA-256 check.

    path: read this file instead of the shipped one (it must still have the shipped size and
    hash). It is opened only as a regular file of the shipped size, without blocking (a FIFO
    would block `open`, `/dev/zero` would never end), and read up to that size.
    """
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str, os.PathLike or None, got {type(path).__name__}")
    shown = str(path if path is not None else _HERE / name)
    size, sha256 = _SHIPPED[name]
    _check_file(os.stat(shown), shown, size)
    fd = os.open(shown, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        _check_file(os.fstat(fd), shown, size)  # the path may have been swapped since the stat
        data = _read_at_most(fd, size + 1)  # one more: a file grown since is not the shipped one
    finally:
        os.close(fd)
    if len(data) != size:
        raise ValueError(f"data file {shown!r} changed while it was read: {len(data)} bytes read, "
                         f"the shipped {name} has {size}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ValueError(f"data file {shown!r} is corrupted or was changed: expected SHA-256 "
                         f"{sha256}, got {digest}")
    lines = data.decode("ascii").splitlines()
    return lines[0].split(","), np.loadtxt(lines[1:], delimiter=",", dtype=np.float64, ndmin=2)


def _check_file(info, shown, size):
    if not stat.S_ISREG(info.st_mode):
        kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                 (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                 (stat.S_ISBLK, "a block device"))
        kind = next((kind for test, kind in kinds if test(info.st_mode)), "not a regular file")
        raise ValueError(f"`path` {shown!r} must be a regular file, got {kind}")
    if info.st_size != size:
        raise ValueError(f"data file {shown!r} has {info.st_size} bytes where the shipped file "
                         f"has {size}: it is not the shipped data set")


def _read_at_most(fd, limit):
    # A regular file (checked) never answers EAGAIN, so the O_NONBLOCK of the open is harmless.
    chunks, count = [], 0
    while count < limit:
        chunk = os.read(fd, limit - count)
        if not chunk:
            break
        chunks.append(chunk)
        count += len(chunk)
    return b"".join(chunks)


def load_boston(path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boston housing (506 districts): x float64 `(506, 13)` (`BOSTON_FEATURES`), y float64 `(506,)`.

    y is `medv`, the median home value in $1000s. See the module docstring on the `black` column.

    Args:
      path: None for the file shipped in the package, or a copy of it (the same bytes).

    Returns:
      `(x, y)`: float64 `(506, 13)` features and float64 `(506,)` targets.

    Raises:
      FileNotFoundError, PermissionError: `path` cannot be opened (the OS's error, naming it).
      ValueError: `path` is not a regular file (a FIFO, a device such as `/dev/zero`, a socket, a
        directory), or its size is not the shipped file's (both seen before anything is read),
        or its SHA-256 is not the shipped file's.
      TypeError: `path` is not a str, os.PathLike or None.

    Examples:
      >>> import funcdl as fdl
      >>> x, y = fdl.datasets.load_boston()
      >>> x.shape, y.shape, float(y.max())
      ((506, 13), (506,), 50.0)
    """
    header, table = _read_verified("boston_housing.csv", path)
    if tuple(header[:-1]) != BOSTON_FEATURES or header[-1] != "medv" or table.shape != (506, 14):
        raise ValueError(f"boston_housing.csv: unexpected layout {header}, {table.shape}")
    return table[:, :13], table[:, 13]


def load_digits(path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """8x8 handwritten digits: x float64 `(1797, 64)` (row-major 8x8 images, intensities 0..16),
    y int64 `(1797,)` labels 0..9.

    Args:
      path: None for the file shipped in the package, or a copy of it (the same bytes).

    Returns:
      `(x, y)`: float64 `(1797, 64)` pixel intensities and int64 `(1797,)` labels.

    Raises:
      FileNotFoundError, PermissionError: `path` cannot be opened (the OS's error, naming it).
      ValueError: `path` is not a regular file (a FIFO, a device such as `/dev/zero`, a socket, a
        directory), or its size is not the shipped file's (both seen before anything is read),
        or its SHA-256 is not the shipped file's.
      TypeError: `path` is not a str, os.PathLike or None.

    Examples:
      >>> import funcdl as fdl
      >>> x, y = fdl.datasets.load_digits()
      >>> x.shape, x.dtype, y.dtype, int(y.max())
      ((1797, 64), dtype('float64'), dtype('int64'), 9)
    """
    header, table = _read_verified("digits_8x8.csv", path)
    if header[-1] != "label" or table.shape != (1797, 65):
        raise ValueError(f"digits_8x8.csv: unexpected layout ({len(header)} columns, {table.shape})")
    return table[:, :64], table[:, 64].astype(np.int64)
