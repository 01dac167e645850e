"""The shape ops of `fdl.ops`: diagonal, trace, triu, tril, repeat, tile, split, pad, roll, flip,
sort and swapaxes, with `jax.numpy`'s arguments.

flip, roll, constant `pad` and sort are primitives of the tape (`funcdl/autodiff/vjps_array.py`);
the others are compositions that gather exactly the entries jax.numpy does: an index of integer
arrays (`diagonal`), a `take` along an axis with NumPy-computed positions (`repeat`, `tile`, the
edge/reflect/symmetric/wrap modes of `pad`), slices (`split`) or a `where` with a triangular
mask (`triu`, `tril`). A gathered entry's cotangents add up, so an entry taken k times gets k.

    >>> import jax.numpy as jnp, funcdl as fdl
    >>> x = jnp.arange(6.0).reshape(2, 3)
    >>> fdl.ops.diagonal(x, offset=1), fdl.ops.repeat(x, 2, axis=0).shape
    (Array([1., 5.], dtype=float32), (4, 3))
"""
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from funcdl.annotations import Axis, Operand, Result
from funcdl.autodiff import apply
from funcdl.ops_array import check_axes, check_axis, check_int, ndim_of

__all__ = ["diagonal", "trace", "triu", "tril", "repeat", "tile", "split", "pad", "roll", "flip",
           "sort", "swapaxes"]


def _shape(x):
    return tuple(x.shape) if hasattr(x, "shape") else jnp.shape(x)


def _take(x, positions, axis):
    """x gathered at the int positions (a NumPy array) along `axis`."""
    return apply("take", x, np.asarray(positions, np.int32), axis=axis)


def _matrix_rank(x, where):
    if ndim_of(x) < 2:
        raise ValueError(f"{where}: `x` must have at least 2 dimensions, got shape {_shape(x)}")
    return ndim_of(x)


def swapaxes(x: Operand, axis1: int, axis2: int) -> Result:
    """x with axes `axis1` and `axis2` exchanged (a transpose)."""
    ndim = ndim_of(x)
    a, b = (check_axis(v, ndim, name, "swapaxes") for v, name in ((axis1, "axis1"), (axis2, "axis2")))
    order = list(range(ndim))
    order[a], order[b] = b, a
    return apply("transpose", x, axes=tuple(order))


