"""The array-API primitives of the tape (rounding, more elementwise functions, prod, cumsum,
einsum, flip, roll, pad, sort, nan_to_num, %, //), each with its hand-written VJP.

Same table style as `vjps.py`: `Primitive(forward, vjps, reads=...)`, rules
`rule(g, ans, *inputs, **params)`. The rules are written with `apply` of table primitives
and Python operators wherever the math allows, not with `jax.numpy` on `g` and the inputs, so
that they are themselves expressions the tape can record; masks and permutations, which are
constants of the derivative, are computed from the plain values under every level of Tensor
(`strip`). Parameters arrive resolved by
`funcdl/ops_array.py`: axes as non-negative ints or tuples, `pad_width` as `(lo, hi)` per axis,
einsum subscripts explicit (`"ij,jk->ik"`).
"""
import math

import jax.numpy as jnp
import numpy as np

from funcdl.autodiff import rule_ops as r
from funcdl.autodiff.rule_ops import strip
from funcdl.autodiff.tensor import apply
from funcdl.autodiff.vjps import ANS, Primitive, same_cotangent

_LN2, _LN10 = math.log(2.0), math.log(10.0)


def _value(x):
    """The plain array under every level of a (nested) Tensor: masks and permutations."""
    return strip(x)


def zero_vjp(g, ans, x, *others, **params):
    """A piecewise-constant op (sign, floor, ceil, round, //): zero gradient (as PyTorch)."""
    return jnp.zeros(x.shape, g.dtype)


def _zero_vjp_y(g, ans, x, y):
    return jnp.zeros(y.shape, g.dtype)


# ---- elementwise -----------------------------------------------------------------------------
def _finite_or_zero(v):
    """v with ±inf replaced by 0, as jax's logaddexp derivative reads its operands."""
    return apply("where", jnp.isinf(_value(v)), 0.0, v)


def _logaddexp_vjp(g, ans, x, y):
    """d/dx log(e^x + e^y) = e^(x - ans) (infinities read as 0, as jax)."""
    return g * apply("exp", _finite_or_zero(x) - _finite_or_zero(ans))


def _arctan2_vjp_y(g, ans, y, x):
    return g * x / (x * x + y * y)


def _arctan2_vjp_x(g, ans, y, x):
    return -g * y / (x * x + y * y)


def _remainder(x, y):
    return jnp.remainder(x, y)


def _remainder_vjp_y(g, ans, x, y):
    """x mod y = x - y ⌊x / y⌋, so d/dy = -⌊x / y⌋ (PyTorch's remainder backward)."""
    return -g * apply("floor_divide", x, y)


# ---- reductions and scans ------------------------------------------------------------------------
def _prod(x, axis=None, keepdims=False):
    return jnp.prod(x, axis=axis, keepdims=keepdims)


def _shifted_in(x, ones, shift):
    """x along its last axis moved `shift` places on, the first `shift` entries taken from
    `ones` (an array of ones whose last axis has at least `shift` entries)."""
    n = x.shape[-1]
    return apply("concatenate", ones[..., :shift], apply("getitem", x, index=(Ellipsis, slice(0, n - shift))),
                 axis=-1)


def _exclusive_cumprod(x):
    """Π_{j<i} x_j along the last axis: a log-depth (Hillis-Steele) scan of tape products, exact
    with zeros (no division) and differentiable by the tape to any order."""
    n = x.shape[-1]
    if n == 0:
        return x
    ones = jnp.ones(x.shape[:-1] + (n,), r.dtype(x))
    x, shift = _shifted_in(x, ones, 1), 1
    while shift < n:
        x = x * _shifted_in(x, ones, shift)
        shift *= 2
    return x


def _prod_vjp(g, ans, x, axis=None, keepdims=False):
    """∂/∂x_i Π_j x_j = Π_{j≠i} x_j: the exclusive cumulative products from each side, over the
    reduced axes flattened into one (exact with zeros, as PyTorch). Written with tape
    primitives, so the second derivative, Π_{j≠i,k} x_j, is the tape's too."""
    ndim = x.ndim
    axes = tuple(range(ndim)) if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    kept = tuple(a for a in range(ndim) if a not in axes)
    moved = apply("transpose", x, axes=kept + axes)
    moved_shape = tuple(x.shape[a] for a in kept + axes)
    flat = apply("reshape", moved, shape=moved_shape[:len(kept)] + (-1,))
    before = _exclusive_cumprod(flat)
    after = apply("flip", _exclusive_cumprod(apply("flip", flat, axis=(flat.ndim - 1,))), axis=(flat.ndim - 1,))
    others = apply("transpose", apply("reshape", before * after, shape=moved_shape),
                   axes=tuple(int(i) for i in np.argsort(kept + axes)))
    g = g if keepdims else apply("expand_dims", g, axis=axes)
    return g * others


def _cumsum_vjp(g, ans, x, axis):
    """The cotangent of y_i = Σ_{j<=i} x_j is Σ_{i>=j} g_i: a cumulative sum from the end."""
    return apply("flip", apply("cumsum", apply("flip", g, axis=axis), axis=axis), axis=axis)


def _einsum(*xs, subscripts):
    return jnp.einsum(subscripts, *xs)


