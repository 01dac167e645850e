"""One op namespace for both autodiffs.

Each op takes jax/NumPy arrays (and computes with `jax.numpy`, so `jax.grad` differentiates it,
with PyTorch's derivatives at kinks) or `fdl.autodiff.Tensor`s (and records itself on the tape,
so `fdl.autodiff.grad` differentiates it). Shapes follow jax.numpy's broadcasting rules.

    >>> import jax, jax.numpy as jnp, funcdl as fdl
    >>> f = lambda x: fdl.ops.sum(fdl.ops.abs(x) * 2.0)
    >>> x = jnp.array([-1.0, 0.0, 3.0])
    >>> jax.grad(f)(x), fdl.autodiff.grad(f)(x)
    (Array([-2.,  0.,  2.], dtype=float32), Array([-2.,  0.,  2.], dtype=float32))
"""
import operator
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from funcdl.annotations import Axis, Operand, Result
from funcdl.autodiff import Tensor, apply
from funcdl.autodiff.kinks import as_float_constant

__all__ = ["exp", "log", "log1p", "expm1", "sqrt", "square", "abs", "sin", "cos", "tanh", "sigmoid",
           "relu", "leaky_relu", "softplus", "power", "maximum", "minimum", "where", "clip", "sum",
           "mean", "var", "max", "min", "logsumexp", "softmax", "log_softmax", "argmax", "argmin",
           "matmul", "transpose", "reshape", "expand_dims", "squeeze", "concatenate", "stack",
           "astype", "stop_gradient", "one_hot", "binary_cross_entropy"]


def _raw(x):
    """The plain array under every level of a (nested) Tensor; x itself otherwise."""
    while isinstance(x, Tensor):
        x = x.value
    return x


def _is_concrete(x):
    return not isinstance(x, jax.core.Tracer)


def _axis(axis, name="axis"):
    """None, an int or a tuple of ints (a list or NumPy integers accepted)."""
    if axis is None:
        return None
    try:
        if isinstance(axis, (list, tuple)):
            return tuple(operator.index(a) for a in axis)
        return operator.index(axis)
    except TypeError:
        raise TypeError(f"`{name}` must be None, an int or a tuple of ints, got {axis!r}") from None


def _constant(value, x):
    """An integer constant operand (bound, target) as a float constant of x's dtype."""
    return value if isinstance(value, Tensor) else as_float_constant(value, _raw(x))


# ---- elementwise: x of any shape -> the same shape -------------------------------------------
def exp(x: Operand) -> Result:
    """e^x."""
    return apply("exp", x)


def log(x: Operand) -> Result:
    """Natural logarithm; -inf at 0, nan below."""
    return apply("log", x)


def log1p(x: Operand) -> Result:
    """log(1 + x), accurate for small x; derivative 1 / (1 + x)."""
    return apply("log1p", x)


def expm1(x: Operand) -> Result:
    """e^x - 1, accurate for small x; derivative e^x."""
    return apply("expm1", x)


def sin(x: Operand) -> Result:
    """sin x; derivative cos x."""
    return apply("sin", x)


def cos(x: Operand) -> Result:
    """cos x; derivative -sin x."""
    return apply("cos", x)


def sqrt(x: Operand) -> Result:
    """√x; its derivative at 0 is inf (as PyTorch)."""
    return apply("sqrt", x)


def square(x: Operand) -> Result:
    """x²."""
    return apply("square", x)


def abs(x: Operand) -> Result:
    """|x|; derivative sign(x), 0 at x = 0 (as PyTorch)."""
    return apply("abs", x)


def tanh(x: Operand) -> Result:
    """tanh x; derivative 1 - tanh² x."""
    return apply("tanh", x)


def sigmoid(x: Operand) -> Result:
    """σ(x) = 1 / (1 + e^-x); derivative σ(x)(1 - σ(x))."""
    return apply("sigmoid", x)


def relu(x: Operand) -> Result:
    """max(x, 0); derivative 0 at x = 0 (as PyTorch)."""
    return apply("relu", x)


