"""Layers: `Linear`, the activations, `Dropout`, `Flatten`. Each constructor returns a `Model`.

Every ``apply`` is written with ``fdl.ops`` and Python operators, and reads shapes through
``.shape``, so it runs on arrays (``jax.grad``) and on ``fdl.autodiff.Tensor``s alike. Shapes
are checked when the function is traced, so mistakes surface eagerly, also under ``jax.jit``.
"""
import math
from numbers import Real

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from funcdl import ops
from funcdl.construction import recorded
from funcdl.nn import init as initializers
from funcdl.nn.init import Initializer, compute_fans
from funcdl.nn.model import (Model, check_input, check_key, check_no_params, check_params,
                             named_model, parameter_free, sample_struct)


def _param_dtype(dtype, sample_dtype, where):
    """The explicit `dtype`, else the sample input's floating dtype, else float32 (as PyTorch)."""
    if dtype is None:
        dtype = sample_dtype if jnp.issubdtype(sample_dtype, jnp.floating) else jnp.float32
    elif not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{where}: `dtype` must be a floating dtype, got {jnp.dtype(dtype)}")
    return jax.dtypes.canonicalize_dtype(dtype)


def layer_initializer(initializer, argument: str, where: str):
    """`initializer` prepared for a layer: ``draw(key, shape, dtype, fan_in, fan_out) -> array``.

    Called when the layer is built, so the layer decides once, from the signature
    (``fdl.nn.init.accepts_fans``), whether the initializer is given the fans as keywords or is
    an old three-argument ``(key, shape, dtype)`` one. ``draw`` re-raises the initializer's
    TypeError/ValueError under the layer's name and checks the shape and dtype it returns.
    Layers pass the fans of their weight's layout (``fdl.nn.init.compute_fans``).
    """
    if not callable(initializer):
        raise TypeError(f"{where}: `{argument}` must be an initializer (key, shape, dtype, *, "
                        f"fan_in, fan_out) -> array, got {type(initializer).__name__}")
    with_fans = initializers.accepts_fans(initializer)

    def draw(key, shape, dtype, fan_in, fan_out):
        try:
            if with_fans:
                value = initializer(key, shape, dtype, fan_in=fan_in, fan_out=fan_out)
            else:
                value = initializer(key, shape, dtype)
        except (TypeError, ValueError) as error:
            if type(error) not in (TypeError, ValueError):
                raise
            raise type(error)(f"{where}: `{argument}` failed: {error}") from error
        if getattr(value, "shape", None) != shape or value.dtype != dtype:
            raise ValueError(f"{where}: `{argument}` must return an array of shape {shape} and "
                             f"dtype {dtype}, got {getattr(value, 'shape', type(value).__name__)} "
                             f"and {getattr(value, 'dtype', None)}")
        return value

    return draw


# ---------------------------------------------------------------- Linear

@recorded
def Linear(out_features: int, *, bias: bool = True,
           w_init: Initializer = initializers.kaiming_uniform(a=math.sqrt(5)),
           b_init: Initializer | None = None, dtype: DTypeLike | None = None) -> Model:
    """Affine map ``y = x @ w + b``: x `(..., in)` -> y `(..., out_features)`.

    params: ``{"w": (in, out_features), "b": (out_features,)}`` (no ``"b"`` when
    ``bias=False``); ``in`` is read from the sample input's last axis at init. Note the
    layout: PyTorch's ``nn.Linear.weight`` is ``w.T``.

    w_init, b_init: initializers ``(key, shape, dtype, *, fan_in, fan_out) -> array`` (see
    ``fdl.nn.init``), given fan_in = in and fan_out = out_features (three-argument
    ``(key, shape, dtype)`` ones are called without the fans). Defaults are PyTorch's
    ``nn.Linear``: w is kaiming-uniform with a = sqrt(5), i.e. uniform in ±1/sqrt(in), and
    ``b_init=None`` means ``init.bias_uniform(in)``, uniform in ±1/sqrt(in).
    dtype: the params' dtype; default the sample input's floating dtype (float32 for a
    non-floating sample).

    PyTorch: ``torch.nn.Linear(in, out_features, bias)``.
    """
    if isinstance(out_features, bool) or not isinstance(out_features, int):
        raise TypeError(f"Linear: `out_features` must be an int, got {type(out_features).__name__}")
    if out_features < 1:
        raise ValueError(f"Linear: `out_features` must be >= 1, got {out_features}")
    name = f"Linear({out_features})" if bias else f"Linear({out_features}, bias=False)"
    keys = ["b", "w"] if bias else ["w"]
    draw_w = layer_initializer(w_init, "w_init", name)
    draw_b = None if b_init is None else layer_initializer(b_init, "b_init", name)

    def init(key, x):
        check_key(key, name)
        x = sample_struct(x, name)
        if len(x.shape) < 1:
            raise ValueError(f"{name}: sample input `x` must have shape (..., in), got shape ()")
        in_features = x.shape[-1]
        param_dtype = _param_dtype(dtype, x.dtype, name)
        w_key, b_key = jax.random.split(key)
        fans = compute_fans((in_features, out_features), "in_out")
        params = {"w": draw_w(w_key, (in_features, out_features), param_dtype, *fans)}
        if bias:
            draw = draw_b or layer_initializer(initializers.bias_uniform(in_features), "b_init", name)
            params["b"] = draw(b_key, (out_features,), param_dtype, *fans)
        return params

    def apply(params, x, *, key=None, train=False):
        check_params(params, keys, name)
        check_input(x, name)
        w = params["w"]
        if len(w.shape) != 2 or w.shape[1] != out_features:
            raise ValueError(f"{name}: `params['w']` must have shape (in, {out_features}), "
                             f"got {tuple(w.shape)}")
        if len(x.shape) < 1 or x.shape[-1] != w.shape[0]:
            raise ValueError(f"{name}: `x` must have shape (..., {w.shape[0]}) to match "
                             f"`params['w']` of shape {tuple(w.shape)}, got {tuple(x.shape)}")
        y = ops.matmul(x, w)
        if not bias:
            return y
        b = params["b"]
        if tuple(b.shape) != (out_features,):
            raise ValueError(f"{name}: `params['b']` must have shape ({out_features},), "
                             f"got {tuple(b.shape)}")
        # Same rank as y: the bias must not rely on implicit rank promotion.
        return y + ops.reshape(b, (1,) * (len(y.shape) - 1) + (out_features,))

    return named_model(name, init, apply)


