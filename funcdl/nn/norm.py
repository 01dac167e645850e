"""`LayerNorm`: normalisation over the trailing axes, as `torch.nn.LayerNorm`.

Composed from `fdl.ops` (mean, square, sqrt, divide), so both autodiffs differentiate it
through their existing rules; in float64 it matches PyTorch (values and gradients) to 1e-12
relative in the tests, so it needs no primitive of its own.
"""

import jax.numpy as jnp

from funcdl import ops
from funcdl.construction import recorded
from funcdl.nn import init as initializers
from funcdl.nn.layers import _param_dtype
from funcdl.nn.model import check_input, check_key, check_params, named_model, sample_struct


@recorded
def LayerNorm(normalized_shape, *, eps=1e-5, elementwise_affine=True, dtype=None):
    """y = (x - mean) / sqrt(var + eps) · w + b over the last ``len(normalized_shape)`` axes.

    x: `(..., *normalized_shape)` -> the same shape. var is the biased variance (divide by the
    number of normalised elements), as PyTorch. params: ``{"w": normalized_shape (ones),
    "b": normalized_shape (zeros)}``, or ``{}`` when ``elementwise_affine=False``.
    normalized_shape: an int or a tuple of ints. dtype: the params' dtype (default: the
    sample's floating dtype, else float32).

    PyTorch: ``torch.nn.LayerNorm(normalized_shape, eps, elementwise_affine)``.
    """
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    if (isinstance(normalized_shape, bool) or not isinstance(shape, (tuple, list))
            or any(isinstance(n, bool) or not isinstance(n, int) for n in shape)):
        raise TypeError(f"LayerNorm: `normalized_shape` must be an int or a tuple of ints, "
                        f"got {normalized_shape!r}")
    shape = tuple(shape)
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"LayerNorm: `normalized_shape` must be non-empty with sizes >= 1, "
                         f"got {normalized_shape!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"LayerNorm: `eps` must be a number >= 0, got {eps!r}")
    name = f"LayerNorm({shape if len(shape) > 1 else shape[0]}" + (
        ", elementwise_affine=False)" if not elementwise_affine else ")")
    keys = ["b", "w"] if elementwise_affine else []

    def check_shape(x_shape, what):
        if tuple(x_shape[len(x_shape) - len(shape):]) != shape or len(x_shape) < len(shape):
            raise ValueError(f"{name}: {what} must have shape (..., {', '.join(map(str, shape))}), "
                             f"got {tuple(x_shape)}")

    def init(key, x):
        check_key(key, name)
        x = sample_struct(x, name)
        check_shape(x.shape, "sample input `x`")
        if not elementwise_affine:
            return {}
        param_dtype = _param_dtype(dtype, x.dtype, name)
        return {"w": initializers.ones(key, shape, param_dtype),
                "b": initializers.zeros(key, shape, param_dtype)}

    def apply(params, x, *, key=None, train=False):
        check_params(params, keys, name)
        check_input(x, name)
        check_shape(x.shape, "`x`")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{name}: `x` must have a floating-point dtype, got {x.dtype}")
        axes = tuple(range(len(x.shape) - len(shape), len(x.shape)))
        centred = x - ops.mean(x, axis=axes, keepdims=True)
        variance = ops.mean(centred * centred, axis=axes, keepdims=True)
        y = centred / ops.sqrt(variance + eps)
        if not elementwise_affine:
            return y
        lead = (1,) * (len(x.shape) - len(shape))
        for argument in ("w", "b"):
            if tuple(params[argument].shape) != shape:
                raise ValueError(f"{name}: `params['{argument}']` must have shape {shape}, "
                                 f"got {tuple(params[argument].shape)}")
        return y * ops.reshape(params["w"], lead + shape) + ops.reshape(params["b"], lead + shape)

    return named_model(name, init, apply)