def leaky_relu(x: Operand, negative_slope: float = 0.01) -> Result:
    """x if x > 0 else negative_slope · x; derivative `negative_slope` at 0 (as PyTorch).

    negative_slope: a Python (or NumPy scalar) number, a constant: not differentiated.
    """
    if isinstance(negative_slope, (bool, np.bool_)) or not isinstance(
            negative_slope, (int, float, np.integer, np.floating)):
        raise TypeError("`negative_slope` must be a float (a constant), got "
                        f"{type(negative_slope).__name__}")
    return apply("leaky_relu", x, negative_slope=float(negative_slope))


def softplus(x: Operand) -> Result:
    """log(1 + e^x), computed stably; derivative σ(x)."""
    return apply("softplus", x)


def binary_cross_entropy(probs: Operand, target: Operand) -> Result:
    """-(y log p + (1 - y) log(1 - p)) elementwise (no reduction), both logs clamped at -100.

    probs, target: broadcastable float arrays. d/dp is PyTorch's (p - y) / max(p(1 - p), 1e-12),
    finite at p = 0 and 1. PyTorch: torch.nn.functional.binary_cross_entropy(reduction="none").
    Integer targets are constants. Concrete probs or targets outside [0, 1] (or NaN) raise
    ValueError, as in PyTorch; traced ones (under jit, vmap, jax.grad) cannot be checked.
    """
    target = _constant(target, probs)
    for name, value in (("probs", probs), ("target", target)):
        value = _raw(value)
        if _is_concrete(value):
            values = np.asarray(value)
            if not np.all((values >= 0) & (values <= 1)):
                raise ValueError(f"`{name}` must lie in [0, 1] (as PyTorch requires), got values "
                                 f"from {values.min()} to {values.max()}")
    return apply("binary_cross_entropy", probs, target)


def power(x: Operand, y: Operand) -> Result:
    """x ** y, as the `**` operator on Tensors, with PyTorch's derivatives: d/dx is 0 where
    y == 0 (so d(x ** 0.0)/dx = 0 at x = 0) and d/dy is 0 where x == 0 and y >= 0 (so
    d(x ** x)/dx = 0 at 0). Use it on the jax path: `**` on jax arrays is jax's own power,
    whose derivatives there are NaN. An integer array operand is a constant (cast to the
    other's float dtype); a Python int exponent stays an integer power."""
    if hasattr(x, "dtype") and not isinstance(x, Tensor):
        x = as_float_constant(x, _raw(y))
    if hasattr(y, "dtype") and not isinstance(y, Tensor):
        y = as_float_constant(y, _raw(x))
    return apply("power", x, y)


# ---- binary elementwise: operands broadcast together ------------------------------------------
def maximum(x: Operand, y: Operand) -> Result:
    """Elementwise max; at ties each side gets half the gradient (as PyTorch)."""
    return apply("maximum", x, y)


def minimum(x: Operand, y: Operand) -> Result:
    """Elementwise min; at ties each side gets half the gradient (as PyTorch)."""
    return apply("minimum", x, y)


def where(cond: Operand, a: Operand, b: Operand) -> Result:
    """a where `cond` else b. cond: a boolean array (e.g. `x > 0`), never differentiated."""
    if isinstance(cond, Tensor):
        raise TypeError("`cond` must be a boolean array, got a Tensor (compare it: `x > 0`)")
    return apply("where", cond, a, b)


def clip(x: Operand, lo: Operand, hi: Operand) -> Result:
    """min(max(x, lo), hi); the gradient passes to x on [lo, hi], bounds included (as PyTorch).

    lo, hi: arrays or numbers; None for a missing bound; integer bounds are constants.
    """
    if lo is None and hi is None:
        raise ValueError("`clip`: at least one of `lo` and `hi` must be given, got None for both")
    lo = -float("inf") if lo is None else _constant(lo, x)
    hi = float("inf") if hi is None else _constant(hi, x)
    return apply("clip", x, lo, hi)


