"""The array-API ops of `fdl.ops`: rounding, more elementwise functions, std, prod, cumsum,
einsum and the contractions built on it, and `%` / `//`.

Each takes arrays or `fdl.autodiff.Tensor`s, as every op in `fdl.ops` does, with
`jax.numpy`'s arguments, and is one primitive of the tape (`funcdl/autodiff/vjps_array.py`)
or a composition of primitives that computes the same numbers as `jax.numpy` (std is
√var, outer a broadcast product, tensordot and dot einsums). The shape ops (diagonal, trace,
triu, tril, repeat, tile, split, pad, roll, flip, sort) are in `funcdl/ops_shape.py`.

    >>> import jax.numpy as jnp, funcdl as fdl
    >>> fdl.ops.einsum("ij,j->i", jnp.ones((2, 3)), jnp.arange(3.0))
    Array([3., 3.], dtype=float32)
    >>> fdl.ops.prod(jnp.array([2.0, 0.0, 3.0])), fdl.ops.round(jnp.array([2.5, 3.5]))
    (Array(0., dtype=float32), Array([2., 4.], dtype=float32))
"""
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from opt_einsum.parser import parse_einsum_input  # jax's own dependency

from funcdl.annotations import Axis, Operand, Result
from funcdl.autodiff import Tensor, apply

__all__ = ["sign", "floor", "ceil", "round", "log2", "log10", "logaddexp", "tan", "sinh", "cosh",
           "arcsin", "arccos", "arctan", "arctan2", "nan_to_num", "remainder", "floor_divide",
           "std", "prod", "cumsum", "einsum", "outer", "tensordot", "dot"]


def _raw(x):
    return x.value if isinstance(x, Tensor) else x


def ndim_of(x):
    return len(jnp.shape(_raw(x)))


def check_int(value, name, where):
    """`value` as an int (a NumPy integer accepted); TypeError naming `name` otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where}: `{name}` must be an int, got {type(value).__name__}")
    return int(value)


def check_axis(axis, ndim, name, where):
    """An int axis of an array of rank `ndim`, made non-negative; ValueError out of range."""
    axis = check_int(axis, name, where)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{where}: `{name}` {axis} is out of range for an array of rank {ndim}")
    return axis % ndim


def check_axes(axis, ndim, name, where):
    """None (every axis), an int or a sequence of ints, as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    axes = tuple(check_axis(a, ndim, name, where) for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{where}: `{name}` {axis!r} names an axis twice")
    return axes


def _number(value, name, where, optional=False):
    if optional and value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: `{name}` must be a number{' or None' if optional else ''}, got "
                        f"{type(value).__name__}")
    return float(value)


# ---- piecewise constant: zero gradient (as PyTorch and jax) ---------------------------------------
def sign(x: Operand) -> Result:
    """-1, 0 or 1 by the sign of x (NaN stays NaN); zero gradient."""
    return apply("sign", x)


def floor(x: Operand) -> Result:
    """⌊x⌋ elementwise; zero gradient."""
    return apply("floor", x)


def ceil(x: Operand) -> Result:
    """⌈x⌉ elementwise; zero gradient."""
    return apply("ceil", x)


def round(x: Operand, decimals: int = 0) -> Result:  # noqa: A001 -- jax.numpy's name
    """x rounded to `decimals` decimal places, halves to even (jnp.round, torch.round); zero
    gradient."""
    return apply("round", x, decimals=check_int(decimals, "decimals", "round"))


def floor_divide(x: Operand, y: Operand) -> Result:
    """⌊x / y⌋ (Python's `//`); zero gradient."""
    return apply("floor_divide", x, y)


def remainder(x: Operand, y: Operand) -> Result:
    """x mod y with the sign of y (Python's `%`) = x - y ⌊x / y⌋; d/dx = 1, d/dy = -⌊x / y⌋."""
    return apply("remainder", x, y)


# ---- elementwise --------------------------------------------------------------------------------
def log2(x: Operand) -> Result:
    """log₂ x; derivative 1 / (x ln 2)."""
    return apply("log2", x)


