"""Normalisation layers without state: `LayerNorm`, `GroupNorm`, `RMSNorm`, as PyTorch's.

Composed from `fdl.ops` (mean, sqrt, divide), so both autodiffs differentiate them through
their existing rules; in float64 they match PyTorch (values and gradients) to 1e-10 relative
in the tests, so they need no primitive of their own.
"""

import jax.numpy as jnp
from jax.typing import DTypeLike

from funcdl import ops
from funcdl.construction import recorded
from funcdl.nn import init as initializers
from funcdl.nn.layers import _param_dtype
from funcdl.nn.model import Model, check_input, check_key, check_params, named_model, sample_struct


def _trailing_shape_check(name, shape):
    """`check(x_shape, what)`: ValueError unless `x_shape` ends with `shape` (a tuple)."""
    def check(x_shape, what):
        if len(x_shape) < len(shape) or tuple(x_shape[len(x_shape) - len(shape):]) != shape:
            raise ValueError(f"{name}: {what} must have shape (..., {', '.join(map(str, shape))}), "
                             f"got {tuple(x_shape)}")
    return check


def _normalized_shape(normalized_shape, where):
    """An int or a non-empty tuple of ints >= 1, as a tuple."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    if (isinstance(normalized_shape, bool) or not isinstance(shape, (tuple, list))
            or any(isinstance(n, bool) or not isinstance(n, int) for n in shape)):
        raise TypeError(f"{where}: `normalized_shape` must be an int or a tuple of ints, "
                        f"got {normalized_shape!r}")
    shape = tuple(shape)
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"{where}: `normalized_shape` must be non-empty with sizes >= 1, "
                         f"got {normalized_shape!r}")
    return shape


def _check_eps(eps, where):
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"{where}: `eps` must be a number >= 0, got {eps!r}")


def _check_floating(x, name):
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name}: `x` must have a floating-point dtype, got {x.dtype}")


@recorded
def LayerNorm(normalized_shape: int | tuple[int, ...], *, eps: float = 1e-5,
              elementwise_affine: bool = True, dtype: DTypeLike | None = None) -> Model:
    """y = (x - mean) / sqrt(var + eps) · w + b over the last ``len(normalized_shape)`` axes.

    x: `(..., *normalized_shape)` -> the same shape. var is the biased variance (divide by the
    number of normalised elements), as PyTorch. params: ``{"w": normalized_shape (ones),
    "b": normalized_shape (zeros)}``, or ``{}`` when ``elementwise_affine=False``.
    normalized_shape: an int or a tuple of ints. dtype: the params' dtype (default: the
    sample's floating dtype, else float32).

    PyTorch: ``torch.nn.LayerNorm(normalized_shape, eps, elementwise_affine)``.
    """
    shape = _normalized_shape(normalized_shape, "LayerNorm")
    _check_eps(eps, "LayerNorm")
    name = f"LayerNorm({shape if len(shape) > 1 else shape[0]}" + (
        ", elementwise_affine=False)" if not elementwise_affine else ")")
    keys = ["b", "w"] if elementwise_affine else []

    check_shape = _trailing_shape_check(name, shape)

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
        _check_floating(x, name)
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


@recorded
def GroupNorm(num_groups: int, *, eps: float = 1e-5, affine: bool = True,
              dtype: DTypeLike | None = None) -> Model:
    """y = (x - mean_g) / sqrt(var_g + eps) · w[c] + b[c], statistics per sample and group.

    x: `(N, C, *)` -> the same shape; the C channels split into `num_groups` groups of C / G
    consecutive channels, and mean_g, var_g (biased) run over a group's channels and all the
    positions `*`. C is read from the sample at init and must be divisible by `num_groups`.
    params: ``{"w": (C,) ones, "b": (C,) zeros}``, or ``{}`` when ``affine=False``.
    dtype: the params' dtype (default: the sample's floating dtype, else float32).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from funcdl import nn
        >>> norm = nn.GroupNorm(2)
        >>> x = jnp.arange(16.0).reshape(1, 4, 2, 2)
        >>> params = norm.init(jax.random.key(0), x)
        >>> y = norm.apply(params, x)
        >>> round(float(y[0, :2].mean()), 6), round(float(y[0, 2:].std()), 4)  # per group
        (0.0, 1.0)

    PyTorch: ``torch.nn.GroupNorm(num_groups, num_channels, eps, affine)``.
    """
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"GroupNorm: `num_groups` must be an int >= 1, got {num_groups!r}")
    _check_eps(eps, "GroupNorm")
    if not isinstance(affine, bool):
        raise TypeError(f"GroupNorm: `affine` must be a bool, got {affine!r}")
    name = f"GroupNorm({num_groups}" + (f", eps={eps}" if eps != 1e-5 else "") + (
        ", affine=False)" if not affine else ")")
    keys = ["b", "w"] if affine else []

    def channels(x_shape, what):
        if len(x_shape) < 2:
            raise ValueError(f"{name}: {what} must have shape (N, C, *), got {tuple(x_shape)}")
        if x_shape[1] % num_groups:
            raise ValueError(f"{name}: the {x_shape[1]} channels of {what} (axis 1) must be "
                             f"divisible by `num_groups` ({num_groups})")
        return x_shape[1]

    def init(key, x):
        check_key(key, name)
        x = sample_struct(x, name)
        C = channels(x.shape, "the sample input `x`")
        if not affine:
            return {}
        param_dtype = _param_dtype(dtype, x.dtype, name)
        return {"w": initializers.ones(key, (C,), param_dtype),
                "b": initializers.zeros(key, (C,), param_dtype)}

    def apply(params, x, *, key=None, train=False):
        check_params(params, keys, name)
        check_input(x, name)
        C = channels(x.shape, "`x`")
        _check_floating(x, name)
        N, spatial = x.shape[0], tuple(x.shape[2:])
        grouped = ops.reshape(x, (N, num_groups, C // num_groups) + spatial)
        axes = tuple(range(2, len(grouped.shape)))
        centred = grouped - ops.mean(grouped, axis=axes, keepdims=True)
        variance = ops.mean(centred * centred, axis=axes, keepdims=True)
        y = ops.reshape(centred / ops.sqrt(variance + eps), tuple(x.shape))
        if not affine:
            return y
        for argument in ("w", "b"):
            if tuple(params[argument].shape) != (C,):
                raise ValueError(f"{name}: `params['{argument}']` must have shape ({C},) for the "
                                 f"{C} channels of `x`, got {tuple(params[argument].shape)}")
        per_channel = (1, C) + (1,) * len(spatial)
        return y * ops.reshape(params["w"], per_channel) + ops.reshape(params["b"], per_channel)

    return named_model(name, init, apply)


@recorded
def RMSNorm(normalized_shape: int | tuple[int, ...], *, eps: float | None = None,
            elementwise_affine: bool = True, dtype: DTypeLike | None = None) -> Model:
    """y = x / sqrt(mean(x²) + eps) · w over the last ``len(normalized_shape)`` axes.

    x: `(..., *normalized_shape)` -> the same shape. eps: default ``None`` is the machine
    epsilon of the dtype the statistics are computed in: float16 and bfloat16 inputs are
    normalised in float32 and cast back before the weight (as PyTorch), so their default is
    float32's 1.19e-7; float32 and float64 use their own. params: ``{"w": normalized_shape
    (ones)}``, or ``{}`` when ``elementwise_affine=False``. dtype: the params' dtype.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from funcdl import nn
        >>> norm = nn.RMSNorm(2, eps=0.0)
        >>> norm.apply(norm.init(jax.random.key(0), jnp.ones((1, 2))), jnp.array([[3.0, 4.0]]))
        Array([[0.84852815, 1.1313709 ]], dtype=float32)

    PyTorch: ``torch.nn.RMSNorm(normalized_shape, eps, elementwise_affine)``.
    """
    shape = _normalized_shape(normalized_shape, "RMSNorm")
    if eps is not None:
        _check_eps(eps, "RMSNorm")
    name = f"RMSNorm({shape if len(shape) > 1 else shape[0]}" + (
        f", eps={eps}" if eps is not None else "") + (
        ", elementwise_affine=False)" if not elementwise_affine else ")")
    keys = ["w"] if elementwise_affine else []

    check_shape = _trailing_shape_check(name, shape)

    def init(key, x):
        check_key(key, name)
        x = sample_struct(x, name)
        check_shape(x.shape, "sample input `x`")
        if not elementwise_affine:
            return {}
        return {"w": initializers.ones(key, shape, _param_dtype(dtype, x.dtype, name))}

    def apply(params, x, *, key=None, train=False):
        check_params(params, keys, name)
        check_input(x, name)
        check_shape(x.shape, "`x`")
        _check_floating(x, name)
        compute = jnp.float32 if jnp.finfo(x.dtype).bits < 32 else x.dtype
        epsilon = float(jnp.finfo(compute).eps) if eps is None else eps
        wide = x if compute == x.dtype else ops.astype(x, compute)
        axes = tuple(range(len(x.shape) - len(shape), len(x.shape)))
        y = wide / ops.sqrt(ops.mean(wide * wide, axis=axes, keepdims=True) + epsilon)
        y = y if compute == x.dtype else ops.astype(y, x.dtype)
        if not elementwise_affine:
            return y
        if tuple(params["w"].shape) != shape:
            raise ValueError(f"{name}: `params['w']` must have shape {shape}, got "
                             f"{tuple(params['w'].shape)}")
        return y * ops.reshape(params["w"], (1,) * (len(x.shape) - len(shape)) + shape)

    return named_model(name, init, apply)