# ---- reductions: axis None (all), an int or a tuple of ints ------------------------------------
def sum(x: Operand, axis: Axis = None, keepdims: bool = False) -> Result:
    """Σ x over `axis`."""
    return apply("sum", x, axis=_axis(axis), keepdims=keepdims)


def mean(x: Operand, axis: Axis = None, keepdims: bool = False) -> Result:
    """Mean of x over `axis`; in float16/bfloat16 computed (and differentiated) as jnp.mean
    does, with the count in float32."""
    return apply("mean", x, axis=_axis(axis), keepdims=keepdims)


def var(x: Operand, axis: Axis = None, ddof: int = 0, keepdims: bool = False) -> Result:
    """Σ (x - mean x)² / (N - ddof) over `axis` (ddof=0: biased, jnp.var's default; PyTorch's
    torch.var(correction=ddof)); derivative 2 (x - mean x) / (N - ddof)."""
    if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)):
        raise TypeError(f"`ddof` must be an int, got {type(ddof).__name__}")
    return apply("var", x, axis=_axis(axis), ddof=int(ddof), keepdims=keepdims)


def max(x: Operand, axis: Axis = None, keepdims: bool = False) -> Result:
    """Max of x over `axis`; k tied maxima get 1/k of the gradient each (as torch.amax); NaN
    in a slice gives NaN and a NaN gradient for that slice (as jax.grad and PyTorch)."""
    return apply("max", x, axis=_axis(axis), keepdims=keepdims)


def min(x: Operand, axis: Axis = None, keepdims: bool = False) -> Result:
    """Min of x over `axis`; k tied minima get 1/k of the gradient each (as torch.amin)."""
    return apply("min", x, axis=_axis(axis), keepdims=keepdims)


def argmax(x: Operand, axis: int | None = None) -> Result:
    """Index of the (first) maximum over `axis` (an int or None: flattened); an integer array,
    no gradient."""
    return jnp.argmax(_raw(x), axis=_axis(axis))


def argmin(x: Operand, axis: int | None = None) -> Result:
    """Index of the (first) minimum over `axis` (an int or None: flattened); an integer array,
    no gradient."""
    return jnp.argmin(_raw(x), axis=_axis(axis))


def logsumexp(x: Operand, axis: Axis = None, keepdims: bool = False) -> Result:
    """log Σ exp(x) over `axis`, computed stably; derivative softmax(x)."""
    return apply("logsumexp", x, axis=_axis(axis), keepdims=keepdims)


def softmax(x: Operand, axis: int | tuple[int, ...] = -1) -> Result:
    """exp(x) / Σ exp(x) along `axis`; same shape as x."""
    return apply("softmax", x, axis=_axis(axis))


def log_softmax(x: Operand, axis: int | tuple[int, ...] = -1) -> Result:
    """x - logsumexp(x) along `axis`, computed stably; same shape as x."""
    return apply("log_softmax", x, axis=_axis(axis))


# ---- linear algebra and shapes ------------------------------------------------------------------
def matmul(a: Operand, b: Operand) -> Result:
    """a @ b with NumPy's rules: (..., m, k) @ (..., k, n) -> (..., m, n); 1-D operands allowed."""
    return apply("matmul", a, b)


def transpose(x: Operand, axes: Sequence[int] | None = None) -> Result:
    """Permute the axes of x (reverse them when `axes` is None)."""
    return apply("transpose", x, axes=None if axes is None else _axis(tuple(axes), "axes"))


def reshape(x: Operand, shape: int | Sequence[int]) -> Result:
    """x with a new shape of the same size (one entry may be -1); shape: an int, a sequence of
    ints or a 1-D integer NumPy array."""
    if isinstance(shape, np.ndarray):
        shape = shape.tolist()
    try:
        shape = tuple(operator.index(n) for n in shape) if isinstance(shape, (list, tuple)) else (
            operator.index(shape),)
    except TypeError:
        raise TypeError(f"`shape` must be an int or a sequence of ints, got {shape!r}") from None
    return apply("reshape", x, shape=shape)


