"""The array methods of `fdl.autodiff.Tensor`, each the `fdl.ops` function of the same name.

`autodiff` sits below `ops` and never imports it; this module, above both, attaches the methods
to the class once (`funcdl/__init__.py` imports it right after `ops`). So `t.sum()`, `t.T`,
`t ** 2` record on the tape exactly as `fdl.ops.sum(t)`, `fdl.ops.transpose(t)` and
`fdl.ops.power(t, 2)` do, and model code written with methods runs under both autodiffs.
"""
from funcdl import ops
from funcdl.autodiff import Tensor


def _sum(self, axis=None, keepdims=False):
    return ops.sum(self, axis, keepdims)


def _mean(self, axis=None, keepdims=False):
    return ops.mean(self, axis, keepdims)


def _max(self, axis=None, keepdims=False):
    return ops.max(self, axis, keepdims)


def _min(self, axis=None, keepdims=False):
    return ops.min(self, axis, keepdims)


def _reshape(self, *shape):
    return ops.reshape(self, shape[0] if len(shape) == 1 else shape)


def _transpose(self, *axes):
    return ops.transpose(self, axes[0] if len(axes) == 1 else (axes or None))


METHODS = {
    "sum": _sum, "mean": _mean, "max": _max, "min": _min, "reshape": _reshape,
    "transpose": _transpose, "astype": ops.astype,
    "__pow__": ops.power, "__rpow__": lambda self, other: ops.power(other, self),
    "T": property(ops.transpose),
}

for _name, _method in METHODS.items():
    setattr(Tensor, _name, _method)
del _name, _method
