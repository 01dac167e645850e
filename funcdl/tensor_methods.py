"""The array methods of `fdl.autodiff.Tensor`, each the `fdl.ops` function of the same name.

`autodiff` sits below `ops` and never imports it; this module, above both, attaches the methods
to the class once (`funcdl/__init__.py` imports it right after `ops`). So `t.sum()`, `t.T`,
`t ** 2`, `t.std()` record on the tape exactly as `fdl.ops.sum(t)`, `fdl.ops.transpose(t)`,
`fdl.ops.power(t, 2)`, `fdl.ops.std(t)` do, and model code written with methods runs under both
autodiffs (on jax arrays the same code calls jax's methods).

Signatures are `jax.Array`'s, positional order included (`t.sum(axis, dtype, out, keepdims)`),
so NumPy's `np.sum / np.mean / np.max / np.min / np.std / ...` work on a Tensor (NumPy calls
the method with `out=None`). `dtype` casts x first (to an integer dtype: no gradient, as jax);
`out` must be None (arrays are immutable). `item`, `tolist`, `float(t)`, `int(t)`, `format(t,
spec)`, `any`, `all`, `argmax`, `argmin` and `size` read the value: they leave the tape.
"""
import jax.numpy as jnp

from funcdl import ops
from funcdl.autodiff import Tensor


def _no_out(out, method):
    if out is not None:
        raise TypeError(f"Tensor.{method}: `out` must be None (arrays are immutable; use the "
                        f"returned value), got {type(out).__name__}")


def _cast(x, dtype):
    return x if dtype is None else ops.astype(x, dtype)


# ---- reductions: (axis=None, dtype=None, out=None, keepdims=False), as jax.Array ---------------
def _sum(self, axis=None, dtype=None, out=None, keepdims=False):
    _no_out(out, "sum")
    return ops.sum(_cast(self, dtype), axis, keepdims)


def _mean(self, axis=None, dtype=None, out=None, keepdims=False):
    _no_out(out, "mean")
    return ops.mean(_cast(self, dtype), axis, keepdims)


def _prod(self, axis=None, dtype=None, out=None, keepdims=False):
    _no_out(out, "prod")
    return ops.prod(_cast(self, dtype), axis, keepdims)


def _max(self, axis=None, out=None, keepdims=False):
    _no_out(out, "max")
    return ops.max(self, axis, keepdims)


def _min(self, axis=None, out=None, keepdims=False):
    _no_out(out, "min")
    return ops.min(self, axis, keepdims)


def _var(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    _no_out(out, "var")
    return ops.var(_cast(self, dtype), axis, ddof, keepdims)


def _std(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    _no_out(out, "std")
    return ops.std(_cast(self, dtype), axis, ddof, keepdims)


def _cumsum(self, axis=None, dtype=None, out=None):
    _no_out(out, "cumsum")
    return ops.cumsum(_cast(self, dtype), axis)


def _argmax(self, axis=None, out=None, keepdims=False):
    _no_out(out, "argmax")
    return jnp.argmax(self.value, axis=axis, keepdims=keepdims)


def _argmin(self, axis=None, out=None, keepdims=False):
    _no_out(out, "argmin")
    return jnp.argmin(self.value, axis=axis, keepdims=keepdims)


def _any(self, axis=None, out=None, keepdims=False):
    _no_out(out, "any")
    return jnp.any(self.value, axis=axis, keepdims=keepdims)


def _all(self, axis=None, out=None, keepdims=False):
    _no_out(out, "all")
    return jnp.all(self.value, axis=axis, keepdims=keepdims)


# ---- shapes ----------------------------------------------------------------------------------------
def _reshape(self, *shape):
    return ops.reshape(self, shape[0] if len(shape) == 1 else shape)


def _transpose(self, *axes):
    return ops.transpose(self, axes[0] if len(axes) == 1 else (axes or None))


def _flatten(self, order="C"):
    if order != "C":
        raise ValueError(f"Tensor.flatten: only `order='C'` is supported, got {order!r}")
    return ops.reshape(self, -1)


def _squeeze(self, axis=None):
    return ops.squeeze(self, axis)


def _take(self, indices, axis=None, out=None, mode=None):
    """`fdl.ops.take` (axis None: of x flattened); out-of-range indices are an error."""
    _no_out(out, "take")
    if mode not in (None, "raise"):  # NumPy's np.take passes "raise"
        raise ValueError(f"Tensor.take: `mode` must be None or 'raise', got {mode!r}")
    return ops.take(ops.reshape(self, -1), indices, 0) if axis is None else ops.take(self, indices, axis)


def _mT(self):
    if self.ndim < 2:
        raise ValueError(f"Tensor.mT needs at least 2 dimensions, got shape {self.shape}")
    return ops.swapaxes(self, -1, -2)


# ---- elementwise -----------------------------------------------------------------------------------
def _clip(self, min=None, max=None, out=None):  # noqa: A002 -- jax.Array.clip's names
    _no_out(out, "clip")
    return self if min is None and max is None else ops.clip(self, min, max)


def _round(self, decimals=0, out=None):
    _no_out(out, "round")
    return ops.round(self, decimals)


# ---- reading the value (off the tape) ----------------------------------------------------------
def _item(self, *args):
    return self.value.item(*args)


def _format(self, spec):
    return format(self.value, spec) if spec else str(self)


METHODS = {
    "sum": _sum, "mean": _mean, "prod": _prod, "max": _max, "min": _min, "var": _var, "std": _std,
    "cumsum": _cumsum, "argmax": _argmax, "argmin": _argmin, "any": _any, "all": _all,
    "reshape": _reshape, "transpose": _transpose, "flatten": _flatten, "ravel": _flatten,
    "squeeze": _squeeze, "swapaxes": ops.swapaxes, "repeat": ops.repeat, "take": _take,
    "astype": ops.astype, "clip": _clip, "round": _round, "__round__": lambda self, ndigits=None: _round(
        self, ndigits or 0), "dot": ops.dot, "relu": ops.relu,
    "__pow__": ops.power, "__rpow__": lambda self, other: ops.power(other, self),
    "__mod__": ops.remainder, "__rmod__": lambda self, other: ops.remainder(other, self),
    "__floordiv__": ops.floor_divide, "__rfloordiv__": lambda self, other: ops.floor_divide(other, self),
    "T": property(ops.transpose), "mT": property(_mT), "size": property(lambda self: self.value.size),
    "item": _item, "tolist": lambda self: self.value.tolist(), "__float__": lambda self: float(self.value),
    "__int__": lambda self: int(self.value), "__format__": _format,
}

for _name, _method in METHODS.items():
    setattr(Tensor, _name, _method)
del _name, _method
