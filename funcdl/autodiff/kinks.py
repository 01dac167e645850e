"""jax.numpy functions whose derivatives at kinks follow PyTorch.

Plain `jax.numpy` picks other subgradients at some points (`jnp.abs` has slope 1 at 0,
`jnp.clip` gives 0.5 at a bound, `jax.nn.leaky_relu` slope 1 at 0), so these carry a
`jax.custom_jvp`. The same functions compute the values on the tape, and the tape's rules in
`vjps.py` state the same derivatives, so both autodiffs and PyTorch agree exactly.

| op                    | derivative at the kink (PyTorch)                  |
|-----------------------|---------------------------------------------------|
| abs(x)                | 0 at x = 0                                        |
| relu(x)               | 0 at x = 0                                        |
| leaky_relu(x, s)      | s at x = 0                                        |
| clip(x, lo, hi)       | 1 at x = lo and x = hi (bounds inclusive)         |
| power(x, y), d/dx     | 0 where y == 0 (also at x = 0: d(x ** 0)/dx = 0)   |
| power(x, y), d/dy     | 0 where x == 0 and y >= 0 (d(x ** x)/dx = 0 at 0)  |
| max / min over an axis | 1/k to each of k ties; NaN over a slice with NaN  |
| binary_cross_entropy, d/dy | -logit(p), unclamped                          |
| binary_cross_entropy  | (p - y) / max(p (1 - p), 1e-12), finite at 0 and 1 |
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

BCE_LOG_CLAMP = -100.0  # PyTorch clamps log(p) and log(1 - p) at -100
# PyTorch's floor for p (1 - p) in the backward pass: `constexpr float EPSILON = 1e-12` in C++,
# i.e. float32(1e-12) = 9.99999996e-13 even for float64 inputs.
BCE_GRAD_EPS = float(np.float32(1e-12))


@jax.custom_jvp
def abs(x):
    """|x|, with d|x|/dx = 0 at 0."""
    return jnp.abs(x)


@abs.defjvp
def _abs_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return jnp.abs(x), jnp.sign(x) * t


@jax.custom_jvp
def relu(x):
    """max(x, 0), with relu'(0) = 0."""
    return jnp.maximum(x, 0)


