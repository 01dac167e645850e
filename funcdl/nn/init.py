"""Parameter initializers: ``(key, shape, dtype=float32, *, fan_in=None, fan_out=None) -> array``.

Every initializer here is built by a small factory that closes over its hyperparameters, as
in ``jax.nn.initializers``: ``init.kaiming_normal(nonlinearity="relu")`` returns the function,
which a layer then calls as ``w_init(key, shape, dtype, fan_in=..., fan_out=...)``. ``zeros``
and ``ones`` take no hyperparameters and are initializers themselves.

Layout and fans (read this before porting PyTorch code)
--------------------------------------------------------
The fan-scaled initializers (``kaiming_*``, ``xavier_*``) need a weight's fan_in and fan_out,
and which axis is which depends on the layer's layout. So each layer tells the initializer
its fans, as ``torch.nn.init._calculate_fan_in_and_fan_out`` computes them on PyTorch's weight:

- ``Linear``: w ``(in, out)`` (funcdl computes ``x @ w``; PyTorch stores ``w.T``):
  fan_in = in, fan_out = out.
- ``Conv1d``/``Conv2d``: w ``(C_out, C_in // groups, *kernel)``, PyTorch's layout:
  fan_in = C_in // groups * prod(kernel), fan_out = C_out * prod(kernel).
- ``Embedding``: w ``(num_embeddings, embedding_dim)``, PyTorch's weight: fan_in =
  embedding_dim, fan_out = num_embeddings.
- A bias is given the fans of its layer's weight (PyTorch's bias bound is the weight's fan_in).

``compute_fans(shape, layout)`` computes them for the two layouts: ``"in_out"`` (funcdl's
dense ``(in, out)``) and ``"out_in"`` (PyTorch's ``(out, in, *kernel)``, also rank 2, as
attention and recurrent weights are stored). Called directly without fans, an initializer
reads them from the shape with ``compute_fans(shape)``: rank 2 is ``(in, out)``, rank >= 3 is
``(out, in, *kernel)``; a weight of rank < 2 has no fans (``ValueError``). Only one of the two
given: the other is read from the shape.

So ``kaiming_normal()`` on a ``Conv2d(64, 3)`` over 32 channels draws with std
sqrt(2 / 288), as ``torch.nn.init.kaiming_normal_`` on ``torch.nn.Conv2d(32, 64, 3).weight``.
The scales are computed in PyTorch's order of operations (``kaiming_std``, ``kaiming_bound``,
``xavier_std``, ``xavier_bound``), so they equal PyTorch's bit for bit.

Initializers of your own: ``lambda key, shape, dtype: ...`` works (three arguments); a layer
passes the fans only to an initializer that accepts ``fan_in`` and ``fan_out`` as keywords
(or ``**kwargs``), decided once when the layer is built (``accepts_fans``).

Biases: ``fdl.nn.Linear``'s default ``b_init=None`` means PyTorch's bias default,
``bias_uniform(in_features)`` (uniform in ±1/sqrt(in_features)); pass any initializer to
replace it.

PyTorch equivalents: ``kaiming_uniform(a=math.sqrt(5))`` and ``bias_uniform(in)`` are
``nn.Linear.reset_parameters``; the others mirror ``torch.nn.init`` of the same name.
Initializers built by these factories compare equal when built with equal arguments (see
``funcdl.construction``), so layers that use them do too.
"""
import inspect
import math
from collections.abc import Sequence
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from funcdl.construction import constructed_by, recorded

Initializer = Callable[..., jax.Array]  # (key, shape, dtype, *, fan_in, fan_out) -> array

LAYOUTS = ("in_out", "out_in")

__all__ = ["Initializer", "LAYOUTS", "compute_fans", "accepts_fans", "calculate_gain",
           "kaiming_std", "kaiming_bound", "xavier_std", "xavier_bound", "zeros", "ones",
           "constant", "uniform", "normal", "bias_uniform", "xavier_uniform", "xavier_normal",
           "kaiming_uniform", "kaiming_normal", "glorot_uniform", "glorot_normal", "he_uniform",
           "he_normal"]


