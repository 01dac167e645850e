"""The primitives of the tape: each one's forward function and, beside it, its VJP rules.

A rule for input i is `rule(g, ans, *inputs, **params) -> cotangent of input i`, where `g` is
the cotangent of the output `ans`. Rules may return a cotangent of the broadcast shape: the
backward pass sums it back to the input's shape once, centrally (`unbroadcast`). `-` and `/`
keep rules of their own (their compositions round differently from jax's); everything that is
not here (mean of squares, softmax cross-entropy, ...) is a composition in user code.

`Primitive.reads` says, per rule, which values it reads: input positions and/or `"ans"`. The
tape keeps only those (for the inputs that are Tensors); a rule is then called with `None`
for an `ans` it does not read and with a `Shape` (`.shape`, `.ndim`, `.dtype`, no values) for
an input it does not read. `reads=None` (the default) keeps everything.

Rules compute with `rule_ops` (tape primitives, the jax.numpy functions at first order), never
with jax.numpy on their arguments: under a nested `fdl.autodiff.grad` the arguments are
Tensors of the outer tape, which records the rule's arithmetic, so rules nest to any order.
Masks and shares (relu's `x > 0`, max's ties) come from `strip(x)`: constants, derivative 0,
as PyTorch's double backward treats them. The primitives below the table's first-order ones
(`broadcast_to`, `scatter_add`, `index_get`) exist for the rules: each is the transpose of
another, so their rules close the set.

Low precision: a count (the N of a mean or a variance) is applied in float32 to float16 and
bfloat16 cotangents and the result cast back, as `jnp.mean` / `jnp.var` compute, so that
N > 65,504 does not overflow float16 (and so both autodiffs agree).
"""
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from funcdl.autodiff import kinks
from funcdl.autodiff.slice_pads import slice_pads
from funcdl.autodiff import rule_ops as r
from funcdl.autodiff.rule_ops import strip, unbroadcast  # noqa: F401 -- the backward pass's

ANS = "ans"


class Primitive(NamedTuple):
    forward: Callable  # (*inputs, **params) -> ans
    vjps: tuple  # one rule per positional input (None: not differentiable)
    variadic: bool = False  # True: vjps[0] is `rule(i, g, ans, *inputs, **params)`
    reads: Optional[tuple] = None  # per rule, the input positions / "ans" it reads; None: all


class Shape(NamedTuple):
    """What the tape keeps of an input that no rule reads: its shape and dtype."""
    shape: tuple
    dtype: object

    @property
    def ndim(self):
        return len(self.shape)


def same_cotangent(g, ans, *inputs, **params):
    """The rule of an input whose cotangent is the output's (`x` in `x + y`, `x - y`): the
    backward pass recognises it and passes `g` on without a call."""
    return g


def _axes(x, axis):
    """`axis` (None, int, tuple or list) as a tuple of non-negative axes of x."""
    ndim = jnp.ndim(x)
    if axis is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in (tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)))


def _expand(g, x, axis, keepdims):
    """Broadcast a reduction's cotangent back to the shape of its input x."""
    if not keepdims:
        g = r.expand_dims(g, _axes(x, axis))
    return r.broadcast_to(g, jnp.shape(x))


def _kept(ans, x, axis, keepdims):
    """A reduction's result with the reduced axes kept (size 1), for broadcasting against x."""
    return ans if keepdims else r.expand_dims(ans, _axes(x, axis))


def _size(x, axis):
    return int(np.prod([jnp.shape(x)[a] for a in _axes(x, axis)], dtype=np.int64))


_LOW_PRECISION = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def _divide_by_count(g, n):
    """g / n, with n applied in float32 to a float16 / bfloat16 g (as jnp.mean divides)."""
    dtype = r.dtype(g)
    if dtype in _LOW_PRECISION:
        return r.astype(r.astype(g, jnp.float32) / np.float32(n), dtype)
    return g / n


def _mean_vjp(g, ans, x, axis=None, keepdims=False):
    return _expand(_divide_by_count(g, _size(x, axis)), x, axis, keepdims)


def _var_vjp(g, ans, x, axis=None, ddof=0, keepdims=False):
    """d var / dx = 2 (x - mean x) / (N - ddof), computed in float32 for low precision."""
    dtype = r.dtype(x)
    compute = jnp.float32 if dtype in _LOW_PRECISION else dtype
    xc = r.astype(x, compute)
    centered = xc - r.mean(xc, axis=_axes(x, axis), keepdims=True)
    scale = _expand(r.astype(g, compute), x, axis, keepdims) * (2 / (_size(x, axis) - ddof))
    return r.astype(scale * centered, dtype)


