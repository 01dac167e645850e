"""The primitives of the tape: each one's forward function and, beside it, its VJP rules.

A rule for input i is `rule(g, ans, *inputs, **params) -> cotangent of input i`, where `g` is
the cotangent of the output `ans`. Rules may return a cotangent of the broadcast shape: the
backward pass sums it back to the input's shape once, centrally (`unbroadcast`). `-` and `/`
keep rules of their own (their compositions round differently from jax's); everything that is
not here (mean of squares, softmax cross-entropy, ...) is a composition in user code.
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcdl.autodiff import kinks


class Primitive(NamedTuple):
    forward: Callable  # (*inputs, **params) -> ans
    vjps: tuple  # one rule per positional input (None: not differentiable)
    variadic: bool = False  # True: vjps[0] is `rule(i, g, ans, *inputs, **params)`


def unbroadcast(g, shape):
    """Sum `g` over the axes that broadcasting added to an operand of shape `shape`."""
    g = jnp.asarray(g)
    if g.shape == tuple(shape):
        return g
    if g.ndim < len(shape):
        return jnp.broadcast_to(g, shape)
    g = jnp.sum(g, axis=tuple(range(g.ndim - len(shape))))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if stretched:
        g = jnp.sum(g, axis=stretched, keepdims=True)
    return g


def _axes(x, axis):
    """`axis` (None, int or tuple) as a tuple of non-negative axes of x."""
    ndim = jnp.ndim(x)
    if axis is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in (axis if isinstance(axis, tuple) else (axis,)))


def _expand(g, x, axis, keepdims):
    """Broadcast a reduction's cotangent back to the shape of its input x."""
    if not keepdims:
        g = jnp.expand_dims(g, _axes(x, axis))
    return jnp.broadcast_to(g, jnp.shape(x))


def _kept(ans, x, axis, keepdims):
    """A reduction's result with the reduced axes kept (size 1), for broadcasting against x."""
    return ans if keepdims else jnp.expand_dims(ans, _axes(x, axis))


def _size(x, axis):
    return int(np.prod([jnp.shape(x)[a] for a in _axes(x, axis)], dtype=np.int64))


def _power_vjp_base(g, ans, x, y):
    if isinstance(y, (int, float)) and y == 0:
        return jnp.zeros_like(g)
    return g * jnp.where(jnp.equal(y, 0), 0, y * x ** (y - 1))


def _max_vjp(g, ans, x, axis=None, keepdims=False):
    # Ties share the gradient equally, as torch.amax and jnp.max do.
    winners = x == _kept(ans, x, axis, keepdims)
    count = jnp.sum(winners, axis=_axes(x, axis), keepdims=True).astype(jnp.result_type(g))
    return jnp.where(winners, _expand(g, x, axis, keepdims) / count, 0)


def _matmul_operands(g, ans, a, b):
    """a, b as (..., m, k) @ (..., k, n) and g as (..., m, n): 1-D operands made 2-D."""
    a2 = jnp.expand_dims(a, 0) if jnp.ndim(a) == 1 else a
    b2 = jnp.expand_dims(b, 1) if jnp.ndim(b) == 1 else b
    batch = jnp.broadcast_shapes(jnp.shape(a2)[:-2], jnp.shape(b2)[:-2])
    g2 = jnp.reshape(g, batch + (jnp.shape(a2)[-2], jnp.shape(b2)[-1]))
    return g2, a2, b2


def _matmul_vjp_a(g, ans, a, b):
    g2, a2, b2 = _matmul_operands(g, ans, a, b)
    ga = jnp.matmul(g2, jnp.swapaxes(b2, -1, -2))
    return ga[..., 0, :] if jnp.ndim(a) == 1 else ga


def _matmul_vjp_b(g, ans, a, b):
    g2, a2, b2 = _matmul_operands(g, ans, a, b)
    gb = jnp.matmul(jnp.swapaxes(a2, -1, -2), g2)
    return gb[..., 0] if jnp.ndim(b) == 1 else gb


def _concatenate_vjp(i, g, ans, *xs, axis=0):
    axis = axis % jnp.ndim(ans)
    start = sum(jnp.shape(x)[axis] for x in xs[:i])
    return jax.lax.slice_in_dim(g, start, start + jnp.shape(xs[i])[axis], axis=axis)


def _getitem_vjp(g, ans, x, index):
    return jnp.zeros(jnp.shape(x), jnp.result_type(g)).at[index].add(g)


def _log_softmax(x, axis=-1):
    return jax.nn.log_softmax(x, axis=axis)


def _sum_g_ans(g, ans, axis):
    return jnp.sum(g * ans, axis=axis, keepdims=True)


