"""Argument checks and reductions shared by the losses (see the package docstring)."""
import jax.numpy as jnp

from funcdl import ops
from funcdl.autodiff import Tensor

REDUCTIONS = ("mean", "sum", "none")


def float_operand(value, name, dtype=None):
    """`value` as a float jax array or Tensor (cast to `dtype` if it is an array); else TypeError."""
    if not isinstance(value, Tensor):
        value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(f"`{name}` must have a floating-point dtype, got {value.dtype}")
    if dtype is None or value.dtype == dtype:
        return value
    if isinstance(value, Tensor):
        raise TypeError(f"`{name}` must have the dtype of the prediction, {dtype}, got {value.dtype}")
    return value.astype(dtype)


def check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduction!r}")


def check_pair(name, input, target, reduction, *, integer_target_ok):
    """Validated `(input, target)` for the losses whose target has the prediction's shape."""
    check_reduction(reduction)
    input = float_operand(input, name)
    if not isinstance(target, Tensor):
        target = jnp.asarray(target)
        if integer_target_ok and not jnp.issubdtype(target.dtype, jnp.floating):
            target = target.astype(input.dtype)  # as PyTorch's mse_loss / l1_loss accept them
    target = float_operand(target, "target", input.dtype)
    if target.shape != input.shape:
        raise ValueError(f"`target` must have the shape of `{name}`, {input.shape}, got {target.shape} "
                         "(PyTorch would broadcast them with a warning; funcdl does not)")
    return input, target


def constant(value, name, shape, dtype):
    """A weight array broadcastable to `shape`, as `dtype`, reshaped to `len(shape)` axes."""
    if isinstance(value, Tensor):
        raise TypeError(f"`{name}` must be an array (it receives no gradient), got a Tensor")
    value = jnp.asarray(value, dtype=dtype)
    if value.ndim > len(shape) or any(n not in (1, m) for n, m in zip(value.shape[::-1], shape[::-1])):
        raise ValueError(f"`{name}` must broadcast to the input shape {shape}, got shape {value.shape}")
    return jnp.reshape(value, (1,) * (len(shape) - value.ndim) + value.shape)


def reduce_losses(values, reduction):
    """Mean or sum over all elements, or `values` unchanged for "none"."""
    if reduction == "mean":
        return ops.mean(values)
    return ops.sum(values) if reduction == "sum" else values