def _power_vjp_base(g, ans, x, y):
    """PyTorch's pow_backward_self: y x^(y-1), and 0 where y == 0 (also at x = 0)."""
    if isinstance(y, (int, float)):
        return r.zeros(r.shape(g), r.dtype(g)) if y == 0 else g * (y * r.power(x, y - 1))
    return g * r.where(jnp.equal(strip(y), 0), 0, y * r.power(x, y - 1))


def _power_vjp_exponent(g, ans, x, y):
    """PyTorch's pow_backward_exponent: x^y log x, and 0 where x == 0 and y >= 0."""
    x_value = strip(x)
    return g * r.where(jnp.equal(x_value, 0) & (strip(y) >= 0), 0, ans * r.log(x))


def _chooser_vjp(g, ans, x, axis=None, keepdims=False):
    """max / min: k tied winners get 1/k of the gradient each (torch.amax, jnp.max); a slice
    holding NaN gets NaN (as PyTorch and eager jax.grad)."""
    return _expand(g, x, axis, keepdims) * kinks.chooser_share(strip(x), strip(ans), axis, keepdims)


def _matmul_operands(g, ans, a, b):
    """a, b as (..., m, k) @ (..., k, n) and g as (..., m, n): 1-D operands made 2-D."""
    a2 = r.expand_dims(a, 0) if jnp.ndim(a) == 1 else a
    b2 = r.expand_dims(b, 1) if jnp.ndim(b) == 1 else b
    batch = jnp.broadcast_shapes(jnp.shape(a2)[:-2], jnp.shape(b2)[:-2])
    g_shape = batch + (jnp.shape(a2)[-2], jnp.shape(b2)[-1])
    g2 = g if r.shape(g) == g_shape else r.reshape(g, g_shape)
    return g2, a2, b2


def _matmul_vjp_a(g, ans, a, b):
    g2, a2, b2 = _matmul_operands(g, ans, a, b)
    ga = r.matmul(g2, r.swapaxes(b2, -1, -2))
    return r.getitem(ga, (Ellipsis, 0, slice(None))) if jnp.ndim(a) == 1 else ga


def _matmul_vjp_b(g, ans, a, b):
    if jnp.ndim(b) == 2 and jnp.ndim(a) > 2:
        # one weight for every batch entry (a Linear on (N, L, in)): one matmul over the
        # flattened batch, not a batched one whose (N, in, out) result is summed afterwards
        a_rows = r.reshape(a, (-1, jnp.shape(a)[-1]))
        return r.matmul(r.swapaxes(a_rows, 0, 1), r.reshape(g, (-1, jnp.shape(b)[-1])))
    g2, a2, b2 = _matmul_operands(g, ans, a, b)
    gb = r.matmul(r.swapaxes(a2, -1, -2), g2)
    return r.getitem(gb, (Ellipsis, 0)) if jnp.ndim(b) == 1 else gb


def _concatenate_vjp(i, g, ans, *xs, axis=0):
    axis = axis % jnp.ndim(g)
    start = sum(jnp.shape(x)[axis] for x in xs[:i])
    return r.getitem(g, (slice(None),) * axis + (slice(start, start + jnp.shape(xs[i])[axis]),))


def _stack_vjp(i, g, ans, *xs, axis=0):
    return r.getitem(g, (slice(None),) * (axis % jnp.ndim(g)) + (i,))


def _is_basic_index(index):
    """True for an index of ints, 0-d integer arrays, slices, None and ...: jax reads it with a
    (clamping) dynamic slice, so its gradient goes to the clamped position too; an array index
    is a gather, whose out-of-bounds gradient jax drops."""
    return all(i is None or i is Ellipsis or isinstance(i, (int, slice, np.integer))
               or (hasattr(i, "ndim") and i.ndim == 0)
               for i in (index if isinstance(index, tuple) else (index,)))


def _getitem_vjp(g, ans, x, index):
    return r.scatter_add(g, tuple(jnp.shape(x)), index, _is_basic_index(index))


def _scatter_add(g, *, shape, index, clip):
    """zeros(shape) with g added at `index`: getitem's transpose (a basic index clamps, as
    the read does; an array index drops positions out of range, as jax's gather gradient).
    A static index of ints and slices is a `lax.pad` of g (as jax transposes a slice), which
    XLA runs far faster than a scatter; a full slice is g itself."""
    g = jnp.asarray(g)
    pads = slice_pads(tuple(shape), index) if clip else None
    if pads is not None:
        inserted, config = pads
        g = jnp.expand_dims(g, inserted) if inserted else g
        if tuple(g.shape) == tuple((n - lo - hi + interior) // (interior + 1)
                                   for n, (lo, hi, interior) in zip(shape, config)):
            if all(lo == hi == interior == 0 for lo, hi, interior in config):
                return g
            return jax.lax.pad(g, jnp.zeros((), g.dtype), config)
    return jnp.zeros(shape, jnp.result_type(g)).at[index].add(g, mode="clip" if clip else None)