def log10(x: Operand) -> Result:
    """log₁₀ x; derivative 1 / (x ln 10)."""
    return apply("log10", x)


def logaddexp(x: Operand, y: Operand) -> Result:
    """log(eˣ + eʸ), computed stably (broadcast); d/dx = e^(x - ans), d/dy = e^(y - ans)."""
    return apply("logaddexp", x, y)


def tan(x: Operand) -> Result:
    """tan x; derivative 1 + tan² x."""
    return apply("tan", x)


def sinh(x: Operand) -> Result:
    """sinh x; derivative cosh x."""
    return apply("sinh", x)


def cosh(x: Operand) -> Result:
    """cosh x; derivative sinh x."""
    return apply("cosh", x)


def arcsin(x: Operand) -> Result:
    """arcsin x on [-1, 1]; derivative 1 / √(1 - x²) (inf at ±1)."""
    return apply("arcsin", x)


def arccos(x: Operand) -> Result:
    """arccos x on [-1, 1]; derivative -1 / √(1 - x²)."""
    return apply("arccos", x)


def arctan(x: Operand) -> Result:
    """arctan x; derivative 1 / (1 + x²)."""
    return apply("arctan", x)


def arctan2(y: Operand, x: Operand) -> Result:
    """The angle of the point (x, y), in (-π, π] (jnp.arctan2(y, x), broadcast);
    d/dy = x / (x² + y²), d/dx = -y / (x² + y²)."""
    return apply("arctan2", y, x)


def nan_to_num(x: Operand, nan: float = 0.0, posinf: float | None = None,
               neginf: float | None = None) -> Result:
    """x with NaN, +inf and -inf replaced by `nan`, `posinf` and `neginf` (None: the dtype's
    largest / smallest finite value); the gradient passes where x is finite, else 0."""
    where = "nan_to_num"
    return apply("nan_to_num", x, nan=_number(nan, "nan", where),
                 posinf=_number(posinf, "posinf", where, True), neginf=_number(neginf, "neginf", where, True))


# ---- reductions and scans -------------------------------------------------------------------------
def std(x: Operand, axis: Axis = None, ddof: int = 0, keepdims: bool = False) -> Result:
    """√var(x) over `axis` (ddof=0: biased, jnp.std's default; torch.std(correction=ddof)), the
    composition √ of `var`, as jnp.std computes it; derivative (x - mean x) / ((N - ddof) std)."""
    axes = check_axes(axis, ndim_of(x), "axis", "std")
    variance = apply("var", x, axis=None if axis is None else axes, ddof=check_int(ddof, "ddof", "std"),
                     keepdims=keepdims)
    return apply("sqrt", variance)


def prod(x: Operand, axis: Axis = None, keepdims: bool = False) -> Result:
    """Π x over `axis` (None: all); ∂/∂xᵢ = the product of the others, exact at zeros (one zero
    gets the product of the rest, the others 0), as PyTorch."""
    axes = check_axes(axis, ndim_of(x), "axis", "prod")
    return apply("prod", x, axis=None if axis is None else axes, keepdims=keepdims)


def cumsum(x: Operand, axis: int | None = None) -> Result:
    """Running sums along `axis` (None: over x flattened, giving shape `(x.size,)`); same shape;
    the cotangent is the running sum of g from the end."""
    if axis is None:
        return apply("cumsum", apply("reshape", x, shape=(-1,)), axis=0)
    return apply("cumsum", x, axis=check_axis(axis, ndim_of(x), "axis", "cumsum"))