class _Initializer:
    """What the factories below return: ``(key, shape, dtype=float32, *, fan_in=None,
    fan_out=None) -> array``, calling the function it holds, and reading as the call that built
    it, ``normal(std=0.01)``, so that ``help(fdl.nn.Linear)`` shows its default ``w_init``."""

    def __init__(self, draw: Callable[..., jax.Array]):
        self._draw = draw

    def __call__(self, key: jax.Array | None, shape: Sequence[int], dtype: DTypeLike = jnp.float32,
                 *, fan_in: int | None = None, fan_out: int | None = None) -> jax.Array:
        return self._draw(key, shape, dtype, fan_in=fan_in, fan_out=fan_out)

    def __repr__(self) -> str:
        record = constructed_by(self)
        if record is None:
            return f"<initializer {self._draw.__qualname__}>"
        return record.call_text()


def _check_dtype(dtype, where):
    dtype = np.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{where}: `dtype` must be a floating dtype, got {dtype}")
    return jax.dtypes.canonicalize_dtype(dtype)


def compute_fans(shape: Sequence[int], layout: str | None = None) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of ``shape`` stored in ``layout``.

    layout: ``"in_out"``, a dense ``(in, out)`` weight (funcdl's ``Linear``): ``(in, out)``;
    ``"out_in"``, PyTorch's ``(out, in, *kernel)`` (rank >= 2; Conv kernels, attention and
    recurrent weights): ``(in * k, out * k)`` with k = prod(kernel), exactly
    ``torch.nn.init._calculate_fan_in_and_fan_out``; ``None`` (the default): ``"in_out"`` for
    rank 2, ``"out_in"`` for rank >= 3.

    Raises ValueError for a rank < 2 (no fans), a rank other than 2 with ``"in_out"``, or
    another ``layout``.

    Examples:
      >>> compute_fans((784, 128))  # a Linear w (in, out)
      (784, 128)
      >>> compute_fans((128, 784), "out_in")  # PyTorch's nn.Linear.weight (out, in)
      (784, 128)
      >>> compute_fans((32, 16, 3, 3))  # a Conv2d w (C_out, C_in // groups, kh, kw)
      (144, 288)
    """
    shape = tuple(shape)
    if layout not in (None, *LAYOUTS):
        raise ValueError(f"`layout` must be 'in_out', 'out_in' or None, got {layout!r}")
    if len(shape) < 2:
        raise ValueError(
            f"fan-based initializers need the layer's `fan_in` and `fan_out`, or a weight of "
            f"rank >= 2 ((in, out) or (out, in, *kernel)) to read them from, got `shape` {shape}")
    if layout == "in_out" or (layout is None and len(shape) == 2):
        if len(shape) != 2:
            raise ValueError(f"layout 'in_out' is a dense (in, out) weight of rank 2, got "
                             f"`shape` {shape}")
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def accepts_fans(initializer: Callable) -> bool:
    """True when ``initializer`` takes ``fan_in`` and ``fan_out`` as keywords (or ``**kwargs``).

    Layers call it once, when they are built, to decide whether to pass the fans; a callable
    whose signature cannot be read is called with ``(key, shape, dtype)`` only.

    Examples:
      >>> accepts_fans(kaiming_normal()), accepts_fans(lambda key, shape, dtype: None)
      (True, False)
    """
    try:
        parameters = inspect.signature(initializer).parameters.values()
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return True
    by_keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {"fan_in", "fan_out"} <= {p.name for p in parameters if p.kind in by_keyword}


def _fans(shape, fan_in, fan_out):
    if fan_in is None or fan_out is None:
        from_shape = compute_fans(shape)
        fan_in = from_shape[0] if fan_in is None else fan_in
        fan_out = from_shape[1] if fan_out is None else fan_out
    return fan_in, fan_out


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The std gain recommended after an activation, PyTorch's ``torch.nn.init.calculate_gain``.

    linear/identity/sigmoid and the convolutions ('conv1d', 'conv2d', 'conv3d',
    'conv_transpose1d', ...) 1, tanh 5/3, relu sqrt(2), leaky_relu sqrt(2 / (1 + a^2))
    (a = ``param``, default 0.01), selu 3/4, by the name ``nonlinearity``.

    Examples:
      >>> calculate_gain("relu") == math.sqrt(2), calculate_gain("leaky_relu", 0.2)
      (True, 1.3867504905630728)
    """
    if nonlinearity in ("linear", "identity", "sigmoid", "conv1d", "conv2d", "conv3d",
                        "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
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
        f"'leaky_relu', 'selu' or a convolution ('conv2d', ...), got {nonlinearity!r}")


