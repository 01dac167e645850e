"""Small real data sets shipped inside the package (no network), verified by SHA-256 on load.

| loader         | returns                                              | source |
|----------------|------------------------------------------------------|--------|
| `load_boston`  | x float64 `(506, 13)`, y float64 `(506,)` (`medv`)    | Harrison & Rubinfeld (1978), StatLib; R's MASS copy |
| `load_digits`  | x float64 `(1797, 64)` in 0..16, y int64 `(1797,)`   | UCI optical digits (test part), CC BY 4.0, as bundled by scikit-learn |

Boston housing is kept only to reproduce seed 003 (linear regression). Its `black` column
encodes a racially based variable, which is why scikit-learn removed the data set; prefer digits
or synthetic data elsewhere.

    >>> import funcdl as fdl
    >>> x, y = fdl.datasets.load_digits()
    >>> x.shape, y.shape, int(x.max()), sorted(set(y.tolist())) == list(range(10))
    ((1797, 64), (1797,), 16, True)
"""
import hashlib
from pathlib import Path

import numpy as np

__all__ = ["load_boston", "load_digits", "BOSTON_FEATURES"]

_HERE = Path(__file__).resolve().parent
_SHA256 = {
    "boston_housing.csv": "de34377a9f15b743089e8ff434fc6792f668c7e7c0219fb13c5b8aa6cd7b7cb2",
    "digits_8x8.csv": "4faf08295f17d77e9a147ed5ea842ec501bd089cc6e61627f36ef15c1b48ea5b",
}
BOSTON_FEATURES = ("crim", "zn", "indus", "chas", "nox", "rm", "age", "dis", "rad", "tax",
                   "ptratio", "black", "lstat")


def _read_verified(name, path=None):
    """The table in the shipped CSV `name` as float64 `(rows, columns)`, after its SHA-256 check.

    path: read this file instead of the shipped one (it must still have the shipped hash).
    """
    path = Path(path) if path is not None else _HERE / name
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != _SHA256[name]:
        raise ValueError(f"data file {str(path)!r} is corrupted or was changed: expected SHA-256 "
                         f"{_SHA256[name]}, got {digest}")
    lines = data.decode("ascii").splitlines()
    return lines[0].split(","), np.loadtxt(lines[1:], delimiter=",", dtype=np.float64, ndmin=2)


def load_boston(path=None):
    """Boston housing (506 districts): x float64 `(506, 13)` (`BOSTON_FEATURES`), y float64 `(506,)`.

    y is `medv`, the median home value in $1000s. See the module docstring on the `black` column.
    """
    header, table = _read_verified("boston_housing.csv", path)
    if tuple(header[:-1]) != BOSTON_FEATURES or header[-1] != "medv" or table.shape != (506, 14):
        raise ValueError(f"boston_housing.csv: unexpected layout {header}, {table.shape}")
    return table[:, :13], table[:, 13]


def load_digits(path=None):
    """8x8 handwritten digits: x float64 `(1797, 64)` (row-major 8x8 images, intensities 0..16),
    y int64 `(1797,)` labels 0..9."""
    header, table = _read_verified("digits_8x8.csv", path)
    if header[-1] != "label" or table.shape != (1797, 65):
        raise ValueError(f"digits_8x8.csv: unexpected layout ({len(header)} columns, {table.shape})")
    return table[:, :64], table[:, 64].astype(np.int64)
