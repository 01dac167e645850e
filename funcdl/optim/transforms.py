"""Small gradient transformations: learning-rate scaling, weight decay, momentum.

Each factory checks its hyperparameters (raising `ValueError` as `torch.optim` does) and returns
`Optimizer(init, update)`. Each state is a NamedTuple whose fields are commented with their
shapes and dtypes; "like params" means a pytree with the params' structure, shapes and dtypes.
The arithmetic follows the order of PyTorch's single-tensor implementations
(`torch/optim/{sgd,adagrad,rmsprop,adam}.py`), so float64 trajectories agree to rounding.
Hyperparameters stay Python floats: they are weakly typed and take each leaf's dtype.
The per-coordinate adaptive scalings (Adagrad, RMSprop, Adam) are in `adaptive.py`.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcdl.construction import recorded
from funcdl.optim.base import (
    EmptyState,
    Optimizer,
    ScalarOrSchedule,
    cast_scalar,
    check_matches,
    check_state,
    check_learning_rate,
    check_non_negative,
    complement,
    identity,
    is_data,
    is_zero,
    learning_rate_at,
    require_params,
)

tree_map = jax.tree_util.tree_map


# ----------------------------------------------------------------------------- learning rate


class ScaleByLearningRateState(NamedTuple):
    """The state of `scale_by_learning_rate`: the step count a schedule is evaluated at."""
    count: jax.Array  # () int32: updates already applied, the argument of a schedule


@recorded
def scale_by_learning_rate(lr: ScalarOrSchedule) -> Optimizer:
    """u <- -lr_t u, with lr_t = lr, or lr(count) for a schedule (count = 0 on the first update).

    Args:
      lr: a float >= 0, or a schedule `step -> lr` (see `funcdl.optim.schedules`).
    """
    check_learning_rate(lr)

    def init(params):
        del params
        return ScaleByLearningRateState(count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        check_state(state, ScaleByLearningRateState, "scale_by_learning_rate")
        lr_t = learning_rate_at(lr, state.count)
        updates = tree_map(lambda u: -cast_scalar(lr_t, u) * u, updates)
        return updates, ScaleByLearningRateState(count=state.count + 1)

    return Optimizer(init, update)


# ----------------------------------------------------------------------------- weight decay


@recorded
def add_decayed_weights(weight_decay: float = 0.0) -> Optimizer:
    """Coupled L2 weight decay: g <- g + weight_decay p (PyTorch's `weight_decay` in SGD,
    Adagrad, RMSprop and Adam). The identity when `weight_decay` is 0, as in PyTorch.

    Args:
      weight_decay: the L2 coefficient, >= 0.
    """
    check_non_negative(weight_decay, "weight_decay")
    if is_zero(weight_decay):
        return identity()

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        check_state(state, EmptyState, "add_decayed_weights")
        require_params(params, "add_decayed_weights")
        check_matches(updates, params, "params")
        updates = tree_map(lambda g, p: g + weight_decay * p, updates, params)
        return updates, state

    return Optimizer(init, update)


class DecoupledWeightDecayState(NamedTuple):
    """The state of `decoupled_weight_decay`: the step count a schedule is evaluated at."""
    count: jax.Array  # () int32: updates already applied, the argument of a schedule


@recorded
def decoupled_weight_decay(lr: ScalarOrSchedule, weight_decay: float = 1e-2) -> Optimizer:
    """AdamW's decay: p <- p (1 - lr_t weight_decay) + u, returned as the update
    u <- (p (1 - lr_t weight_decay) - p) + u. Chain it after `scale_by_learning_rate`.

    The factor is rounded to the leaf's dtype before it multiplies p, as `param.mul_(1 - lr * wd)`
    does in PyTorch; in float32 that rounding is a visible part of the decay (1 - 1e-5 is
    off by up to 0.3%), so `lr_t weight_decay p` would drift from PyTorch. `p f - p` is exact
    for f in [0.5, 2], so p + u equals PyTorch's result up to one rounding.
    The identity when `weight_decay` is 0, as in PyTorch.

    Args:
      lr: the same learning rate (float or schedule) as the optimizer's.
      weight_decay: the decoupled decay coefficient, >= 0.
    """
    check_learning_rate(lr)
    check_non_negative(weight_decay, "weight_decay")
    if is_zero(weight_decay):
        return identity()

    def init(params):
        del params
        return DecoupledWeightDecayState(count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        check_state(state, DecoupledWeightDecayState, "decoupled_weight_decay")
        require_params(params, "decoupled_weight_decay")
        check_matches(updates, params, "params")
        factor = 1 - learning_rate_at(lr, state.count) * weight_decay

        def decay(u, p):
            return (p * cast_scalar(factor, p) - p) + u

        updates = tree_map(decay, updates, params)
        return updates, DecoupledWeightDecayState(count=state.count + 1)

    return Optimizer(init, update)


# ----------------------------------------------------------------------------- momentum


class TraceState(NamedTuple):
    """The state of `trace`: the step count and the momentum buffer b_t."""
    count: jax.Array  # () int32: updates already applied
    momentum_buffer: object  # like params: b_t


@recorded
def trace(momentum: float, dampening: float = 0.0, nesterov: bool = False) -> Optimizer:
    """PyTorch's momentum buffer (heavy ball):

        b_1 = g,  b_t = momentum b_{t-1} + (1 - dampening) g,
        g <- g + momentum b_t  if nesterov  else  b_t.

    The first update takes g undampened. With `momentum` 0 there is no buffer (the identity).
    RMSprop's momentum is this with `dampening` 0 on g / avg (its zero-initialised buffer gives
    the same b_1).

    Args:
      momentum: the buffer's decay, >= 0.
      dampening: the weight (1 - dampening) of the new gradient after the first update.
      nesterov: use Nesterov's look-ahead; needs momentum > 0 and dampening = 0.
    """
    check_non_negative(momentum, "momentum")
    bad_momentum = not is_data(momentum) and momentum <= 0
    bad_dampening = not is_data(dampening) and dampening != 0
    if nesterov and (bad_momentum or bad_dampening):
        raise ValueError(
            "`nesterov=True` requires `momentum` > 0 and `dampening` = 0, "
            f"got momentum={momentum}, dampening={dampening}"
        )
    if is_zero(momentum):
        return identity()
    one_minus_dampening = complement(dampening)

    def init(params):
        return TraceState(
            count=jnp.zeros((), jnp.int32), momentum_buffer=tree_map(jnp.zeros_like, params)
        )

    def update(updates, state, params=None):
        del params
        check_state(state, TraceState, "trace")
        check_matches(updates, state.momentum_buffer, "params (the optimizer state)")
        first = state.count == 0

        def accumulate(g, b):
            return jnp.where(first, g, b * momentum + one_minus_dampening * g)

        buffer = tree_map(accumulate, updates, state.momentum_buffer)
        if nesterov:
            updates = tree_map(lambda g, b: g + momentum * b, updates, buffer)
        else:
            updates = buffer
        return updates, TraceState(count=state.count + 1, momentum_buffer=buffer)

    return Optimizer(init, update)
