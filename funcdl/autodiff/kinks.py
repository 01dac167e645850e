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
| binary_cross_entropy  | (p - y) / max(p (1 - p), 1e-12), finite at 0 and 1 |
"""
import functools

import jax
import jax.numpy as jnp

BCE_LOG_CLAMP = -100.0  # PyTorch clamps log(p) and log(1 - p) at -100
BCE_GRAD_EPS = 1e-12  # PyTorch's floor for p (1 - p) in the backward pass


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


@jax.custom_jvp
def clip(x, lo, hi):
    """min(max(x, lo), hi); the gradient passes to x on [lo, hi] inclusive, else to the bound."""
    return jnp.minimum(jnp.maximum(x, lo), hi)


@clip.defjvp
def _clip_jvp(primals, tangents):
    (x, lo, hi), (tx, tlo, thi) = primals, tangents
    return clip(x, lo, hi), jnp.where(x < lo, tlo, jnp.where(x > hi, thi, tx))


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
    log_p, log_1mp = bce_log_terms(p)
    dp = (p - y) / jnp.maximum(p * (1 - p), BCE_GRAD_EPS)
    return binary_cross_entropy(p, y), tp * dp + ty * (log_1mp - log_p)
