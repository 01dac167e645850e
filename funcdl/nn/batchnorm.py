"""`BatchNorm1d` and `BatchNorm2d`: PyTorch's batch normalisation, with running statistics as
state beside the params (`fdl.nn.Variables`).

Training (`train=True`): y = (x - mean_B) / sqrt(var_B + eps) · w + b with the batch's mean and
BIASED variance over every axis but the channel axis 1; the running statistics move as
PyTorch's: mean <- (1 - m) mean + m mean_B, var <- (1 - m) var + m var_B · n / (n - 1) (the
UNBIASED variance, n values per channel), count <- count + 1, where m = momentum, or
1 / count (the cumulative average) when `momentum=None`. Evaluation (`train=False`): the
running statistics normalise and stay as they are. Composed from `fdl.ops`, so both autodiffs
differentiate it; the new state is computed with `stop_gradient` (a constant to both).
"""
from collections.abc import Mapping

import jax.numpy as jnp
from jax.typing import DTypeLike

from funcdl import ops
from funcdl.construction import recorded
from funcdl.nn import init as initializers
from funcdl.nn.layers import _param_dtype
from funcdl.nn.model import (
    Model,
    check_input,
    check_key,
    check_params,
    named_model,
    sample_struct,
)
from funcdl.nn.state import Variables


