"""Parameter initializers: functions ``(key, shape, dtype) -> array``.

Every initializer here is built by a small factory that closes over its hyperparameters, as
in ``jax.nn.initializers``: ``init.uniform(-0.1, 0.1)`` returns the function, which a layer
then calls as ``w_init(key, (in_features, out_features), dtype)``. ``zeros`` and ``ones``
take no hyperparameters and are initializers themselves.

Layout and fans (read this before porting PyTorch code)
--------------------------------------------------------
funcdl stores a dense weight as ``(in, out)`` so that a layer computes ``x @ w`` (as the
seeds write it); PyTorch stores ``(out, in)`` and computes ``x @ w.T``. The fan-based
initializers therefore read

- ``fan_in = shape[-2] * receptive``, ``fan_out = shape[-1] * receptive``, where
  ``receptive = prod(shape[:-2])`` (1 for a dense ``(in, out)`` weight; a convolution kernel
  would be ``(kh, kw, in, out)``),

which gives the same numbers as PyTorch's ``_calculate_fan_in_and_fan_out`` on the transposed
weight. A weight of rank < 2 has no fans: fan-based initializers raise ``ValueError``.

Biases have no fan of their own. ``fdl.nn.Linear``'s default ``b_init=None`` means PyTorch's
bias default, ``bias_uniform(in_features)`` (uniform in ±1/sqrt(in_features)); pass any
initializer here to replace it.

PyTorch equivalents: ``kaiming_uniform(a=math.sqrt(5))`` and ``bias_uniform(in)`` are
``nn.Linear.reset_parameters``; the others mirror ``torch.nn.init`` of the same name.
"""
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[..., jax.Array]  # (key, shape, dtype) -> array of that shape and dtype


def _check_dtype(dtype, where):
    dtype = np.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{where}: `dtype` must be a floating dtype, got {dtype}")
    return jax.dtypes.canonicalize_dtype(dtype)