def expand_dims(x: Operand, axis: int | tuple[int, ...]) -> Result:
    """x with a new size-1 axis at `axis` (an int or a tuple of ints)."""
    return apply("expand_dims", x, axis=_axis(axis))


def squeeze(x: Operand, axis: Axis = None) -> Result:
    """x without its size-1 axes (all of them, or those in `axis`)."""
    return apply("squeeze", x, axis=_axis(axis))


def astype(x: Operand, dtype: DTypeLike) -> Result:
    """x cast to `dtype`. To a float dtype the gradient is cast back; to an integer or boolean
    dtype the result is a plain array (no gradient), as jax.grad gives none."""
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        return jnp.asarray(_raw(x)).astype(dtype)
    return apply("astype", x, dtype=dtype)


def stop_gradient(x: Operand) -> Result:
    """x as a constant: the same value, no gradient (jax.lax.stop_gradient; a plain array)."""
    return jax.lax.stop_gradient(_raw(x))


def _sequence(xs):
    if not isinstance(xs, (list, tuple)) or not xs:
        raise TypeError(f"`xs` must be a non-empty list or tuple of arrays, got {type(xs).__name__}")
    return xs


def concatenate(xs: Sequence[Operand], axis: int = 0) -> Result:
    """Join a sequence of arrays along an existing axis."""
    return apply("concatenate", *_sequence(xs), axis=_axis(axis))


def stack(xs: Sequence[Operand], axis: int = 0) -> Result:
    """Join a sequence of arrays of one shape along a new axis `axis`."""
    return apply("stack", *_sequence(xs), axis=_axis(axis))


def one_hot(labels: Operand, num_classes: int, dtype: DTypeLike = jnp.float32) -> Result:
    """labels `(...)` of integers -> `(..., num_classes)` of 0/1; out-of-range labels give zeros.

    Not differentiable (labels are integers); `dtype` sets the result's float dtype.
    """
    if isinstance(labels, Tensor) or not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise TypeError(f"`labels` must be an integer array, got {type(labels).__name__} of "
                        f"dtype {getattr(labels, 'dtype', None)}")
    if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"`num_classes` must be an int, got {type(num_classes).__name__}")
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"`num_classes` must be >= 1, got {num_classes}")
    return jax.nn.one_hot(labels, num_classes, dtype=dtype)



# ---- layer ops (convolution, pooling, erf/gelu/silu, take, attention): funcdl/ops_layers.py ------------
from funcdl.ops_layers import (avg_pool2d, conv1d, conv2d, erf, gelu, max_pool2d,  # noqa: E402
                               scaled_dot_product_attention, silu, take)
__all__ += ["conv1d", "conv2d", "max_pool2d", "avg_pool2d", "erf", "gelu", "silu", "take",
            "scaled_dot_product_attention"]
# ---- the array API (rounding, more elementwise, std, prod, cumsum, einsum, ...): ops_array.py;
# ---- shape ops (diagonal, triu, repeat, tile, split, pad, roll, flip, sort): ops_shape.py --------
from funcdl.ops_array import (arccos, arcsin, arctan, arctan2, ceil, cosh, cumsum, dot, einsum,  # noqa: E402, F401
                              floor, floor_divide, log2, log10, logaddexp, nan_to_num, outer, prod,
                              remainder, round, sign, sinh, std, tan, tensordot)
from funcdl.ops_shape import (diagonal, flip, pad, repeat, roll, sort, split, swapaxes, tile,  # noqa: E402, F401
                              trace, tril, triu)
from funcdl.ops_scan import scan  # noqa: E402 -- lax.scan's loop, one node of the tape
from funcdl import ops_array as _ops_array, ops_shape as _ops_shape  # noqa: E402
__all__ += _ops_array.__all__ + _ops_shape.__all__ + ["scan"]