def _check_options(name, momentum, eps, affine, track_running_stats):
    if momentum is not None and (isinstance(momentum, bool) or not isinstance(
            momentum, (int, float)) or not 0 <= momentum <= 1):
        raise ValueError(f"{name}: `momentum` must be a number in [0, 1] or None, got "
                         f"{momentum!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"{name}: `eps` must be a number > 0, got {eps!r}")
    for argument, value in (("affine", affine), ("track_running_stats", track_running_stats)):
        if not isinstance(value, bool):
            raise TypeError(f"{name}: `{argument}` must be a bool, got {value!r}")


def _batch_norm(kind, ranks, momentum, eps, affine, track_running_stats, dtype):
    options = [f"momentum={momentum}"] if momentum != 0.1 else []
    options += [f"eps={eps}"] if eps != 1e-5 else []
    options += ["affine=False"] if not affine else []
    options += ["track_running_stats=False"] if not track_running_stats else []
    name = f"{kind}({', '.join(options)})"
    _check_options(name, momentum, eps, affine, track_running_stats)
    shapes = " or ".join({2: "(N, C)", 3: "(N, C, L)", 4: "(N, C, H, W)"}[r] for r in ranks)
    keys = ["b", "w"] if affine else []

    def check_rank(shape, what):
        if len(shape) not in ranks:
            raise ValueError(f"{name}: {what} must have shape {shapes}, got {tuple(shape)}")

    def init(key, x):
        check_key(key, name)
        x = sample_struct(x, name)
        check_rank(x.shape, "sample input `x`")
        param_dtype = _param_dtype(dtype, x.dtype, name)
        channels = (x.shape[1],)
        params = ({"w": initializers.ones(key, channels, param_dtype),
                   "b": initializers.zeros(key, channels, param_dtype)} if affine else {})
        if not track_running_stats:
            return params
        state = {"mean": jnp.zeros(channels, param_dtype), "var": jnp.ones(channels, param_dtype),
                 "count": jnp.zeros((), jnp.int32)}
        return Variables(params, state)

    def normalise(params, x, train, state):
        check_params(params, keys, name)
        check_input(x, name)
        check_rank(x.shape, "`x`")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{name}: `x` must have a floating-point dtype, got {x.dtype}")
        channels = x.shape[1]
        for argument, value in list(params.items()) + list((state or {}).items()):
            if argument != "count" and tuple(value.shape) != (channels,):
                raise ValueError(f"{name}: `x` has {channels} channels (axis 1, the (N, C, ...) "
                                 f"layout), but the {argument!r} of the variables is for "
                                 f"{value.shape[0] if value.shape else '?'}")
        axes = (0,) + tuple(range(2, len(x.shape)))
        lead = (1, channels) + (1,) * (len(x.shape) - 2)
        n = 1
        for axis in axes:
            n *= x.shape[axis]
        batch = train or state is None
        if batch and n < 2:
            raise ValueError(f"{name}: expected more than 1 value per channel when training, "
                             f"got `x` of shape {tuple(x.shape)}")
        if batch:
            mean = ops.mean(x, axis=axes, keepdims=True)
            centred = x - mean
            variance = ops.mean(centred * centred, axis=axes, keepdims=True)
        else:
            mean = ops.reshape(state["mean"], lead).astype(x.dtype)
            centred = x - mean
            variance = ops.reshape(state["var"], lead).astype(x.dtype)
        y = centred / ops.sqrt(variance + eps)
        if affine:
            y = y * ops.reshape(params["w"], lead) + ops.reshape(params["b"], lead)
        if state is None or not train:
            return y, state
        count = state["count"] + 1
        factor = 1.0 / count.astype(state["mean"].dtype) if momentum is None else momentum
        batch_mean = ops.stop_gradient(ops.reshape(mean, (channels,)))
        unbiased = ops.stop_gradient(ops.reshape(variance, (channels,))) * (n / (n - 1))
        new_state = {"mean": (1 - factor) * state["mean"] + factor * batch_mean.astype(
                         state["mean"].dtype),
                     "var": (1 - factor) * state["var"] + factor * unbiased.astype(
                         state["var"].dtype),
                     "count": count}
        return y, new_state

    if not track_running_stats:
        def apply(params, x, *, key=None, train=False):
            return normalise(params, x, True, None)[0]

        return named_model(name, init, apply)

    def apply(variables, x, *, key=None, train=False):  # a Variables: checked by named_model
        state = variables.state
        if not isinstance(state, Mapping):
            raise TypeError(f"{name}: `variables.state` must be the running statistics "
                            f"{{'count', 'mean', 'var'}} that `init` returns, got "
                            f"{type(state).__name__}: pass the `Variables` from `init` whole")
        if sorted(state) != ["count", "mean", "var"]:
            raise ValueError(f"{name}: `variables.state` must have keys ['count', 'mean', "
                             f"'var'] (the running statistics `init` returns), got {sorted(state)}")
        return normalise(variables.params, x, train, state)

    return named_model(name, init, apply, stateful=True)


@recorded
def BatchNorm1d(*, momentum: float | None = 0.1, eps: float = 1e-5, affine: bool = True,
                track_running_stats: bool = True, dtype: DTypeLike | None = None) -> Model:
    """Batch normalisation of `(N, C)` or `(N, C, L)` inputs per channel C (axis 1), as
    `torch.nn.BatchNorm1d(C, eps, momentum, affine, track_running_stats)`; C is read from the
    sample input at `init`.

    Returns a stateful model (with `track_running_stats=True`, the default):
    `variables = init(key, x)` is `Variables(params={"w": (C,) ones, "b": (C,) zeros},
    state={"mean": (C,) zeros, "var": (C,) ones, "count": () int32})` (`params` `{}` without
    `affine`); `y, state = apply(variables, x, *, key=None, train=False)`, y of x's shape.
    With `track_running_stats=False` it is stateless (`params = init(...)`, `y = apply(params,
    x)`) and always normalises with the batch's statistics. The math is in the module
    docstring; dtype: the params' and statistics' dtype (default: the sample's).

    Raises:
      ValueError: a `momentum` outside [0, 1], `eps` <= 0, `x` of another rank, a channel
        count that differs from the variables' (naming both), or one value per channel when
        training.
      TypeError: `apply` given the params only (pass the `Variables` from `init`).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from funcdl import nn
        >>> bn = nn.BatchNorm1d()
        >>> variables = bn.init(jax.random.key(0), jnp.zeros((4, 2)))
        >>> x = jnp.array([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0], [7.0, 14.0]])
        >>> y, state = bn.apply(variables, x, train=True)
        >>> [round(v, 4) for v in y[:, 0].tolist()], state["mean"].tolist()
        ([-1.3416, -0.4472, 0.4472, 1.3416], [0.4000000059604645, 0.800000011920929])
    """
    return _batch_norm("BatchNorm1d", (2, 3), momentum, eps, affine, track_running_stats, dtype)


@recorded
def BatchNorm2d(*, momentum: float | None = 0.1, eps: float = 1e-5, affine: bool = True,
                track_running_stats: bool = True, dtype: DTypeLike | None = None) -> Model:
    """Batch normalisation of `(N, C, H, W)` inputs per channel C, as
    `torch.nn.BatchNorm2d(C, eps, momentum, affine, track_running_stats)`: the statistics are
    over N, H and W. Variables, state, arguments and errors as `BatchNorm1d`'s.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from funcdl import nn
        >>> bn = nn.BatchNorm2d()
        >>> x = jnp.arange(16.0).reshape(2, 2, 2, 2)
        >>> variables = bn.init(jax.random.key(0), x)
        >>> y, state = bn.apply(variables, x, train=True)
        >>> y.shape, state["count"].tolist()
        ((2, 2, 2, 2), 1)
        >>> y_eval, same = bn.apply(variables._replace(state=state), x)  # running statistics
        >>> same is state
        True
    """
    return _batch_norm("BatchNorm2d", (4,), momentum, eps, affine, track_running_stats, dtype)