def _check_mode(mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"`mode` must be 'fan_in' or 'fan_out', got {mode!r}")


# ---------------------------------------------------------------- the scales, as PyTorch

def kaiming_std(fan_in: int, fan_out: int, a: float = 0.0, mode: str = "fan_in",
                nonlinearity: str = "leaky_relu") -> float:
    """``gain / sqrt(fan)``, fan = ``fan_in`` or ``fan_out`` by ``mode``, gain =
    ``calculate_gain(nonlinearity, a)``: the std of ``kaiming_normal``
    (``torch.nn.init.kaiming_normal_``). An empty weight (fan 0) is scaled as fan 1.

    Examples:
      >>> kaiming_std(288, 576)  # sqrt(2) / sqrt(288): torch.nn.Conv2d(32, 64, 3)'s weight
      0.08333333333333334
    """
    _check_mode(mode)
    # An empty weight has no values to scale; 1 only avoids dividing by zero.
    fan = max(fan_in if mode == "fan_in" else fan_out, 1)
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_bound(fan_in: int, fan_out: int, a: float = 0.0, mode: str = "fan_in",
                  nonlinearity: str = "leaky_relu") -> float:
    """``sqrt(3) * kaiming_std(...)``: ``kaiming_uniform`` draws from ±this bound
    (``torch.nn.init.kaiming_uniform_``); with ``a=math.sqrt(5)``, 1/sqrt(fan_in)."""
    return math.sqrt(3.0) * kaiming_std(fan_in, fan_out, a, mode, nonlinearity)


def xavier_std(fan_in: int, fan_out: int, gain: float = 1.0) -> float:
    """``gain * sqrt(2 / (fan_in + fan_out))``: the std of ``xavier_normal``
    (``torch.nn.init.xavier_normal_``). An empty weight is scaled as fan_in + fan_out = 1."""
    return gain * math.sqrt(2.0 / float(max(fan_in + fan_out, 1)))


def xavier_bound(fan_in: int, fan_out: int, gain: float = 1.0) -> float:
    """``sqrt(3) * xavier_std(...)`` = gain sqrt(6 / (fan_in + fan_out)): ``xavier_uniform``
    draws from ±this bound (``torch.nn.init.xavier_uniform_``)."""
    return math.sqrt(3.0) * xavier_std(fan_in, fan_out, gain)


# ---------------------------------------------------------------- fixed values

def zeros(key: jax.Array | None, shape: Sequence[int], dtype: DTypeLike = jnp.float32, *,
          fan_in: int | None = None, fan_out: int | None = None) -> jax.Array:
    """An array of zeros of ``shape`` and floating ``dtype`` (``key`` and the fans
    ``fan_in``, ``fan_out`` are ignored)."""
    return jnp.zeros(shape, _check_dtype(dtype, "zeros"))


def ones(key: jax.Array | None, shape: Sequence[int], dtype: DTypeLike = jnp.float32, *,
         fan_in: int | None = None, fan_out: int | None = None) -> jax.Array:
    """An array of ones of ``shape`` and floating ``dtype`` (``key`` and the fans
    ``fan_in``, ``fan_out`` are ignored)."""
    return jnp.ones(shape, _check_dtype(dtype, "ones"))