# ---------------------------------------------------------------- activations

def _check_axis(axis, where):
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"{where}: `axis` must be an int, got {type(axis).__name__}")


def _along_axis(name, function, axis):
    def along(x):
        check_input(x, name)
        if not -len(x.shape) <= axis < len(x.shape):
            raise ValueError(f"{name}: `axis` {axis} is out of range for `x` of shape "
                             f"{tuple(x.shape)}")
        return function(x, axis=axis)
    return parameter_free(name, along)


def check_inplace(inplace, where: str) -> None:
    """PyTorch's `inplace=` is accepted and ignored (a pure function never writes its input);
    it must still be a bool."""
    if not isinstance(inplace, bool):
        raise TypeError(f"{where}: `inplace` must be a bool (accepted and ignored: funcdl never "
                        f"writes its input), got {inplace!r}")


@recorded
def ReLU(inplace: bool = False) -> Model:
    """max(x, 0) elementwise; relu'(0) = 0. PyTorch: ``torch.nn.ReLU`` (`inplace` accepted
    and ignored)."""
    check_inplace(inplace, "ReLU")
    return parameter_free("ReLU()", ops.relu)


@recorded
def LeakyReLU(negative_slope: float = 0.01, inplace: bool = False) -> Model:
    """x if x > 0 else negative_slope * x, elementwise. PyTorch: ``torch.nn.LeakyReLU``
    (`inplace` accepted and ignored)."""
    check_inplace(inplace, "LeakyReLU")
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, Real):
        raise TypeError(f"LeakyReLU: `negative_slope` must be a real number, "
                        f"got {type(negative_slope).__name__}")
    return parameter_free(f"LeakyReLU({negative_slope})",
                          lambda x: ops.leaky_relu(x, negative_slope))


@recorded
def Sigmoid() -> Model:
    """1 / (1 + exp(-x)) elementwise. PyTorch: ``torch.nn.Sigmoid``."""
    return parameter_free("Sigmoid()", ops.sigmoid)


@recorded
def Tanh() -> Model:
    """tanh(x) elementwise. PyTorch: ``torch.nn.Tanh``."""
    return parameter_free("Tanh()", ops.tanh)


@recorded
def Softmax(axis: int = -1) -> Model:
    """exp(x) / sum(exp(x)) along ``axis``; same shape as x. PyTorch: ``torch.nn.Softmax(dim)``."""
    _check_axis(axis, "Softmax")
    return _along_axis(f"Softmax(axis={axis})", ops.softmax, axis)


@recorded
def LogSoftmax(axis: int = -1) -> Model:
    """x - logsumexp(x) along ``axis``, computed stably; same shape as x.
    PyTorch: ``torch.nn.LogSoftmax(dim)``."""
    _check_axis(axis, "LogSoftmax")
    return _along_axis(f"LogSoftmax(axis={axis})", ops.log_softmax, axis)


# ---------------------------------------------------------------- Dropout, Flatten

@recorded
def Dropout(rate: float, inplace: bool = False) -> Model:
    """Zero each element with probability ``rate`` and scale the kept ones by 1 / (1 - rate).

    Only when ``apply(..., train=True)``, which then needs a ``key``; otherwise the identity.
    rate: in [0, 1] (PyTorch's ``p``, the probability to drop); 1 gives all zeros.
    x: any shape -> the same shape. PyTorch: ``torch.nn.Dropout(p)`` (`inplace` accepted
    and ignored).
    """
    check_inplace(inplace, "Dropout")
    if isinstance(rate, bool) or not isinstance(rate, Real):
        raise TypeError(f"Dropout: `rate` must be a real number, got {type(rate).__name__}")
    if not 0 <= rate <= 1:
        raise ValueError(f"Dropout: `rate` must be in [0, 1], got {rate}")
    name = f"Dropout({rate})"

    def init(key, x):
        check_key(key, name)
        sample_struct(x, name)
        return {}

    def apply(params, x, *, key=None, train=False):
        check_no_params(params, name)
        check_input(x, name)
        if not train or rate == 0:
            return x
        if key is None:
            raise ValueError(f"{name}: `key` is required when train=True (pass key=...)")
        check_key(key, name)
        if rate == 1:
            return x * 0.0
        keep = jax.random.bernoulli(key, 1.0 - rate, tuple(x.shape))
        return ops.where(keep, x * (1.0 / (1.0 - rate)), 0.0)

    return named_model(name, init, apply)


@recorded
def Flatten() -> Model:
    """Merge all axes after the first: x `(N, d1, d2, ...)` -> `(N, d1 * d2 * ...)`.

    PyTorch: ``torch.nn.Flatten()`` (start_dim=1), which also rejects inputs of rank < 2.
    """
    name = "Flatten()"

    def flatten(x):
        check_input(x, name)
        if len(x.shape) < 2:
            raise ValueError(f"{name}: `x` must have shape (N, ...) with rank >= 2, "
                             f"got {tuple(x.shape)}")
        return ops.reshape(x, (x.shape[0], math.prod(x.shape[1:])))

    return parameter_free(name, flatten)