# ---- contractions --------------------------------------------------------------------------------
def einsum(subscripts: str, *operands: Operand) -> Result:
    """Einstein summation, as `jnp.einsum(subscripts, *operands)`: implicit (`"ij,jk"`) or
    explicit (`"ij,jk->ik"`) output, `...` for leading axes. A letter repeated within one
    operand (a diagonal, `"ii->"`) is not supported: take `diagonal` first. The cotangent of each
    operand is the einsum of g with the others onto that operand's letters."""
    if not isinstance(subscripts, str):
        raise TypeError(f"einsum: `subscripts` must be a str, got {type(subscripts).__name__}")
    if not operands:
        raise TypeError("einsum: at least one operand is needed, got none")
    for k, x in enumerate(operands):
        if not hasattr(x, "shape"):
            raise TypeError(f"einsum: operand {k} must be an array or Tensor, got {type(x).__name__}")
    try:
        inputs, output, _ = parse_einsum_input((subscripts, *operands))
    except ValueError as error:
        raise ValueError(f"einsum: `subscripts` {subscripts!r} do not fit the operands of shapes "
                         f"{[tuple(x.shape) for x in operands]}: {error}") from None
    sizes = {}
    for k, (letters, x) in enumerate(zip(inputs.split(","), operands)):
        if len(letters) != len(x.shape):
            raise ValueError(f"einsum: operand {k} of shape {tuple(x.shape)} needs "
                             f"{len(x.shape)} subscripts, got {letters!r}")
        if len(set(letters)) != len(letters):
            raise ValueError(f"einsum: operand {k} repeats a subscript in {letters!r} (a diagonal); "
                             "take fdl.ops.diagonal first")
        for letter, n in zip(letters, x.shape):
            if sizes.setdefault(letter, n) != n:
                raise ValueError(f"einsum: subscript {letter!r} has size {sizes[letter]} in one operand "
                                 f"and {n} in operand {k} (shapes {[tuple(x.shape) for x in operands]})")
    return apply("einsum", *operands, subscripts=f"{inputs}->{output}")


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def tensordot(a: Operand, b: Operand,
              axes: int | tuple[Sequence[int], Sequence[int]] = 2) -> Result:
    """Σ over paired axes, as `jnp.tensordot`: axes=n pairs the last n axes of a with the first
    n of b; axes=(axes_a, axes_b) pairs them in order. Shape: a's free axes, then b's. An einsum."""
    ndim_a, ndim_b = ndim_of(a), ndim_of(b)
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        n = int(axes)
        if not 0 <= n <= min(ndim_a, ndim_b):
            raise ValueError(f"tensordot: `axes` {n} must lie in [0, {min(ndim_a, ndim_b)}] for operands "
                             f"of rank {ndim_a} and {ndim_b}")
        pairs = (tuple(range(ndim_a - n, ndim_a)), tuple(range(n)))
    elif isinstance(axes, (tuple, list)) and len(axes) == 2:
        pairs = tuple(check_axes(list(side) if isinstance(side, (tuple, list)) else [side], ndim, "axes",
                                 "tensordot") for side, ndim in zip(axes, (ndim_a, ndim_b)))
        if len(pairs[0]) != len(pairs[1]):
            raise ValueError(f"tensordot: `axes` must pair as many axes of a as of b, got {axes!r}")
    else:
        raise TypeError(f"tensordot: `axes` must be an int or a pair of axis sequences, got {axes!r}")
    letters_a = list(_LETTERS[:ndim_a])
    letters_b = list(_LETTERS[ndim_a:ndim_a + ndim_b])
    for i, j in zip(*pairs):
        letters_b[j] = letters_a[i]
    free = [c for i, c in enumerate(letters_a) if i not in pairs[0]] + [
        c for j, c in enumerate(letters_b) if j not in pairs[1]]
    return einsum(f"{''.join(letters_a)},{''.join(letters_b)}->{''.join(free)}", a, b)


def dot(a: Operand, b: Operand) -> Result:
    """`jnp.dot`: a product with a scalar, else Σ over a's last axis and b's second-to-last
    (its only one for a vector): `(..., k) · (k,)`, `(m, k) · (k, n)`, `(..., k) · (..., k, n)`."""
    ndim_a, ndim_b = ndim_of(a), ndim_of(b)
    if ndim_a == 0 or ndim_b == 0:
        return apply("multiply", a, b)
    return tensordot(a, b, ((ndim_a - 1,), (max(ndim_b - 2, 0),)))


def outer(a: Operand, b: Operand) -> Result:
    """`(m,) , (n,) -> (m, n)`: aᵢ bⱼ, of a and b flattened (jnp.outer)."""
    return apply("multiply", apply("reshape", a, shape=(-1, 1)), apply("reshape", b, shape=(1, -1)))
