"""Hand-written optimizers as pure functions over pytrees, numerically matching `torch.optim`.

    opt = fdl.optim.adam(lr=1e-3)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = fdl.optim.apply_updates(params, updates)

Only jax is used here (no other funcdl module but `funcdl.construction`, no optax). `alias`
composes the transforms of `transforms`, `adaptive` and `clipping`; `masking` applies them per
leaf (masks, labels, freezing), and `frozen` reads which leaves a `freeze` leaves without a
gradient (for `fdl.train`); `schedules` holds learning-rate schedules `step -> lr`.
"""
from funcdl.optim import frozen, hyperparams, schedules  # noqa: F401 (frozen: fdl.train's)
from funcdl.optim.alias import adagrad, adam, adamw, momentum, rmsprop, sgd
from funcdl.optim.base import EmptyState, Optimizer, apply_updates, chain, identity
from funcdl.optim.clipping import clip_by_global_norm
from funcdl.optim.learning_rates import learning_rate_value, learning_rates
from funcdl.optim.masking import (
    MaskedNode,
    MaskedState,
    MultiTransformState,
    freeze,
    masked,
    multi_transform,
    set_to_zero,
)
from funcdl.optim.adaptive import (
    ScaleByAdagradState,
    ScaleByAdamState,
    ScaleByRmsState,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_rms,
)
from funcdl.optim.transforms import (
    DecoupledWeightDecayState,
    ScaleByLearningRateState,
    TraceState,
    add_decayed_weights,
    decoupled_weight_decay,
    scale_by_learning_rate,
    trace,
)

__all__ = [
    "Optimizer",
    "EmptyState",
    "chain",
    "identity",
    "apply_updates",
    "sgd",
    "momentum",
    "adagrad",
    "rmsprop",
    "adam",
    "adamw",
    "clip_by_global_norm",
    "learning_rates",
    "learning_rate_value",
    "masked",
    "set_to_zero",
    "multi_transform",
    "freeze",
    "MaskedNode",
    "MaskedState",
    "MultiTransformState",
    "add_decayed_weights",
    "decoupled_weight_decay",
    "trace",
    "scale_by_adagrad",
    "scale_by_rms",
    "scale_by_adam",
    "scale_by_learning_rate",
    "TraceState",
    "ScaleByAdagradState",
    "ScaleByRmsState",
    "ScaleByAdamState",
    "ScaleByLearningRateState",
    "DecoupledWeightDecayState",
    "schedules",
    "hyperparams",
]