def diagonal(x: Operand, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Result:
    """The entries x[..., i, i + offset, ...] of the plane (axis1, axis2), as `jnp.diagonal`:
    those two axes removed, the diagonal appended as the last axis. offset > 0: above."""
    ndim = _matrix_rank(x, "diagonal")
    offset = check_int(offset, "offset", "diagonal")
    a, b = (check_axis(v, ndim, name, "diagonal") for v, name in ((axis1, "axis1"), (axis2, "axis2")))
    if a == b:
        raise ValueError(f"diagonal: `axis1` and `axis2` must differ, got {axis1} and {axis2}")
    rest = tuple(k for k in range(ndim) if k not in (a, b))
    n, m = _shape(x)[a], _shape(x)[b]
    length = max(0, min(n + min(offset, 0), m - max(offset, 0)))
    rows, cols = np.arange(length) + max(-offset, 0), np.arange(length) + max(offset, 0)
    moved = apply("transpose", x, axes=rest + (a, b))
    return apply("getitem", moved, index=(Ellipsis, rows, cols))


def trace(x: Operand, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Result:
    """Σ of `diagonal(x, offset, axis1, axis2)` over its last axis (jnp.trace)."""
    return apply("sum", diagonal(x, offset, axis1, axis2), axis=-1, keepdims=False)


def _triangle(x, k, where, upper):
    ndim = _matrix_rank(x, where)
    k = check_int(k, "k", where)
    n, m = _shape(x)[-2:]
    lower = np.tri(n, m, k - 1 if upper else k, dtype=bool)
    mask = ~lower if upper else lower
    return apply("where", mask.reshape((1,) * (ndim - 2) + (n, m)), x, 0.0)


def triu(x: Operand, k: int = 0) -> Result:
    """x with the entries below the k-th diagonal of its last two axes zeroed (jnp.triu)."""
    return _triangle(x, k, "triu", upper=True)


def tril(x: Operand, k: int = 0) -> Result:
    """x with the entries above the k-th diagonal of its last two axes zeroed (jnp.tril)."""
    return _triangle(x, k, "tril", upper=False)


def _int_sequence(value, name, where):
    """An int or a sequence of ints, as given (ints) or a tuple; TypeError otherwise."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(check_int(v, name, where) for v in value)
    return check_int(value, name, where)


def repeat(x: Operand, repeats: int | jax.Array, axis: Axis = None) -> Result:
    """Each entry along `axis` repeated `repeats` times (an int, or one int per entry), as
    `jnp.repeat`; axis None: of x flattened. repeats must be concrete (not traced)."""
    repeats = _int_sequence(repeats, "repeats", "repeat")
    if axis is None:
        x, axis = apply("reshape", x, shape=(-1,)), 0
    axis = check_axis(axis, ndim_of(x), "axis", "repeat")
    n = _shape(x)[axis]
    counts = np.broadcast_to(np.asarray(repeats), (n,)) if np.ndim(repeats) == 0 or len(repeats) == 1 else (
        np.asarray(repeats))
    if counts.shape != (n,) or (counts < 0).any():
        raise ValueError(f"repeat: `repeats` must be a non-negative int or {n} of them (axis {axis} "
                         f"has {n} entries), got {repeats!r}")
    return _take(x, np.repeat(np.arange(n), counts), axis)


def tile(x: Operand, reps: int | Sequence[int]) -> Result:
    """x repeated `reps` times along each axis (an int or a sequence; a longer `reps` adds
    leading axes), as `jnp.tile`."""
    reps = _int_sequence(reps, "reps", "tile")
    reps = (reps,) if isinstance(reps, int) else reps
    if any(r < 0 for r in reps):
        raise ValueError(f"tile: `reps` must be non-negative, got {reps!r}")
    shape = _shape(x)
    rank = max(len(shape), len(reps))
    shape = (1,) * (rank - len(shape)) + shape
    reps = (1,) * (rank - len(reps)) + reps
    if _shape(x) != shape:
        x = apply("reshape", x, shape=shape)
    for axis, (n, r) in enumerate(zip(shape, reps)):
        if r != 1:
            x = _take(x, np.tile(np.arange(n), r), axis)
    return x


def split(x: Operand, indices_or_sections: int | Sequence[int], axis: int = 0) -> list[Result]:
    """A list of pieces of x along `axis`, as `jnp.split`: an int k (k equal pieces; it must
    divide the axis) or a sequence of split positions."""
    axis = check_axis(axis, ndim_of(x), "axis", "split")
    n = _shape(x)[axis]
    sections = _int_sequence(indices_or_sections, "indices_or_sections", "split")
    if isinstance(sections, int):
        if sections < 1 or n % sections:
            raise ValueError(f"split: {sections} sections do not divide axis {axis} of size {n} "
                             "equally")
        bounds = [n // sections * i for i in range(sections + 1)]
        pieces = zip(bounds[:-1], bounds[1:])
    else:
        bounds = [0, *sections, n]
        pieces = zip(bounds[:-1], bounds[1:])
    before = (slice(None),) * axis
    return [apply("getitem", x, index=before + (slice(lo, hi),)) for lo, hi in pieces]


_PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


def pad(x: Operand, pad_width: int | Sequence, mode: str = "constant",
        constant_values: float = 0) -> Result:
    """x padded by `pad_width` (an int, a `(before, after)` pair, or one pair per axis, as
    `jnp.pad`). mode "constant" fills with `constant_values` (a number); "edge", "reflect",
    "symmetric" and "wrap" repeat entries of x as `jnp.pad` does (their cotangents add up)."""
    if mode not in _PAD_MODES:
        raise ValueError(f"pad: `mode` must be one of {', '.join(_PAD_MODES)}, got {mode!r}")
    ndim = ndim_of(x)
    try:
        widths = np.broadcast_to(np.asarray(pad_width), (ndim, 2))
    except ValueError:
        raise ValueError(f"pad: `pad_width` {pad_width!r} does not fit an array of rank {ndim}: "
                         "give an int, a (before, after) pair or one pair per axis") from None
    if not np.issubdtype(widths.dtype, np.integer):
        raise TypeError(f"pad: `pad_width` must hold ints, got {pad_width!r}")
    if (widths < 0).any():
        raise ValueError(f"pad: `pad_width` must be non-negative, got {pad_width!r}")
    widths = tuple((int(lo), int(hi)) for lo, hi in widths)
    if mode == "constant":
        if isinstance(constant_values, (bool, np.bool_)) or not isinstance(
                constant_values, (int, float, np.integer, np.floating)):
            raise TypeError(f"pad: `constant_values` must be a number, got {type(constant_values).__name__}")
        return apply("pad", x, pad_width=widths, constant_values=float(constant_values))
    for axis, (n, width) in enumerate(zip(_shape(x), widths)):
        if width != (0, 0):
            if n == 0:
                raise ValueError(f"pad: mode {mode!r} cannot pad the empty axis {axis}")
            x = _take(x, np.pad(np.arange(n), width, mode=mode), axis)
    return x


def roll(x: Operand, shift: int | tuple[int, ...], axis: Axis = None) -> Result:
    """x shifted by `shift` places along `axis` (entries leaving one end come back at the
    other), as `jnp.roll`; axis None: x flattened, then reshaped back. shift and axis: ints or
    equally long sequences."""
    shift = _int_sequence(shift, "shift", "roll")
    if axis is not None:
        axes = check_axes(axis, ndim_of(x), "axis", "roll") if isinstance(axis, (tuple, list)) else (
            check_axis(axis, ndim_of(x), "axis", "roll"))
        if isinstance(shift, tuple) and (not isinstance(axes, tuple) or len(shift) != len(axes)):
            raise ValueError(f"roll: `shift` {shift!r} and `axis` {axis!r} must have the same length")
        axis = axes
    elif isinstance(shift, tuple):
        raise ValueError(f"roll: a sequence `shift` {shift!r} needs `axis`")
    return apply("roll", x, shift=shift, axis=axis)


def flip(x: Operand, axis: Axis = None) -> Result:
    """x with the order of entries reversed along `axis` (None: every axis), as `jnp.flip`."""
    return apply("flip", x, axis=check_axes(axis, ndim_of(x), "axis", "flip"))


def sort(x: Operand, axis: int = -1, descending: bool = False) -> Result:
    """x sorted along `axis` (None: x flattened), as `jnp.sort` (NaN last); the gradient goes
    back through the stable sorting permutation (ties keep their order)."""
    if axis is None:
        x, axis = apply("reshape", x, shape=(-1,)), 0
    if not isinstance(descending, (bool, np.bool_)):
        raise TypeError(f"sort: `descending` must be a bool, got {type(descending).__name__}")
    return apply("sort", x, axis=check_axis(axis, ndim_of(x), "axis", "sort"), descending=bool(descending))
