"""The operations the VJP rules compute with: tape primitives, so that rules nest.

A rule such as exp's `g * ans` is arithmetic on its arguments. At first order they are arrays
(or jax tracers under `jax.jit`) and every function here is the jax.numpy function, through
`apply` of the table's primitive (the same jax operations, so the compiled first-order program
is unchanged). Under a nested `fdl.autodiff.grad` the arguments are Tensors of the outer
tape, and `apply` records each operation there: the backward pass of the inner tape is itself
differentiable by the outer one. No rule calls `jax.vjp`, `jax.grad` or `jax.jvp`.

The tape (`tensor.py`) installs its `apply` and `Tensor` here when it is imported
(`install`): this module sits below the tape and the table in the imports, which keeps the
house free of circles. Masks, signs and shares that a rule reads off its inputs are piecewise
constant: rules take them from `strip(x)`, the plain array under every level (derivative 0).
"""
import jax.numpy as jnp

_apply = None
_tensor_type = type(None)  # no Tensor class until the tape installs it


def install(apply, tensor_type):
    """Called once by `tensor.py`: the tape's `apply` and its `Tensor` class."""
    global _apply, _tensor_type
    _apply, _tensor_type = apply, tensor_type


def primitive(name, *args, **params):
    """The table's primitive `name` applied through the tape (`apply`)."""
    return _apply(name, *args, **params)


def is_tensor(x):
    return isinstance(x, _tensor_type)


def strip(x):
    """The plain array under every level of Tensor `x` (`x` itself for anything else)."""
    while isinstance(x, _tensor_type):
        x = x._value
    return x


def shape(x):
    try:
        return x.shape
    except AttributeError:  # a Python scalar
        return jnp.shape(x)


def dtype(x):
    try:
        return x.dtype
    except AttributeError:
        return jnp.result_type(x)


# ---- elementwise ---------------------------------------------------------------------------
def exp(x): return _apply("exp", x)
def log(x): return _apply("log", x)
def log1p(x): return _apply("log1p", x)
def sin(x): return _apply("sin", x)
def cos(x): return _apply("cos", x)
def tanh(x): return _apply("tanh", x)
def sigmoid(x): return _apply("sigmoid", x)
def erf(x): return _apply("erf", x)
def power(x, y): return _apply("power", x, y)
def maximum(x, y): return _apply("maximum", x, y)


def where(condition, a, b):
    """`jnp.where(condition, a, b)`; `condition` a plain boolean array (a mask)."""
    return _apply("where", condition, a, b)


def astype(x, to):
    """x cast to dtype `to` (x itself when it has that dtype already)."""
    return x if dtype(x) == to else _apply("astype", x, dtype=to)


# ---- reductions and shapes -----------------------------------------------------------------
def sum(x, axis=None, keepdims=False): return _apply("sum", x, axis=axis, keepdims=keepdims)  # noqa: A001
def mean(x, axis=None, keepdims=False): return _apply("mean", x, axis=axis, keepdims=keepdims)
def expand_dims(x, axis): return _apply("expand_dims", x, axis=axis)
def reshape(x, new_shape): return _apply("reshape", x, shape=tuple(new_shape))
def transpose(x, axes): return _apply("transpose", x, axes=tuple(axes))
def matmul(a, b): return _apply("matmul", a, b)
def getitem(x, index): return _apply("getitem", x, index=index)
def stack(xs, axis=0): return _apply("stack", *xs, axis=axis)


def scatter_add(g, new_shape, index, clip):
    """zeros(new_shape) with g added at `index` (getitem's transpose)."""
    return _apply("scatter_add", g, shape=tuple(new_shape), index=index, clip=clip)


def index_get(x, index, clip):
    """x[index] (scatter_add's transpose)."""
    return _apply("index_get", x, index=index, clip=clip)


def broadcast_to(x, new_shape):
    new_shape = tuple(new_shape)
    return x if shape(x) == new_shape else _apply("broadcast_to", x, shape=new_shape)


def swapaxes(x, a, b):
    """x with axes a and b exchanged (a transpose)."""
    axes = list(range(len(shape(x))))
    axes[a], axes[b] = axes[b], axes[a]
    return transpose(x, axes)


def zeros(new_shape, to):
    """A constant array of zeros."""
    return jnp.zeros(new_shape, to)


def unbroadcast(g, to_shape):
    """Sum `g` over the axes that broadcasting added to an operand of shape `to_shape`."""
    g_shape = shape(g)
    if g_shape == to_shape:
        return g
    if not is_tensor(g):
        g = jnp.asarray(g)
    if len(g_shape) < len(to_shape):
        return broadcast_to(g, to_shape)
    if len(g_shape) > len(to_shape):
        g = sum(g, axis=tuple(range(len(g_shape) - len(to_shape))))
        g_shape = shape(g)
    stretched = tuple(i for i, n in enumerate(to_shape) if n == 1 and g_shape[i] != 1)
    if stretched:
        g = sum(g, axis=stretched, keepdims=True)
    return g