def _einsum_vjp(i, g, ans, *xs, subscripts):
    """The cotangent of operand i: g contracted with the other operands onto operand i's
    subscripts. A letter only operand i has (summed away, e.g. j in "ij->i") enters as a vector
    of ones of its size, so the result has operand i's full shape."""
    inputs, output = subscripts.split("->")
    letters = inputs.split(",")
    sizes = {c: n for operand, x in zip(letters, xs) for c, n in zip(operand, x.shape)}
    others = [(s, x) for k, (s, x) in enumerate(zip(letters, xs)) if k != i]
    seen = set(output).union(*(s for s, _ in others))
    missing = "".join(c for c in letters[i] if c not in seen)
    operands = [g] + [x for _, x in others] + ([jnp.ones([sizes[c] for c in missing], g.dtype)] if missing else [])
    terms = [output] + [s for s, _ in others] + ([missing] if missing else [])
    return apply("einsum", *operands, subscripts=",".join(terms) + "->" + letters[i])


# ---- shape -----------------------------------------------------------------------------------
def _flip(x, axis):
    return jnp.flip(x, axis)


def _roll(x, shift, axis):
    return jnp.roll(x, shift, axis)


def _roll_vjp(g, ans, x, shift, axis):
    negated = tuple(-s for s in shift) if isinstance(shift, tuple) else -shift
    return apply("roll", g, shift=negated, axis=axis)


def _pad(x, pad_width, constant_values=0.0):
    return jnp.pad(x, pad_width, constant_values=constant_values)


def _pad_vjp(g, ans, x, pad_width, constant_values=0.0):
    return apply("getitem", g, index=tuple(slice(lo, lo + n) for (lo, _), n in zip(pad_width, x.shape)))


def _sort(x, axis=-1, descending=False):
    return jnp.sort(x, axis=axis, descending=descending)


def _sort_vjp(g, ans, x, axis=-1, descending=False):
    """ans = x gathered at the (stable) sorting permutation p, so x's cotangent is g gathered
    at p's inverse. Ties keep their order (descending: the ascending order reversed), as jax."""
    order = jnp.argsort(_value(x), axis=axis, stable=True)
    if descending:
        order = jnp.flip(order, axis)
    inverse = jnp.argsort(order, axis=axis)
    grid = [jnp.reshape(jnp.arange(n), [n if k == a else 1 for k in range(x.ndim)])
            for a, n in enumerate(x.shape)]
    grid[axis] = inverse
    return apply("getitem", g, index=tuple(grid))


def _nan_to_num(x, nan=0.0, posinf=None, neginf=None):
    return jnp.nan_to_num(x, nan=nan, posinf=posinf, neginf=neginf)


def _nan_to_num_vjp(g, ans, x, **params):
    """The gradient passes where x is finite; replaced entries are constants (as PyTorch)."""
    return apply("where", jnp.isfinite(_value(x)), g, 0.0)


P = Primitive
X, XY, NOTHING, ANS_ONLY = (0,), (0, 1), (), (ANS,)
ZERO = dict(reads=(NOTHING,))
ARRAY_PRIMITIVES = {
    # ---- piecewise constant: zero gradient ------------------------------------------------------
    "sign":     P(jnp.sign,  (zero_vjp,), **ZERO),
    "floor":    P(jnp.floor, (zero_vjp,), **ZERO),
    "ceil":     P(jnp.ceil,  (zero_vjp,), **ZERO),
    "round":    P(lambda x, decimals=0: jnp.round(x, decimals), (zero_vjp,), **ZERO),
    "floor_divide": P(jnp.floor_divide, (zero_vjp, _zero_vjp_y), reads=(NOTHING, NOTHING)),
    "remainder": P(_remainder, (same_cotangent, _remainder_vjp_y), reads=(NOTHING, XY)),
    # ---- elementwise -----------------------------------------------------------------------------
    "log2":     P(jnp.log2,    (lambda g, ans, x: g / (x * _LN2),), reads=(X,)),
    "log10":    P(jnp.log10,   (lambda g, ans, x: g / (x * _LN10),), reads=(X,)),
    "logaddexp": P(jnp.logaddexp, (_logaddexp_vjp, lambda g, ans, x, y: _logaddexp_vjp(g, ans, y, x)),
                   reads=((0, ANS), (1, ANS))),
    "tan":      P(jnp.tan,     (lambda g, ans, x: g * (1 + ans * ans),), reads=(ANS_ONLY,)),
    "sinh":     P(jnp.sinh,    (lambda g, ans, x: g * apply("cosh", x),), reads=(X,)),
    "cosh":     P(jnp.cosh,    (lambda g, ans, x: g * apply("sinh", x),), reads=(X,)),
    "arcsin":   P(jnp.arcsin,  (lambda g, ans, x: g / apply("sqrt", 1 - x * x),), reads=(X,)),
    "arccos":   P(jnp.arccos,  (lambda g, ans, x: -g / apply("sqrt", 1 - x * x),), reads=(X,)),
    "arctan":   P(jnp.arctan,  (lambda g, ans, x: g / (1 + x * x),), reads=(X,)),
    "arctan2":  P(jnp.arctan2, (_arctan2_vjp_y, _arctan2_vjp_x), reads=(XY, XY)),
    "nan_to_num": P(_nan_to_num, (_nan_to_num_vjp,), reads=(X,)),
    # ---- reductions, scans, contractions ----------------------------------------------------------
    "prod":     P(_prod, (_prod_vjp,), reads=(X,)),
    "cumsum":   P(lambda x, axis: jnp.cumsum(x, axis=axis), (_cumsum_vjp,), reads=(NOTHING,)),
    "einsum":   P(_einsum, (_einsum_vjp,), variadic=True),
    # ---- shape -------------------------------------------------------------------------------
    "flip":     P(_flip, (lambda g, ans, x, axis: apply("flip", g, axis=axis),), reads=(NOTHING,)),
    "roll":     P(_roll, (_roll_vjp,), reads=(NOTHING,)),
    "pad":      P(_pad,  (_pad_vjp,), reads=(NOTHING,)),
    "sort":     P(_sort, (_sort_vjp,), reads=(X,)),
}
del P
