"""The learning rates an optimizer applies, read from the calls that built it.

`learning_rates(opt)` walks the construction record (`funcdl.construction`) of an optimizer
built by `fdl.optim`'s constructors and returns each learning rate it applies: a float or a
schedule `step -> lr`. `fit` records `history["lr"]` from it (the value at each epoch's last
update); with `multi_transform`, one entry per label.
"""
from typing import Dict, Optional

import jax
import jax.numpy as jnp

from funcdl.construction import constructed_by
from funcdl.optim import alias, masking, transforms
from funcdl.optim.base import Optimizer, ScalarOrSchedule, chain, learning_rate_at

_WITH_LR = (alias.sgd, alias.momentum, alias.adagrad, alias.rmsprop, alias.adam, alias.adamw,
            transforms.scale_by_learning_rate)


def _walk(optimizer) -> Optional[Dict[Optional[str], ScalarOrSchedule]]:
    """{label (None: unlabelled): lr}, or None when some part has no record."""
    record = constructed_by(optimizer)
    if record is None:
        return None
    arguments = record.arguments()
    if record.constructor in _WITH_LR:
        return {None: arguments["lr"]}
    if record.constructor is chain:
        found = {}
        for part in arguments["transforms"]:
            rates = _walk(part)
            if rates is None:
                return None
            for label, lr in rates.items():
                if label in found:  # two learning rates for one group: not one number
                    return None
                found[label] = lr
        return found
    if record.constructor in (masking.masked, masking.freeze):
        return _walk(arguments["inner" if record.constructor is masking.masked
                               else "optimizer"])
    if record.constructor is masking.multi_transform:
        found = {}
        for label, part in arguments["transforms"].items():
            rates = _walk(part)
            if rates is None:
                return None
            for inner, lr in rates.items():
                found[str(label) if inner is None else f"{label}/{inner}"] = lr
        return found
    return {}  # a transform without a learning rate (clipping, weight decay, set_to_zero)


def learning_rates(optimizer: Optimizer) -> Dict[str, ScalarOrSchedule]:
    """Each learning rate `optimizer` applies, by name: `{"lr": lr}` for one, or
    `{"lr/<label>": lr}` per label of a `multi_transform`.

    Returns `{}` for an optimizer built by hand (`Optimizer(init, update)`), or one without a
    learning rate. A value is a float or a schedule `step -> lr`; `learning_rate_value` gives
    its value at a step.

    Examples:
        >>> from funcdl import optim
        >>> learning_rates(optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-3)))
        {'lr': 0.001}
        >>> sorted(learning_rates(optim.multi_transform(
        ...     {"body": optim.sgd(0.1), "head": optim.adam(1e-3)}, ("body", "head"))))
        ['lr/body', 'lr/head']
    """
    rates = _walk(optimizer) or {}
    return {"lr" if label is None else f"lr/{label}": lr for label, lr in rates.items()}


def learning_rate_value(lr: ScalarOrSchedule, count: int | jax.Array) -> float:
    """The learning rate `lr` (a float, or a schedule `step -> lr`) of the update that follows
    `count` applied updates, as a float."""
    return float(jnp.asarray(learning_rate_at(lr, jnp.asarray(count, jnp.int32))))
