"""The array-API part of `funcdl gradcheck`'s built-in set: every op of `ops_array.py` and
`ops_shape.py`, and the Tensor operators `%` and `//`, at least once.

`array_cases()` -> {name: (f, args, argnums)}, as `funcdl.cli.gradcheck_cases`. Inputs are
float64, drawn with a fixed seed away from every kink and discontinuity: rounding inputs at
least 0.1 from a jump (so finite differences see the zero slope), sorted and `prod`-ed entries
distinct and away from 0, arcsin/arccos inside (-0.9, 0.9), tan inside (-1.2, 1.2).
"""
import numpy as np

from funcdl import ops


def array_cases():
    rng = np.random.default_rng(1)

    def away(*shape):  # |x| in [0.2, 1.2], random sign
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 1.2, shape)

    def total(y):  # a readout with fan-out, so the gradient is not a constant
        return ops.sum(y * y)

    x, y = away(2, 3), away(2, 3)
    cube = away(2, 3, 4)
    off_grid = np.round(rng.uniform(-3, 3, (2, 3))) + rng.choice([-1, 1], (2, 3)) * rng.uniform(0.1, 0.4, (2, 3))
    distinct = (rng.permutation(12).reshape(3, 4) - 5.5) / 4  # no ties, no zeros
    return {
        "rounding_zero_slope": (lambda a: total(a * (ops.sign(a) + ops.floor(a) + ops.ceil(a) + ops.round(a)
                                                     + ops.round(a, decimals=1))), (off_grid,), 0),
        "remainder_floor_divide": (lambda a, b: total(a % b + a // b * b + ops.remainder(2.5, b)),
                                   (off_grid, np.abs(y) + 0.3), (0, 1)),
        "log2_log10": (lambda a: total(ops.log2(a * a + 0.5) + ops.log10(a * a + 0.5)), (x,), 0),
        "logaddexp": (lambda a, b: total(ops.logaddexp(a, b * 2.0)), (x, y), (0, 1)),
        "tan_sinh_cosh": (lambda a: total(ops.tan(a) + ops.sinh(a) * ops.cosh(a)), (x,), 0),
        "arcsin_arccos_arctan": (lambda a: total(ops.arcsin(a * 0.7) + ops.arccos(a * 0.7) * ops.arctan(a)),
                                 (x,), 0),
        "arctan2": (lambda a, b: total(ops.arctan2(a, b)), (x, y), (0, 1)),
        "nan_to_num": (lambda a: total(ops.nan_to_num(ops.log(a), nan=0.5, neginf=-2.0)), (x,), 0),
        "std": (lambda a: total(ops.std(a, axis=(0, 2), ddof=1)) + ops.std(a), (cube,), 0),
        "prod": (lambda a: total(ops.prod(a, axis=1)) + ops.prod(a * 0.8), (distinct,), 0),
        "cumsum": (lambda a: total(ops.cumsum(a, axis=1)) + total(ops.cumsum(a)), (cube,), 0),
        "einsum": (lambda a, b: total(ops.einsum("bij,jk->bik", a, b) + ops.einsum("bij->bj", a)[..., None]),
                   (cube[:, :, :3], away(3, 4)), (0, 1)),
        "tensordot_dot_outer": (lambda a, b: total(ops.tensordot(a, b, axes=([1, 0], [0, 2])))
                                + total(ops.dot(a, a[0, 0])) + total(ops.outer(a[0], b[0, 0])),
                                (cube, away(3, 5, 2)), (0, 1)),
        "trace_diagonal": (lambda a: total(ops.trace(a, offset=1, axis1=1, axis2=2))
                           + total(ops.diagonal(a, -1, 2, 0)), (cube,), 0),
        "triu_tril": (lambda a: total(ops.triu(a, 1) * 2.0 + ops.tril(a, -1)), (cube,), 0),
        "repeat_tile": (lambda a: total(ops.repeat(a, [1, 0, 3], axis=1) * 1.5) + total(ops.tile(a, (2, 1, 2)))
                        + total(ops.repeat(a, 2)), (x,), 0),
        "split": (lambda a: sum(total(p) * (i + 1.0) for i, p in enumerate(ops.split(a, [1, 3], axis=2)))
                  + total(ops.split(a, 2)[1]), (cube,), 0),
        "pad": (lambda a: total(ops.pad(a, ((1, 0), (2, 1)), constant_values=0.5))
                + total(ops.pad(a, (1, 2), mode="reflect")) + total(ops.pad(a, 1, mode="wrap") * 1.5), (x,), 0),
        "roll_flip": (lambda a: total(ops.roll(a, (1, -2), axis=(0, 2)) * cube) + total(ops.flip(a, 1) * cube)
                      + total(ops.roll(a, 3) * cube), (cube,), 0),
        "sort": (lambda a: total(ops.sort(a, axis=0) * distinct) + total(ops.sort(a, descending=True) * distinct),
                 (distinct,), 0),
        "swapaxes": (lambda a: total(ops.swapaxes(a, 0, 2) * cube.transpose(2, 1, 0)), (cube,), 0),
    }
