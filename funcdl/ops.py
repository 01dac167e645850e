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
import jax
import jax.numpy as jnp

from funcdl.autodiff import Tensor, apply

__all__ = ["exp", "log", "sqrt", "square", "abs", "tanh", "sigmoid", "relu", "leaky_relu",
           "softplus", "maximum", "minimum", "where", "clip", "sum", "mean", "max", "logsumexp",
           "softmax", "log_softmax", "matmul", "transpose", "reshape", "concatenate", "one_hot",
           "binary_cross_entropy"]


# ---- elementwise: x of any shape -> the same shape -------------------------------------------
def exp(x):
    """e^x."""
    return apply("exp", x)


def log(x):
    """Natural logarithm; -inf at 0, nan below."""
    return apply("log", x)


def sqrt(x):
    """√x; its derivative at 0 is inf (as PyTorch)."""
    return apply("sqrt", x)


def square(x):
    """x²."""
    return apply("square", x)


def abs(x):
    """|x|; derivative sign(x), 0 at x = 0 (as PyTorch)."""
    return apply("abs", x)


def tanh(x):
    """tanh x; derivative 1 - tanh² x."""
    return apply("tanh", x)


def sigmoid(x):
    """σ(x) = 1 / (1 + e^-x); derivative σ(x)(1 - σ(x))."""
    return apply("sigmoid", x)


def relu(x):
    """max(x, 0); derivative 0 at x = 0 (as PyTorch)."""
    return apply("relu", x)


def leaky_relu(x, negative_slope=0.01):
    """x if x > 0 else negative_slope · x; derivative `negative_slope` at 0 (as PyTorch)."""
    return apply("leaky_relu", x, negative_slope=negative_slope)


def softplus(x):
    """log(1 + e^x), computed stably; derivative σ(x)."""
    return apply("softplus", x)


def binary_cross_entropy(probs, target):
    """-(y log p + (1 - y) log(1 - p)) elementwise (no reduction), both logs clamped at -100.

    probs, target: broadcastable float arrays. d/dp is PyTorch's (p - y) / max(p(1 - p), 1e-12),
    finite at p = 0 and 1. PyTorch: torch.nn.functional.binary_cross_entropy(reduction="none").
    """
    return apply("binary_cross_entropy", probs, target)


# ---- binary elementwise: operands broadcast together ------------------------------------------
def maximum(x, y):
    """Elementwise max; at ties each side gets half the gradient (as PyTorch)."""
    return apply("maximum", x, y)


def minimum(x, y):
    """Elementwise min; at ties each side gets half the gradient (as PyTorch)."""
    return apply("minimum", x, y)


def where(cond, a, b):
    """a where `cond` else b. cond: a boolean array (e.g. `x > 0`), never differentiated."""
    if isinstance(cond, Tensor):
        raise TypeError("`cond` must be a boolean array, got a Tensor (compare it: `x > 0`)")
    return apply("where", cond, a, b)


def clip(x, lo, hi):
    """min(max(x, lo), hi); the gradient passes to x on [lo, hi], bounds included (as PyTorch)."""
    return apply("clip", x, lo, hi)


# ---- reductions: axis None (all), an int or a tuple of ints ------------------------------------
def sum(x, axis=None, keepdims=False):
    """Σ x over `axis`."""
    return apply("sum", x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    """Mean of x over `axis`."""
    return apply("mean", x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):
    """Max of x over `axis`; k tied maxima get 1/k of the gradient each (as torch.amax)."""
    return apply("max", x, axis=axis, keepdims=keepdims)


def logsumexp(x, axis=None, keepdims=False):
    """log Σ exp(x) over `axis`, computed stably; derivative softmax(x)."""
    return apply("logsumexp", x, axis=axis, keepdims=keepdims)


def softmax(x, axis=-1):
    """exp(x) / Σ exp(x) along `axis`; same shape as x."""
    return apply("softmax", x, axis=axis)


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along `axis`, computed stably; same shape as x."""
    return apply("log_softmax", x, axis=axis)


# ---- linear algebra and shapes ------------------------------------------------------------------
def matmul(a, b):
    """a @ b with NumPy's rules: (..., m, k) @ (..., k, n) -> (..., m, n); 1-D operands allowed."""
    return apply("matmul", a, b)


def transpose(x, axes=None):
    """Permute the axes of x (reverse them when `axes` is None)."""
    return apply("transpose", x, axes=None if axes is None else tuple(axes))


def reshape(x, shape):
    """x with a new shape of the same size (one entry may be -1)."""
    return apply("reshape", x, shape=tuple(shape) if isinstance(shape, (list, tuple)) else (shape,))


def concatenate(xs, axis=0):
    """Join a sequence of arrays along an existing axis."""
    if not isinstance(xs, (list, tuple)) or not xs:
        raise TypeError(f"`xs` must be a non-empty list or tuple of arrays, got {type(xs).__name__}")
    return apply("concatenate", *xs, axis=axis)


def one_hot(labels, num_classes, dtype=jnp.float32):
    """labels `(...)` of integers -> `(..., num_classes)` of 0/1; out-of-range labels give zeros.

    Not differentiable (labels are integers); `dtype` sets the result's float dtype.
    """
    if isinstance(labels, Tensor) or not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise TypeError(f"`labels` must be an integer array, got {type(labels).__name__} of "
                        f"dtype {getattr(labels, 'dtype', None)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"`num_classes` must be an int, got {type(num_classes).__name__}")
    if num_classes < 1:
        raise ValueError(f"`num_classes` must be >= 1, got {num_classes}")
    return jax.nn.one_hot(labels, num_classes, dtype=dtype)



# ---- layer ops (convolution, pooling, erf/gelu/silu, take): funcdl/ops_layers.py ------------
from funcdl.ops_layers import avg_pool2d, conv1d, conv2d, erf, gelu, max_pool2d, silu, take  # noqa: E402
__all__ += ["conv1d", "conv2d", "max_pool2d", "avg_pool2d", "erf", "gelu", "silu", "take"]