def compute_fans(shape) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight stored as ``(..., in, out)`` (see the module docs).

    >>> compute_fans((784, 128))
    (784, 128)
    >>> compute_fans((3, 3, 16, 32))  # a (kh, kw, in, out) kernel
    (144, 288)
    """
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(
            f"fan-based initializers need a weight of shape (..., in, out) with rank >= 2, "
            f"got `shape` {shape}")
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """PyTorch's ``torch.nn.init.calculate_gain``: the std gain recommended after an activation.

    linear/sigmoid/identity 1, tanh 5/3, relu sqrt(2), leaky_relu sqrt(2 / (1 + a^2))
    (a = ``param``, default 0.01), selu 3/4.
    """
    if nonlinearity in ("linear", "identity", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(
        f"`nonlinearity` must be one of 'linear', 'identity', 'sigmoid', 'tanh', 'relu', "
        f"'leaky_relu', 'selu', got {nonlinearity!r}")


def _check_mode(mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"`mode` must be 'fan_in' or 'fan_out', got {mode!r}")


def _fan(shape, mode):
    fan_in, fan_out = compute_fans(shape)
    # An empty weight has no values to scale; 1 only avoids dividing by zero.
    return max(fan_in if mode == "fan_in" else fan_out, 1)


# ---------------------------------------------------------------- fixed values

def zeros(key, shape, dtype=jnp.float32) -> jax.Array:
    """All zeros (``key`` is ignored)."""
    return jnp.zeros(shape, _check_dtype(dtype, "zeros"))


def ones(key, shape, dtype=jnp.float32) -> jax.Array:
    """All ones (``key`` is ignored)."""
    return jnp.ones(shape, _check_dtype(dtype, "ones"))


def constant(value) -> Initializer:
    """Fill with ``value``: a scalar, or an array of exactly the requested shape.

    This is how fixed initial weights (the seeds' lessons) are loaded; remember the
    ``(in, out)`` layout: PyTorch's ``weight`` must be transposed first.

    >>> constant([[1.0, 2.0]])(None, (1, 2), jnp.float32)
    Array([[1., 2.]], dtype=float32)
    """
    value = np.asarray(value)
    if not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
            or value.dtype == bool):
        raise TypeError(f"constant: `value` must be real numbers, got dtype {value.dtype}")

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(shape)
        if value.ndim != 0 and value.shape != shape:
            raise ValueError(
                f"constant: `value` of shape {value.shape} does not match the parameter's "
                f"shape {shape} (give a scalar or an array of exactly that shape)")
        return jnp.full(shape, value, _check_dtype(dtype, "constant"))

    return init


# ---------------------------------------------------------------- plain distributions

def uniform(a: float = 0.0, b: float = 1.0) -> Initializer:
    """Uniform on ``[a, b)`` (``torch.nn.init.uniform_``)."""
    if not a <= b:
        raise ValueError(f"uniform: need `a` <= `b`, got a={a}, b={b}")

    def init(key, shape, dtype=jnp.float32):
        dtype = _check_dtype(dtype, "uniform")
        return jax.random.uniform(key, tuple(shape), dtype, minval=a, maxval=b)

    return init


def normal(std: float = 1.0, *, mean: float = 0.0) -> Initializer:
    """Normal with the given ``std`` and ``mean`` (``torch.nn.init.normal_``)."""
    if not std >= 0:
        raise ValueError(f"normal: `std` must be >= 0, got {std}")

    def init(key, shape, dtype=jnp.float32):
        dtype = _check_dtype(dtype, "normal")
        return mean + std * jax.random.normal(key, tuple(shape), dtype)

    return init


def bias_uniform(fan_in: int) -> Initializer:
    """PyTorch's default bias of a layer with ``fan_in`` inputs: uniform in ±1/sqrt(fan_in)
    (0 when ``fan_in`` is 0, as PyTorch)."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return uniform(-bound, bound)


# ---------------------------------------------------------------- fan-scaled

def xavier_uniform(gain: float = 1.0) -> Initializer:
    """Glorot/Xavier uniform: ±gain * sqrt(6 / (fan_in + fan_out))."""
    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = compute_fans(shape)
        bound = gain * math.sqrt(6.0 / max(fan_in + fan_out, 1))
        return uniform(-bound, bound)(key, shape, dtype)

    return init


def xavier_normal(gain: float = 1.0) -> Initializer:
    """Glorot/Xavier normal: std = gain * sqrt(2 / (fan_in + fan_out))."""
    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = compute_fans(shape)
        return normal(gain * math.sqrt(2.0 / max(fan_in + fan_out, 1)))(key, shape, dtype)

    return init


def kaiming_uniform(a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu") -> Initializer:
    """He/Kaiming uniform: ±sqrt(3) * gain / sqrt(fan), gain = ``calculate_gain(nonlinearity, a)``.

    The defaults give He's ±sqrt(6 / fan_in); ``a=math.sqrt(5)`` gives PyTorch's ``nn.Linear``
    weight, ±1/sqrt(fan_in).
    """
    gain = calculate_gain(nonlinearity, a)
    _check_mode(mode)

    def init(key, shape, dtype=jnp.float32):
        bound = math.sqrt(3.0) * gain / math.sqrt(_fan(shape, mode))
        return uniform(-bound, bound)(key, shape, dtype)

    return init


def kaiming_normal(a: float = 0.0, mode: str = "fan_in",
                   nonlinearity: str = "leaky_relu") -> Initializer:
    """He/Kaiming normal: std = gain / sqrt(fan); the defaults give sqrt(2 / fan_in)."""
    gain = calculate_gain(nonlinearity, a)
    _check_mode(mode)

    def init(key, shape, dtype=jnp.float32):
        return normal(gain / math.sqrt(_fan(shape, mode)))(key, shape, dtype)

    return init


# The other common names for the same distributions (PyTorch's defaults are He's).
glorot_uniform = xavier_uniform
glorot_normal = xavier_normal
he_uniform = kaiming_uniform
he_normal = kaiming_normal
