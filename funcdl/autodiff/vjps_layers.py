"""The layer primitives of the tape: convolution, pooling, erf/gelu/silu and take, with VJPs.

Same table style as `vjps.py`: `Primitive(forward, vjps)`, rules `rule(g, ans, *inputs,
**params)`. Every rule is written by hand from the forward's definition (never `jax.vjp` of
it), so the cross-check of `fdl.autodiff` against `jax.grad` is not circular.

The rules nest (second order and beyond): elementwise ones compute with `rule_ops`, and each
linear map of a rule is a primitive of its own whose rules are again such maps. Convolution
y = B(x, w) is bilinear: its rules are `conv_dx(g, w)` = B_xᵀ g and `conv_dw(x, g)` = B_wᵀ g,
and since <c, B_xᵀ(g, w)> = <g, B(c, w)> the rules of those are B, conv_dx and conv_dw again.
Average pooling A and its transpose `avg_pool_dx` are each other's rules. Max pooling's rule
`max_pool_dx` routes g to each window's winner (PyTorch's choice: the last NaN, else the
first maximum, never a padded position; a selection read off x's values, constant:
derivative 0 in x, as PyTorch's double backward); its transpose `max_pool_gather` reads each
window's winner, and is also the forward's JVP under `jax.grad`. `take`'s scatter-add
`take_dx` and the zero-filling `take_zeros` likewise.

Layouts are PyTorch's: x `(N, C, *spatial)`, kernels `(C_out, C_in // groups, *k)`. Parameters
arrive resolved by `fdl.ops` (`funcdl/ops_layers.py`): `stride`, `dilation`, `window` are
tuples with one int per spatial axis, `padding` a tuple of `(lo, hi)` pairs.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from funcdl.autodiff import rule_ops as r
from funcdl.autodiff.rule_ops import strip
from funcdl.autodiff.vjps import Primitive


def _transposed_padding(in_size, out_size, window, stride, dilation, padding):
    """Per axis, the `(lo, hi)` padding that makes a stride-1 window pass over the cotangent
    (dilated by `stride`) land back on the input's `in_size` positions. Negative values crop:
    they drop input positions that no window of the forward reached."""
    pads = []
    for n, o, k, s, d, (lo, _) in zip(in_size, out_size, window, stride, dilation, padding):
        reach = (k - 1) * d + 1  # the dilated window's extent
        before = reach - 1 - lo
        pads.append((before, n + reach - 1 - ((o - 1) * s + 1) - before))
    return tuple(pads)


# ---- convolution: y[n, o, p] = Σ_{c, k} xpad[n, group(o) · C_in/G + c, p · s + k · d] w[o, c, k]
def _conv(x, w, *, stride, padding, dilation, groups):
    return lax.conv_general_dilated(x, w, window_strides=stride, padding=padding,
                                    rhs_dilation=dilation, feature_group_count=groups)


def _conv_dx(g, w, *, x_shape, stride, padding, dilation, groups):
    """B_xᵀ g: the cotangent of x (shape `x_shape`) of y = conv(x, w) with cotangent g."""
    # dx = the cotangent, dilated by the stride, convolved with the spatially flipped kernel
    # whose in/out channels are swapped within each group.
    c_out, c_in_group, *window = w.shape
    w_t = jnp.reshape(w, (groups, c_out // groups, c_in_group, *window))
    w_t = jnp.reshape(jnp.swapaxes(w_t, 1, 2), (groups * c_in_group, c_out // groups, *window))
    w_t = jnp.flip(w_t, axis=tuple(range(2, w.ndim)))
    pads = _transposed_padding(x_shape[2:], g.shape[2:], window, stride, dilation, padding)
    return lax.conv_general_dilated(g, w_t, window_strides=(1,) * len(window), padding=pads,
                                    lhs_dilation=stride, rhs_dilation=dilation,
                                    feature_group_count=groups)


def _conv_dw(x, g, *, w_shape, stride, padding, dilation, groups):
    """B_wᵀ g: the cotangent of w (shape `w_shape`) of y = conv(x, w) with cotangent g."""
    # dw[o, c, k] = Σ_{n, p} g[n, o, p] xpad[n, group(o) · C_in/G + c, p · s + k · d]: a
    # convolution of x (channels as the batch, the batch as features, grouped) with g as the
    # kernel (dilated by the stride), stepping by the dilation.
    n, c_in, *size = x.shape
    c_out, c_in_group, *window = w_shape
    lhs = jnp.reshape(x, (n, groups, c_in_group, *size))
    lhs = jnp.transpose(lhs, (2, 1, 0, *range(3, lhs.ndim)))  # (C_in / G, G, N, *size)
    lhs = jnp.reshape(lhs, (c_in_group, groups * n, *size))
    rhs = jnp.swapaxes(g, 0, 1)  # (C_out, N, *out)
    out = g.shape[2:]
    pads = tuple((lo, (o - 1) * s + 1 - m + (k - 1) * d - lo)
                 for m, o, k, s, d, (lo, _) in zip(size, out, window, stride, dilation, padding))
    dw = lax.conv_general_dilated(lhs, rhs, window_strides=dilation, padding=pads,
                                  rhs_dilation=stride, feature_group_count=groups)
    return jnp.swapaxes(dw, 0, 1)  # (C_in / G, C_out, *k) -> (C_out, C_in / G, *k)


def _conv_rules():
    """The rules of conv, conv_dx and conv_dw, each in terms of the three."""
    def conv(x, w, p): return r.primitive("conv", x, w, **p)
    def dx(g, w, x_shape, p): return r.primitive("conv_dx", g, w, x_shape=tuple(x_shape), **p)
    def dw(x, g, w_shape, p): return r.primitive("conv_dw", x, g, w_shape=tuple(w_shape), **p)
    return {
        "conv": (lambda g, ans, x, w, **p: dx(g, w, x.shape, p),
                 lambda g, ans, x, w, **p: dw(x, g, w.shape, p)),
        "conv_dx": (lambda c, ans, g, w, x_shape, **p: conv(c, w, p),
                    lambda c, ans, g, w, x_shape, **p: dw(c, g, w.shape, p)),
        "conv_dw": (lambda d, ans, x, g, w_shape, **p: dx(g, d, x.shape, p),
                    lambda d, ans, x, g, w_shape, **p: conv(x, d, p)),
    }


# ---- pooling over the last two axes of (N, C, H, W); padding pads H and W only -------------
def _pool_config(window, stride, padding):
    return (1, 1, *window), (1, 1, *stride), ((0, 0), (0, 0), *padding)


def _max_pool_reduce(x, window, stride, padding):
    dims, strides, pads = _pool_config(window, stride, padding)
    return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, dims, strides, pads)


# jax.grad of reduce_window's max may pick a padded position (an all -inf window) or another
# NaN than PyTorch; its JVP here reads each window's winner (`_max_pool_gather`), so jax
# derives the gradient by transposing that gather (independent of the tape's own scatter,
# `_max_pool_dx`) and both autodiffs give PyTorch's.
_max_pool_jvp = jax.custom_jvp(_max_pool_reduce, nondiff_argnums=(1, 2, 3))


@_max_pool_jvp.defjvp
def _(window, stride, padding, primals, tangents):
    (x,), (t,) = primals, tangents
    y = _max_pool_jvp(x, window, stride, padding)
    return y, _max_pool_gather(t, lax.stop_gradient(x), window=window, stride=stride, padding=padding)


def _max_pool(x, *, window, stride, padding):
    return _max_pool_jvp(x, window, stride, padding)


def _window_views(a, window, stride, out_shape):
    """The kh·kw strided views of a padded `(N, C, Hp, Wp)` array, one per window offset in
    row-major order, stacked: `(kh·kw, N, C, H_out, W_out)`."""
    (sh, sw), (oh, ow) = stride, out_shape
    return jnp.stack([a[:, :, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
                      for i in range(window[0]) for j in range(window[1])])


def _winners(x, window, stride, padding):
    """Per window, the offset (row-major in the window) of the element max pooling selects,
    `(N, C, H_out, W_out)` int: PyTorch's rule, which never selects a padded position: the
    last NaN if the window holds one, else the first maximal element (an all -inf window: its
    first element inside the input)."""
    xpad = jnp.pad(x, ((0, 0), (0, 0), padding[0], padding[1]), constant_values=-jnp.inf)
    out_shape = tuple((p - k) // s + 1 for p, k, s in zip(xpad.shape[2:], window, stride))
    inside = np.pad(np.ones(x.shape[2:], bool), padding)[None, None]
    views = _window_views(xpad, window, stride, out_shape)
    valid = _window_views(inside, window, stride, out_shape)
    nan = jnp.isnan(views)
    last_nan = nan.shape[0] - 1 - jnp.argmax(nan[::-1], axis=0)
    best = jnp.max(jnp.where(valid, views, -jnp.inf), axis=0, keepdims=True)
    first_best = jnp.argmax(valid & (views == best), axis=0)
    return jnp.where(jnp.any(nan, axis=0), last_nan, first_best)


def _max_pool_dx(g, x, *, window, stride, padding):
    """The cotangent of x of max pooling with cotangent g (x's values pick the winners)."""
    # Each window sends its cotangent to its winner (`_winners`, PyTorch's choice): put each
    # offset's share back where that strided view of the padded input came from.
    (ph, pw), (sh, sw) = [lo for lo, _ in padding], stride
    winner = _winners(x, window, stride, padding)
    oh, ow = g.shape[2:]
    hp, wp = x.shape[2] + sum(padding[0]), x.shape[3] + sum(padding[1])
    offsets = [(i, j) for i in range(window[0]) for j in range(window[1])]
    dx = jnp.zeros((*x.shape[:2], hp, wp), g.dtype)
    for index, (i, j) in enumerate(offsets):
        share = jnp.where(winner == index, g, 0)
        dx = dx + lax.pad(share, np.zeros((), g.dtype),
                          ((0, 0, 0), (0, 0, 0), (i, hp - i - (oh - 1) * sh - 1, sh - 1),
                           (j, wp - j - (ow - 1) * sw - 1, sw - 1)))
    return dx[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]


def _max_pool_gather(c, x, *, window, stride, padding):
    """`_max_pool_dx`'s transpose: per window of x, c at its winner (`_winners`)."""
    winner = _winners(x, window, stride, padding)
    cpad = jnp.pad(c, ((0, 0), (0, 0), padding[0], padding[1]))
    views = _window_views(cpad, window, stride, winner.shape[2:])
    offsets = jnp.arange(views.shape[0]).reshape(-1, 1, 1, 1, 1)
    return jnp.sum(jnp.where(winner[None] == offsets, views, 0), axis=0)


def _avg_pool(x, *, window, stride, padding):
    dims, strides, pads = _pool_config(window, stride, padding)
    # count_include_pad=True (PyTorch's default): always divide by the window's size.
    return lax.reduce_window(x, np.zeros((), x.dtype), lax.add, dims, strides, pads) / math.prod(window)


def _avg_pool_dx(g, *, x_shape, window, stride, padding):
    """Average pooling's transpose: the cotangent of x (shape `x_shape`) for cotangent g."""
    # Every element of a window gets g / (kh·kw): pad the cotangent (dilated by the stride)
    # and sum it over stride-1 windows.
    pads = _transposed_padding(x_shape[2:], g.shape[2:], window, stride, (1, 1), padding)
    spread = lax.pad(g / math.prod(window), np.zeros((), g.dtype),
                     ((0, 0, 0), (0, 0, 0), *[(lo, hi, s - 1) for (lo, hi), s in zip(pads, stride)]))
    return lax.reduce_window(spread, np.zeros((), g.dtype), lax.add, (1, 1, *window),
                             (1, 1, 1, 1), ((0, 0),) * 4)


# ---- elementwise: erf, gelu, silu ------------------------------------------------------------
_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_TANH_SCALE = math.sqrt(2 / math.pi)  # tanh-GELU: 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))


def _gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + jnp.tanh(_TANH_SCALE * (x + 0.044715 * x * x * x)))
    return 0.5 * x * (1 + lax.erf(x * (1 / math.sqrt(2))))