def _index_get(x, *, index, clip):
    """x[index], reading 0 at array indices out of range: scatter_add's transpose."""
    return x[index] if clip else x.at[index].get(mode="fill", fill_value=0)


def _log_softmax(x, axis=-1):
    return jax.nn.log_softmax(x, axis=axis)


def _sum_g_ans(g, ans, axis):
    return r.sum(g * ans, axis=axis, keepdims=True)


def _reshape(x, shape):
    return jnp.reshape(jnp.asarray(x), shape)


def _like_input(g, ans, x, **params):
    """The cotangent of a pure reshaping op (expand_dims, squeeze, reshape): g in x's shape."""
    return r.reshape(g, jnp.shape(x))


def _pick(wins, ties, g):
    """maximum / minimum: g where this operand wins, g / 2 at ties, else 0 (PyTorch)."""
    return r.where(wins, g, r.where(ties, g * 0.5, 0))


def _clip_masks(x, lo, hi):
    return kinks.clip_masks(strip(x), strip(lo), strip(hi))


def _transpose_back(g, x, axes):
    if axes is None:
        return r.transpose(g, tuple(reversed(range(jnp.ndim(x)))))
    return r.transpose(g, tuple(int(i) for i in np.argsort(_axes(x, tuple(axes)))))


P = Primitive
X, Y, XY = (0,), (1,), (0, 1)
NOTHING, ANS_ONLY = (), (ANS,)
PRIMITIVES = {
    # ---- arithmetic ------------------------------------------------------------------------
    "add":      P(jnp.add,      (same_cotangent, same_cotangent), reads=(NOTHING, NOTHING)),
    "subtract": P(jnp.subtract, (same_cotangent, lambda g, ans, x, y: -g), reads=(NOTHING, NOTHING)),
    "multiply": P(jnp.multiply, (lambda g, ans, x, y: g * y, lambda g, ans, x, y: g * x), reads=(Y, X)),
    "divide":   P(jnp.divide,   (lambda g, ans, x, y: g / y, lambda g, ans, x, y: -g * ans / y),
                  reads=(Y, (ANS, 1))),
    "negative": P(jnp.negative, (lambda g, ans, x: -g,), reads=(NOTHING,)),
    "power":    P(kinks.power,  (_power_vjp_base, _power_vjp_exponent), reads=(XY, (0, 1, ANS))),
    "matmul":   P(jnp.matmul,   (_matmul_vjp_a, _matmul_vjp_b)),
    # ---- elementwise -------------------------------------------------------------------------
    "exp":      P(jnp.exp,          (lambda g, ans, x: g * ans,), reads=(ANS_ONLY,)),
    "log":      P(jnp.log,          (lambda g, ans, x: g / x,), reads=(X,)),
    "log1p":    P(jnp.log1p,        (lambda g, ans, x: g / (1 + x),), reads=(X,)),
    "expm1":    P(jnp.expm1,        (lambda g, ans, x: g * (ans + 1),), reads=(ANS_ONLY,)),
    "sin":      P(jnp.sin,          (lambda g, ans, x: g * r.cos(x),), reads=(X,)),
    "cos":      P(jnp.cos,          (lambda g, ans, x: -g * r.sin(x),), reads=(X,)),
    "sqrt":     P(jnp.sqrt,         (lambda g, ans, x: g / (2 * ans),), reads=(ANS_ONLY,)),
    "square":   P(jnp.square,       (lambda g, ans, x: g * 2 * x,), reads=(X,)),
    "abs":      P(kinks.abs,        (lambda g, ans, x: g * jnp.sign(strip(x)),), reads=(X,)),
    "tanh":     P(jnp.tanh,         (lambda g, ans, x: g * (1 - ans * ans),), reads=(ANS_ONLY,)),
    "sigmoid":  P(jax.nn.sigmoid,   (lambda g, ans, x: g * ans * (1 - ans),), reads=(ANS_ONLY,)),
    "softplus": P(jax.nn.softplus,  (lambda g, ans, x: g * r.sigmoid(x),), reads=(X,)),
    "relu":     P(kinks.relu,       (lambda g, ans, x: r.where(strip(x) > 0, g, 0),), reads=(X,)),
    "leaky_relu": P(kinks.leaky_relu,
                    (lambda g, ans, x, negative_slope=0.01: r.where(strip(x) > 0, g, g * negative_slope),),
                    reads=(X,)),
    "maximum":  P(jnp.maximum, (lambda g, ans, x, y: _pick(strip(x) > strip(y), strip(x) == strip(y), g),
                                lambda g, ans, x, y: _pick(strip(y) > strip(x), strip(x) == strip(y), g)),
                  reads=(XY, XY)),
    "minimum":  P(jnp.minimum, (lambda g, ans, x, y: _pick(strip(x) < strip(y), strip(x) == strip(y), g),
                                lambda g, ans, x, y: _pick(strip(y) < strip(x), strip(x) == strip(y), g)),
                  reads=(XY, XY)),
    "where":    P(jnp.where,   (None,
                                lambda g, ans, c, a, b: r.where(c, g, 0),
                                lambda g, ans, c, a, b: r.where(c, 0, g)),
                  reads=(NOTHING, (0,), (0,))),
    "clip":     P(kinks.clip,  (lambda g, ans, x, lo, hi: r.where(_clip_masks(x, lo, hi)[0], g, 0),
                                lambda g, ans, x, lo, hi: r.where(_clip_masks(x, lo, hi)[1], g, 0),
                                lambda g, ans, x, lo, hi: r.where(_clip_masks(x, lo, hi)[2], g, 0))),
    "binary_cross_entropy": P(kinks.binary_cross_entropy, (
        lambda g, ans, p, y: g * (p - y) / r.maximum(p * (1 - p), kinks.BCE_GRAD_EPS),
        lambda g, ans, p, y: g * (r.log1p(-p) - r.log(p))), reads=(XY, X)),
    # ---- reductions --------------------------------------------------------------------------
    "sum":  P(jnp.sum,  (lambda g, ans, x, axis=None, keepdims=False: _expand(g, x, axis, keepdims),),
              reads=(NOTHING,)),
    "mean": P(jnp.mean, (_mean_vjp,), reads=(NOTHING,)),
    "var":  P(lambda x, axis=None, ddof=0, keepdims=False: jnp.var(x, axis=axis, ddof=ddof, keepdims=keepdims),
              (_var_vjp,), reads=(X,)),
    "max":  P(lambda x, axis=None, keepdims=False: kinks.max(x, axis, keepdims), (_chooser_vjp,),
              reads=((0, ANS),)),
    "min":  P(lambda x, axis=None, keepdims=False: kinks.min(x, axis, keepdims), (_chooser_vjp,),
              reads=((0, ANS),)),
    "logsumexp": P(lambda x, axis=None, keepdims=False: jax.nn.logsumexp(x, axis=axis, keepdims=keepdims),
                   (lambda g, ans, x, axis=None, keepdims=False:
                    _expand(g, x, axis, keepdims) * r.exp(x - _kept(ans, x, axis, keepdims)),),
                   reads=((0, ANS),)),
    "softmax": P(lambda x, axis=-1: jax.nn.softmax(x, axis=axis),
                 (lambda g, ans, x, axis=-1: ans * (g - _sum_g_ans(g, ans, axis)),), reads=(ANS_ONLY,)),
    "log_softmax": P(_log_softmax,
                     (lambda g, ans, x, axis=-1: g - r.exp(ans) * r.sum(g, axis=axis, keepdims=True),),
                     reads=(ANS_ONLY,)),
    # ---- shape -------------------------------------------------------------------------------
    "reshape":   P(_reshape, (_like_input,), reads=(NOTHING,)),
    "expand_dims": P(lambda x, axis: jnp.expand_dims(x, axis), (_like_input,), reads=(NOTHING,)),
    "squeeze":   P(lambda x, axis=None: jnp.squeeze(x, axis), (_like_input,), reads=(NOTHING,)),
    "astype":    P(lambda x, dtype: jnp.asarray(x).astype(dtype),
                   (lambda g, ans, x, dtype: r.astype(g, x.dtype),), reads=(NOTHING,)),
    "transpose": P(lambda x, axes=None: jnp.transpose(x, axes),
                   (lambda g, ans, x, axes=None:
                    _transpose_back(g, x, axes),),
                   reads=(NOTHING,)),
    "getitem":   P(lambda x, index: x[index], (_getitem_vjp,), reads=(NOTHING,)),
    "concatenate": P(lambda *xs, axis=0: jnp.concatenate(xs, axis=axis), (_concatenate_vjp,), variadic=True,
                     reads=(NOTHING,)),
    "stack":     P(lambda *xs, axis=0: jnp.stack(xs, axis=axis), (_stack_vjp,), variadic=True, reads=(NOTHING,)),
    # ---- for the rules: each the transpose of another (the central unbroadcast sums g back)
    "broadcast_to": P(lambda x, shape: jnp.broadcast_to(x, shape), (same_cotangent,), reads=(NOTHING,)),
    "scatter_add": P(_scatter_add, (lambda g, ans, x, shape, index, clip: r.index_get(g, index, clip),),
                     reads=(NOTHING,)),
    "index_get": P(_index_get, (lambda g, ans, x, index, clip: r.scatter_add(g, tuple(x.shape), index, clip),),
                   reads=(NOTHING,)),
}
del P