@relu.defjvp
def _relu_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return jnp.maximum(x, 0), jnp.where(x > 0, t, 0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def leaky_relu(x, negative_slope=0.01):
    """x if x > 0 else negative_slope * x, with slope `negative_slope` at 0."""
    return jnp.where(x > 0, x, x * negative_slope)


@leaky_relu.defjvp
def _leaky_relu_jvp(negative_slope, primals, tangents):
    (x,), (t,) = primals, tangents
    return leaky_relu(x, negative_slope), jnp.where(x > 0, t, t * negative_slope)


def power(x, y):
    """x ** y with PyTorch's derivatives (`pow_backward_self` / `pow_backward_exponent`).

    A Python-number exponent is a constant (`x ** 2` stays an integer power, as in jnp); an
    array exponent is differentiated too.
    """
    if isinstance(y, (int, float)) and not isinstance(y, bool):
        return _power_by_constant(x, y)
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        x = float(x)
    return _power(as_float_constant(x, y), as_float_constant(y, x))


def as_float_constant(value, like):
    """An integer or boolean constant (a bound, a target, an exponent) as a float array of
    `like`'s dtype, so that jax transforms see no integer input (no float0 tangent); a Python
    int becomes a Python float (weakly typed, as a float literal); anything else as given."""
    if isinstance(value, (bool, int)):
        return float(value)
    dtype = getattr(value, "dtype", None)
    if dtype is not None and not jnp.issubdtype(dtype, jnp.inexact):
        like_dtype = jnp.result_type(like)
        if not jnp.issubdtype(like_dtype, jnp.floating):
            like_dtype = jnp.result_type(float)
        return jnp.asarray(value).astype(like_dtype)
    return value


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _power_by_constant(x, y):
    return jnp.power(x, y)


@_power_by_constant.defjvp
def _power_by_constant_jvp(y, primals, tangents):
    (x,), (t,) = primals, tangents
    slope = jnp.zeros_like(x) if y == 0 else y * jnp.power(x, y - 1)
    return _power_by_constant(x, y), t * slope


@jax.custom_jvp
def _power(x, y):
    return jnp.power(x, y)


@_power.defjvp
def _power_jvp(primals, tangents):
    (x, y), (tx, ty) = primals, tangents
    ans = _power(x, y)
    dx = jnp.where(jnp.equal(y, 0), 0, y * jnp.power(x, y - 1))
    dy = jnp.where(jnp.equal(x, 0) & (y >= 0), 0, ans * jnp.log(x))
    return ans, tx * dx + ty * dy


def clip_masks(x, lo, hi):
    """Where the gradient of clip goes (PyTorch's clamp_backward_min_max): to x on [lo, hi],
    to lo below it, to hi above it; when lo > hi the value is hi everywhere, and so is the
    gradient."""
    return ((x >= lo) & (x <= hi),
            (x < lo) & (lo < hi),
            (x > hi) | (hi < lo))


@jax.custom_jvp
def clip(x, lo, hi):
    """min(max(x, lo), hi); the gradient passes to x on [lo, hi] inclusive, else to the bound."""
    return jnp.minimum(jnp.maximum(x, lo), hi)


@clip.defjvp
def _clip_jvp(primals, tangents):
    (x, lo, hi), (tx, tlo, thi) = primals, tangents
    to_x, to_lo, to_hi = clip_masks(x, lo, hi)
    t = jnp.where(to_x, tx, 0) + jnp.where(to_lo, tlo, 0) + jnp.where(to_hi, thi, 0)
    return clip(x, lo, hi), t


def bce_log_terms(p):
    """(max(log p, -100), max(log(1 - p), -100)), as PyTorch clamps them."""
    return jnp.maximum(jnp.log(p), BCE_LOG_CLAMP), jnp.maximum(jnp.log1p(-p), BCE_LOG_CLAMP)


@jax.custom_jvp
def binary_cross_entropy(p, y):
    """-(y log p + (1 - y) log(1 - p)) elementwise, both logs clamped at -100."""
    log_p, log_1mp = bce_log_terms(p)
    return -(y * log_p + (1 - y) * log_1mp)


@binary_cross_entropy.defjvp
def _binary_cross_entropy_jvp(primals, tangents):
    (p, y), (tp, ty) = primals, tangents
    dp = (p - y) / jnp.maximum(p * (1 - p), BCE_GRAD_EPS)
    return binary_cross_entropy(p, y), tp * dp + ty * bce_target_derivative(p)


def bce_target_derivative(p):
    """d bce / d y = -logit(p), unclamped (+-inf at p = 0 and 1), as PyTorch."""
    return jnp.log1p(-p) - jnp.log(p)


def _reduced_axes(x, axis):
    ndim = jnp.ndim(x)
    if axis is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in (axis if isinstance(axis, tuple) else (axis,)))


def chooser_share(x, ans, axis, keepdims):
    """Each element's share of a max / min's derivative: 1/k for each of k tied winners, 0
    elsewhere, and NaN over a slice holding NaN (NaN is its max and equals nothing). The NaN
    is explicit: XLA rewrites `g * bool_mask` into a select, which would drop a 0/0."""
    axes = _reduced_axes(x, axis)
    kept = ans if keepdims else jnp.expand_dims(ans, axes)
    winners = jnp.equal(x, kept)
    dtype = jnp.result_type(x)
    count = jnp.sum(winners, axis=axes, keepdims=True).astype(dtype)
    return jnp.where(jnp.isnan(kept), jnp.nan, winners.astype(dtype) / count).astype(dtype)


def _chooser(reduce):
    @functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
    def chooser(x, axis=None, keepdims=False):
        return reduce(x, axis=axis, keepdims=keepdims)

    @chooser.defjvp
    def _jvp(axis, keepdims, primals, tangents):
        (x,), (t,) = primals, tangents
        ans = chooser(x, axis, keepdims)
        share = chooser_share(x, ans, axis, keepdims)
        return ans, jnp.sum(t * share, axis=_reduced_axes(x, axis), keepdims=keepdims)

    return chooser


max = _chooser(jnp.max)  # noqa: A001 -- max / min over `axis`, ties 1/k each, NaN gives NaN
min = _chooser(jnp.min)  # noqa: A001
