"""`history["lr"]` of a `sweep`: each configuration's learning rate per epoch, read as `fit`
reads it (`lr_history.py`: the constant, or the schedule at the count of the epoch's last
update), from that configuration's own optimizer and its own update count (the state's
`count` fields carry the leading axis k)."""
from typing import NamedTuple, Optional

import numpy as np

from funcdl.train.lr_history import LearningRateLog, first_count


class _Count(NamedTuple):
    """A stand-in optimizer state holding one configuration's update count."""
    count: int


def batched_counts(state) -> Optional[np.ndarray]:
    """The first `count` field of a k-axis optimizer state, as int (k,), or None."""
    count = first_count(state)
    return None if count is None else np.asarray(count).astype(np.int64).reshape(-1)


class SweptRates:
    """The `"lr"` names of a sweep and their `(k, n)` values after each compiled call."""

    def __init__(self, optimizers, state_k):
        counts = batched_counts(state_k)
        self.logs = [LearningRateLog(opt, None if counts is None else _Count(int(counts[i])))
                     for i, opt in enumerate(optimizers)]
        self.names = self.logs[0].names

    def rows(self, state_k, n_epochs: int, steps_per_epoch: int) -> dict:
        """`{name: float (k, n_epochs)}` for the epochs of a call that ended at `state_k`."""
        if not self.names:
            return {}
        counts = batched_counts(state_k)
        per_config = [log.rows(None if counts is None else _Count(int(counts[i])), n_epochs,
                               steps_per_epoch) for i, log in enumerate(self.logs)]
        return {name: np.array([rows[name] for rows in per_config], np.float64)
                for name in self.names}
