"""fdl.datasets against the shipped files' published facts (rows, ranges, known first rows)."""
import numpy as np
import pytest

import funcdl as fdl


def test_boston_shapes_and_first_row():
    x, y = fdl.datasets.load_boston()
    assert x.shape == (506, 13) and y.shape == (506,)
    assert x.dtype == np.float64 and y.dtype == np.float64
    # First district as printed in Harrison & Rubinfeld / R's MASS::Boston.
    np.testing.assert_array_equal(x[0], [0.00632, 18.0, 2.31, 0, 0.538, 6.575, 65.2, 4.09, 1,
                                         296, 15.3, 396.9, 4.98])
    assert y[0] == 24.0
    assert y.min() == 5.0 and y.max() == 50.0  # medv is censored at 50 in the original data


def test_digits_shapes_and_ranges():
    x, y = fdl.datasets.load_digits()
    assert x.shape == (1797, 64) and y.shape == (1797,)
    assert x.dtype == np.float64 and y.dtype == np.int64
    assert x.min() == 0 and x.max() == 16 and np.all(x == np.round(x))
    counts = np.bincount(y, minlength=10)
    assert counts.sum() == 1797 and counts.min() >= 174  # 174..183 of each digit


@pytest.mark.parametrize("loader, name", [(fdl.datasets.load_boston, "boston_housing.csv"),
                                          (fdl.datasets.load_digits, "digits_8x8.csv")])
def test_changed_file_fails_its_hash(tmp_path, loader, name):
    from funcdl import datasets
    changed = tmp_path / name
    data = bytearray((datasets._HERE / name).read_bytes())
    data[-3] = ord("7") if data[-3] != ord("7") else ord("6")
    changed.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted or was changed: expected SHA-256"):
        loader(changed)