def _gelu_vjp(g, ans, x, approximate="none"):
    if approximate == "tanh":
        t = r.tanh(_TANH_SCALE * (x + 0.044715 * x * x * x))
        return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _TANH_SCALE * (1 + 3 * 0.044715 * x * x))
    # d/dx x Φ(x) = Φ(x) + x φ(x)
    return g * (0.5 * (1 + r.erf(x * (1 / math.sqrt(2)))) + x * _INV_SQRT_2PI * r.exp(-0.5 * x * x))


def _silu_vjp(g, ans, x):
    s = r.sigmoid(x)
    return g * (s + ans * (1 - s))  # d/dx x σ(x) = σ + x σ (1 - σ)


# ---- take: gather along one axis; out-of-range indices give NaN (fill) ----------------------
def _take(x, indices, *, axis=0):
    return jnp.take(x, indices, axis=axis, mode="fill", fill_value=jnp.nan)


def _take_dx(g, indices, *, x_shape, axis=0):
    # Scatter-add: an index taken k times collects all k cotangents (out-of-range ones drop).
    index = (slice(None),) * (axis % len(x_shape)) + (indices,)
    return jnp.zeros(x_shape, g.dtype).at[index].add(g, mode="drop")


def _take_zeros(x, indices, *, axis=0):
    """`_take_dx`'s transpose: take along `axis`, 0 at out-of-range indices."""
    return jnp.take(x, indices, axis=axis, mode="fill", fill_value=0)


