"""`history["lr"]`: the learning rate each epoch's last update used, read on the host after
each compiled call of `fit`.

The learning rates come from the optimizer's construction (`fdl.optim.learning_rates`): one
`"lr"`, or `"lr/<label>"` per label of a `multi_transform`. A constant is repeated; a schedule
`lr(count)` is evaluated at the count of that update, the number of updates applied before it:

    lr_e = lr(c_e - 1),   c_e = the updates applied when epoch e ends

`c` is read from the optimizer state (the `count` of its transforms: `scale_by_learning_rate`,
Adam, Adagrad, which all count applied updates; a float16 step skipped by the loss scaler
applies none). A call of n epochs of s steps each (a full-batch call runs many) returns only
its final state, so its epochs' counts are `c_e = c_end - (n - 1 - e) s`, exact unless the
loss scaler skipped steps inside the call (then the skips are counted as the first epochs').
An optimizer whose learning rate cannot be read (one made by hand with `Optimizer(init,
update)`, or a schedule without a count in its state) adds no `"lr"` name.
"""
from collections.abc import Mapping
from typing import Dict, Optional, Tuple

import numpy as np

from funcdl.optim.base import learning_rate_at
from funcdl.optim.learning_rates import learning_rate_value, learning_rates
from funcdl.train.sharding import to_host


def first_count(state):
    """The first `count` field (updates applied) in an optimizer state, as stored (an array,
    with a leading axis in a sweep), or None when the state has none."""
    fields = getattr(type(state), "_fields", None)
    if fields is not None and "count" in fields:
        return state.count
    if isinstance(state, Mapping):
        children = list(state.values())
    elif isinstance(state, (tuple, list)):
        children = list(state)
    else:
        return None
    for child in children:
        found = first_count(child)
        if found is not None:
            return found
    return None


def _count(state) -> Optional[int]:
    """The first `count` field of an optimizer state as an int, or None."""
    count = first_count(state)
    return None if count is None else int(to_host(count))


def _values(lr, counts: np.ndarray) -> Tuple[float, ...]:
    """`lr` at each count, as floats: one call on the whole array where the schedule maps an
    array of steps to an array of that shape (as `fdl.optim.schedules` do), else one by one.
    The array is padded to a power of two, so calls of many lengths share a few shapes (each
    new shape compiles the schedule's operations once)."""
    if not callable(lr):
        return (float(lr),) * len(counts)
    size = 1 << max(0, len(counts) - 1).bit_length()
    padded = np.pad(np.asarray(counts, np.int32), (0, size - len(counts)), mode="edge")
    try:
        values = np.asarray(learning_rate_at(lr, padded))
        if values.shape == padded.shape:
            return tuple(float(v) for v in values[:len(counts)])
    except Exception:  # noqa: BLE001 - a schedule written for scalars only: one by one below
        pass
    return tuple(learning_rate_value(lr, int(c)) for c in counts)


class LearningRateLog:
    """The `"lr"` names of one `fit` call and their values after each compiled call.

    Args:
      optimizer: the `fdl.optim` optimizer `fit` trains with.
      opt_state: its state at the start (to check that a schedule's count can be read).
    """

    def __init__(self, optimizer, opt_state):
        rates = learning_rates(optimizer)
        if any(callable(lr) for lr in rates.values()) and _count(opt_state) is None:
            rates = {}
        self.rates: Dict[str, object] = rates
        self.names = list(rates)

    def rows(self, opt_state, n_epochs: int, steps_per_epoch: int, later_steps: int = 0):
        """`{name: (lr of each of the n_epochs epochs,)}` for epochs ending `later_steps`
        updates (the steps of a partial epoch after them) before the state `opt_state`."""
        if not self.names or n_epochs <= 0:
            return {}
        counts = None
        if any(callable(lr) for lr in self.rates.values()):
            end = _count(opt_state) - later_steps
            back = (n_epochs - 1 - np.arange(n_epochs)) * steps_per_epoch
            counts = np.maximum(end - back - 1, 0)
        return {name: _values(lr, counts if callable(lr) else np.zeros(n_epochs))
                for name, lr in self.rates.items()}