@recorded
def constant(value: ArrayLike) -> Initializer:
    """Fill with ``value``: a scalar, or an array of exactly the requested shape.

    This is how fixed initial weights (the seeds' lessons) are loaded; remember the
    ``(in, out)`` layout of ``Linear``: PyTorch's ``weight`` must be transposed first.

    Examples:
      >>> constant([[1.0, 2.0]])(None, (1, 2), jnp.float32)
      Array([[1., 2.]], dtype=float32)
    """
    value = np.asarray(value)
    if not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
            or value.dtype == bool):
        raise TypeError(f"constant: `value` must be real numbers, got dtype {value.dtype}")

    def init(key, shape, dtype=jnp.float32, *, fan_in=None, fan_out=None):
        shape = tuple(shape)
        if value.ndim != 0 and value.shape != shape:
            raise ValueError(
                f"constant: `value` of shape {value.shape} does not match the parameter's "
                f"shape {shape} (give a scalar or an array of exactly that shape)")
        return jnp.full(shape, value, _check_dtype(dtype, "constant"))

    return _Initializer(init)


# ---------------------------------------------------------------- plain distributions

# Drawn as one flat vector, then reshaped: the same numbers as a draw of `shape` (the random
# bits come from each element's index in row-major order), but XLA compiles the generator of a
# rank-1 draw several times faster than that of a rank-2 or rank-4 one (~0.2 s against ~0.9 s
# per weight shape on a CPU), and an eager `init` compiles one such program per weight shape.
#
# A draw of fewer than SHARED_DRAW numbers is, eagerly, the first numbers of a draw of
# SHARED_DRAW, cut and reshaped on the host: jax's partitionable threefry (its default) makes
# number i's bits a function of the key and i alone, so these are the numbers of a draw of
# its own size, and every small weight of every model shares one compiled generator per
# dtype (eagerly, each new size would compile its own: ~0.3 s on a CPU, for each bias and
# small weight). Under a trace (jit, vmap, eval_shape), with another PRNG or the
# non-partitionable threefry, the draw has its own size.
SHARED_DRAW = 4096


def _shares_draw(key, size):
    if size >= SHARED_DRAW or isinstance(key, jax.core.Tracer):
        return False
    if not jax.config.jax_threefry_partitionable:
        return False
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    impl = str(jax.random.key_impl(key)) if typed else str(jax.config.jax_default_prng_impl)
    return impl == "threefry2x32"


def _flat_draw(sample, key, shape, dtype):
    """`sample(key, (n,), dtype)` reshaped to `shape` (n its size), the same numbers."""
    size = math.prod(shape)
    if _shares_draw(key, size):
        drawn = np.asarray(sample(key, (SHARED_DRAW,), dtype))[:size].reshape(shape)
        return jax.device_put(drawn)  # (jnp.asarray would compile a copy for each shape)
    return sample(key, (size,), dtype).reshape(shape)


def _uniform(key, shape, dtype, low, high, where):
    dtype = _check_dtype(dtype, where)
    return _flat_draw(lambda k, s, d: jax.random.uniform(k, s, d, minval=low, maxval=high),
                      key, tuple(shape), dtype)


def _normal(key, shape, dtype, std, mean, where):
    return mean + std * _flat_draw(jax.random.normal, key, tuple(shape), _check_dtype(dtype, where))


@recorded
def uniform(a: float = 0.0, b: float = 1.0) -> Initializer:
    """Uniform on ``[a, b)`` (``torch.nn.init.uniform_``); the fans are ignored."""
    if not a <= b:
        raise ValueError(f"uniform: need `a` <= `b`, got a={a}, b={b}")

    def init(key, shape, dtype=jnp.float32, *, fan_in=None, fan_out=None):
        return _uniform(key, shape, dtype, a, b, "uniform")

    return _Initializer(init)


@recorded
def normal(std: float = 1.0, *, mean: float = 0.0) -> Initializer:
    """Normal with the given ``std`` and ``mean`` (``torch.nn.init.normal_``); the fans are
    ignored."""
    if not std >= 0:
        raise ValueError(f"normal: `std` must be >= 0, got {std}")

    def init(key, shape, dtype=jnp.float32, *, fan_in=None, fan_out=None):
        return _normal(key, shape, dtype, std, mean, "normal")

    return _Initializer(init)