P = Primitive
PRIMITIVES = {
    # ---- arithmetic ------------------------------------------------------------------------
    "add":      P(jnp.add,      (lambda g, ans, x, y: g, lambda g, ans, x, y: g)),
    "subtract": P(jnp.subtract, (lambda g, ans, x, y: g, lambda g, ans, x, y: -g)),
    "multiply": P(jnp.multiply, (lambda g, ans, x, y: g * y, lambda g, ans, x, y: g * x)),
    "divide":   P(jnp.divide,   (lambda g, ans, x, y: g / y, lambda g, ans, x, y: -g * ans / y)),
    "negative": P(jnp.negative, (lambda g, ans, x: -g,)),
    "power":    P(jnp.power,    (_power_vjp_base,
                                 lambda g, ans, x, y: g * ans * jnp.log(jnp.where(x == 0, 1, x)))),
    "matmul":   P(jnp.matmul,   (_matmul_vjp_a, _matmul_vjp_b)),
    # ---- elementwise -------------------------------------------------------------------------
    "exp":      P(jnp.exp,          (lambda g, ans, x: g * ans,)),
    "log":      P(jnp.log,          (lambda g, ans, x: g / x,)),
    "sqrt":     P(jnp.sqrt,         (lambda g, ans, x: g / (2 * ans),)),
    "square":   P(jnp.square,       (lambda g, ans, x: g * 2 * x,)),
    "abs":      P(kinks.abs,        (lambda g, ans, x: g * jnp.sign(x),)),
    "tanh":     P(jnp.tanh,         (lambda g, ans, x: g * (1 - ans * ans),)),
    "sigmoid":  P(jax.nn.sigmoid,   (lambda g, ans, x: g * ans * (1 - ans),)),
    "softplus": P(jax.nn.softplus,  (lambda g, ans, x: g * jax.nn.sigmoid(x),)),
    "relu":     P(kinks.relu,       (lambda g, ans, x: jnp.where(x > 0, g, 0),)),
    "leaky_relu": P(kinks.leaky_relu,
                    (lambda g, ans, x, negative_slope=0.01: jnp.where(x > 0, g, g * negative_slope),)),
    "maximum":  P(jnp.maximum, (lambda g, ans, x, y: jnp.where(x > y, g, jnp.where(x == y, g * 0.5, 0)),
                                lambda g, ans, x, y: jnp.where(y > x, g, jnp.where(x == y, g * 0.5, 0)))),
    "minimum":  P(jnp.minimum, (lambda g, ans, x, y: jnp.where(x < y, g, jnp.where(x == y, g * 0.5, 0)),
                                lambda g, ans, x, y: jnp.where(y < x, g, jnp.where(x == y, g * 0.5, 0)))),
    "where":    P(jnp.where,   (None,
                                lambda g, ans, c, a, b: jnp.where(c, g, 0),
                                lambda g, ans, c, a, b: jnp.where(c, 0, g))),
    "clip":     P(kinks.clip,  (lambda g, ans, x, lo, hi: jnp.where(kinks.clip_masks(x, lo, hi)[0], g, 0),
                                lambda g, ans, x, lo, hi: jnp.where(kinks.clip_masks(x, lo, hi)[1], g, 0),
                                lambda g, ans, x, lo, hi: jnp.where(kinks.clip_masks(x, lo, hi)[2], g, 0))),
    "binary_cross_entropy": P(kinks.binary_cross_entropy, (
        lambda g, ans, p, y: g * (p - y) / jnp.maximum(p * (1 - p), kinks.BCE_GRAD_EPS),
        lambda g, ans, p, y: g * kinks.bce_target_derivative(p))),
    # ---- reductions --------------------------------------------------------------------------
    "sum":  P(jnp.sum,  (lambda g, ans, x, axis=None, keepdims=False: _expand(g, x, axis, keepdims),)),
    "mean": P(jnp.mean, (lambda g, ans, x, axis=None, keepdims=False:
                         _expand(g, x, axis, keepdims) / _size(x, axis),)),
    "max":  P(jnp.max,  (_max_vjp,)),
    "logsumexp": P(lambda x, axis=None, keepdims=False: jax.nn.logsumexp(x, axis=axis, keepdims=keepdims),
                   (lambda g, ans, x, axis=None, keepdims=False:
                    _expand(g, x, axis, keepdims) * jnp.exp(x - _kept(ans, x, axis, keepdims)),)),
    "softmax": P(lambda x, axis=-1: jax.nn.softmax(x, axis=axis),
                 (lambda g, ans, x, axis=-1: ans * (g - _sum_g_ans(g, ans, axis)),)),
    "log_softmax": P(_log_softmax,
                     (lambda g, ans, x, axis=-1: g - jnp.exp(ans) * jnp.sum(g, axis=axis, keepdims=True),)),
    # ---- shape -------------------------------------------------------------------------------
    "reshape":   P(lambda x, shape: jnp.reshape(jnp.asarray(x), shape),
                   (lambda g, ans, x, shape: jnp.reshape(g, jnp.shape(x)),)),
    "transpose": P(lambda x, axes=None: jnp.transpose(x, axes),
                   (lambda g, ans, x, axes=None:
                    jnp.transpose(g, None if axes is None else tuple(np.argsort(_axes(x, tuple(axes)))),),)),
    "getitem":   P(lambda x, index: x[index], (_getitem_vjp,)),
    "concatenate": P(lambda *xs, axis=0: jnp.concatenate(xs, axis=axis), (_concatenate_vjp,), variadic=True),
}
del P
