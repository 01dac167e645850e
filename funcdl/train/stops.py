"""How `fit` stops early and hands back what it trained: a NaN stop and Ctrl-C.

Both carry the state `fit` had reached, so nothing trained is lost: `.params`, `.opt_state`,
`.history` (the whole epochs done, one value per epoch and name) and `.epoch` (the epochs done
since epoch 0). With `checkpoint`, the same state is in the file before the exception is raised.
"""
from typing import Any


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (a `KeyboardInterrupt`) during `fit`: the state after the last completed compiled
    call. A subclass of `KeyboardInterrupt`, so code that catches that still does::

        try:
            params, opt_state, history = fdl.train.fit(...)
        except fdl.train.Interrupted as stop:
            params, opt_state, history = stop.params, stop.opt_state, stop.history
    """

    def __init__(self, params: Any, opt_state: Any, history: dict, epoch: int,
                 checkpoint: str | None = None):
        where = "" if checkpoint is None else f", also written to {checkpoint!r}"
        super().__init__(f"fit interrupted after {epoch} epochs (counted from 0); `.params`, "
                         f"`.opt_state`, `.history` hold the state at that point{where}")
        self.params, self.opt_state, self.history, self.epoch = params, opt_state, history, epoch


def diverged(params, opt_state, history, epoch: int, step: int, loss_value, checkpoint=None,
             resumes_at_epoch: bool = False):
    """The `FloatingPointError` of a NaN stop at step `step` of epoch `epoch`: `.params`,
    `.opt_state` are the state before that step; `.history` the whole epochs before it.
    resumes_at_epoch: the checkpoint holds the start of epoch `epoch` (streamed data)."""
    where = ("" if checkpoint is None else
             f"; the start of epoch {epoch} is in {checkpoint!r} (streamed data resumes at an "
             "epoch's start), and fit(..., resume=True) runs that epoch again"
             if resumes_at_epoch else
             f"; the same state and its position are in {checkpoint!r}, and fit(..., "
             "resume=True) continues from that step")
    error = FloatingPointError(
        f"fit: a non-finite training step (its loss {loss_value}, or its gradient, update, new "
        f"params or optimizer state) at epoch {epoch}, step {step} (both counted from 0); "
        f"training stopped there. The error's `.params`, `.opt_state`, `.history` hold the "
        f"last finite state (before that step; {epoch} whole epochs in `.history`){where}")
    error.params, error.opt_state, error.history = params, opt_state, history
    error.epoch, error.step = epoch, step
    return error