@recorded
def bias_uniform(fan_in: int) -> Initializer:
    """PyTorch's default bias of a layer with ``fan_in`` inputs: uniform in ±1/sqrt(fan_in)
    (0 when ``fan_in`` is 0, as PyTorch). The fans passed by a layer are ignored: this
    ``fan_in`` is fixed here."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return uniform(-bound, bound)


# ---------------------------------------------------------------- fan-scaled

@recorded
def xavier_uniform(gain: float = 1.0) -> Initializer:
    """Glorot/Xavier uniform: ±``xavier_bound(fan_in, fan_out, gain)`` = ±gain sqrt(6 / (fan_in +
    fan_out)). PyTorch: ``torch.nn.init.xavier_uniform_``.

    Examples:
      >>> w = xavier_uniform()(jax.random.key(0), (64, 32, 3, 3))  # fans (288, 576)
      >>> bool(abs(w).max() <= math.sqrt(6 / (288 + 576)))
      True
    """
    def init(key, shape, dtype=jnp.float32, *, fan_in=None, fan_out=None):
        bound = xavier_bound(*_fans(shape, fan_in, fan_out), gain)
        return _uniform(key, shape, dtype, -bound, bound, "xavier_uniform")

    return _Initializer(init)


@recorded
def xavier_normal(gain: float = 1.0) -> Initializer:
    """Glorot/Xavier normal: std = ``xavier_std(fan_in, fan_out, gain)`` = gain sqrt(2 / (fan_in +
    fan_out)). PyTorch: ``torch.nn.init.xavier_normal_``."""
    def init(key, shape, dtype=jnp.float32, *, fan_in=None, fan_out=None):
        std = xavier_std(*_fans(shape, fan_in, fan_out), gain)
        return _normal(key, shape, dtype, std, 0.0, "xavier_normal")

    return _Initializer(init)


@recorded
def kaiming_uniform(a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu") -> Initializer:
    """He/Kaiming uniform: ±``kaiming_bound`` = ±sqrt(3) gain / sqrt(fan), gain =
    ``calculate_gain(nonlinearity, a)``, fan = fan_in or fan_out by ``mode``.

    The defaults give He's ±sqrt(6 / fan_in); ``a=math.sqrt(5)`` gives PyTorch's ``nn.Linear``
    and ``nn.Conv*d`` weight, ±1/sqrt(fan_in). PyTorch: ``torch.nn.init.kaiming_uniform_``.
    """
    calculate_gain(nonlinearity, a)
    _check_mode(mode)

    def init(key, shape, dtype=jnp.float32, *, fan_in=None, fan_out=None):
        bound = kaiming_bound(*_fans(shape, fan_in, fan_out), a, mode, nonlinearity)
        return _uniform(key, shape, dtype, -bound, bound, "kaiming_uniform")

    return _Initializer(init)


@recorded
def kaiming_normal(a: float = 0.0, mode: str = "fan_in",
                   nonlinearity: str = "leaky_relu") -> Initializer:
    """He/Kaiming normal: std = ``kaiming_std`` = gain / sqrt(fan); the defaults give
    sqrt(2 / fan_in). PyTorch: ``torch.nn.init.kaiming_normal_``.

    Examples:
      >>> from funcdl import nn
      >>> conv = nn.Conv2d(64, 3, w_init=kaiming_normal())  # fan_in = 32 * 3 * 3 = 288
      >>> w = conv.init(jax.random.key(0), jnp.zeros((1, 32, 8, 8)))["w"]
      >>> round(float(w.std()) / math.sqrt(2 / 288), 1)
      1.0
    """
    calculate_gain(nonlinearity, a)
    _check_mode(mode)

    def init(key, shape, dtype=jnp.float32, *, fan_in=None, fan_out=None):
        std = kaiming_std(*_fans(shape, fan_in, fan_out), a, mode, nonlinearity)
        return _normal(key, shape, dtype, std, 0.0, "kaiming_normal")

    return _Initializer(init)


# The other common names for the same distributions (PyTorch's defaults are He's).
glorot_uniform = xavier_uniform
glorot_normal = xavier_normal
he_uniform = kaiming_uniform
he_normal = kaiming_normal