_CONV = _conv_rules()
P = Primitive
LAYER_PRIMITIVES = {
    "conv":       P(_conv,     _CONV["conv"], reads=((1,), (0,))),
    "max_pool2d": P(_max_pool, (lambda g, ans, x, **p: r.primitive("max_pool_dx", g, strip(x), **p),), reads=((0,),)),
    "avg_pool2d": P(_avg_pool, (lambda g, ans, x, **p: r.primitive("avg_pool_dx", g, x_shape=tuple(x.shape), **p),),
                    reads=((),)),
    "erf":        P(lax.erf,   (lambda g, ans, x: g * _TWO_OVER_SQRT_PI * r.exp(-x * x),)),
    "gelu":       P(_gelu,     (_gelu_vjp,)),
    "silu":       P(lambda x: x * jax.nn.sigmoid(x), (_silu_vjp,)),
    "take":       P(_take,     (lambda g, ans, x, indices, axis=0:
                                r.primitive("take_dx", g, indices, x_shape=tuple(x.shape), axis=axis), None),
                    reads=((), ())),
    # ---- for the rules (see the module's docstring)
    "conv_dx":    P(_conv_dx,  _CONV["conv_dx"], reads=((1,), (0,))),
    "conv_dw":    P(_conv_dw,  _CONV["conv_dw"], reads=((1,), (0,))),
    "max_pool_dx": P(_max_pool_dx, (lambda c, ans, g, x, **p: r.primitive("max_pool_gather", c, x, **p), None),
                     reads=((1,), ())),
    "max_pool_gather": P(_max_pool_gather, (lambda g, ans, c, x, **p: r.primitive("max_pool_dx", g, x, **p), None),
                         reads=((1,), ())),
    "avg_pool_dx": P(_avg_pool_dx, (lambda c, ans, g, x_shape, **p: r.primitive("avg_pool2d", c, **p),),
                     reads=((),)),
    "take_dx":    P(_take_dx,  (lambda c, ans, g, indices, x_shape, axis=0: r.primitive("take_zeros", c, indices, axis=axis),
                                None), reads=((1,), ())),
    "take_zeros": P(_take_zeros, (lambda g, ans, x, indices, axis=0:
                                  r.primitive("take_dx", g, indices, x_shape=tuple(x.shape), axis=axis), None),
                    reads=((1,), ())),
}
del P
