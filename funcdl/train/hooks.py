"""`fit`'s callbacks (`callbacks.py`) around its compiled calls, on the host.

`Hooks(callbacks)` holds the callbacks of one `fit` call and the one `CallbackState` they all
see: `begin` before the first epoch, `epoch_end` after each epoch (with callbacks, each
compiled call runs one epoch), `end` after the last one or an early stop (Keras calls
`on_train_end` then too). An exception, a NaN stop or Ctrl-C ends `fit` without `on_train_end`,
as in Keras (the loggers flush every epoch, so their files are complete up to the last one).

A callback that raises stops `fit`: its exception propagates with `.params`, `.opt_state`,
`.history`, `.epoch` of the last state (`fit`'s state after the last epoch, before the
callbacks changed anything); after an epoch, `loop.py` writes the checkpoint first (a raise
in `on_train_begin` or `on_train_end` writes nothing: the file already holds that state, or
nothing was trained). A callback may replace
`state.params` or `state.opt_state` (same structure): training continues from them, and
`fit` returns them as the callbacks leave them after `on_train_end`.
"""
from typing import Callable, Optional

from funcdl.train.callbacks import (CallbackState, attach_state, epoch_end, train_begin,
                                    train_end)


def _lists(history) -> dict:
    return {name: list(values) for name, values in history.items()}


class Hooks:
    """The callbacks of one `fit` call (a list, possibly empty: then `bool(hooks)` is False)."""

    def __init__(self, callbacks: list):
        self.callbacks = list(callbacks)
        self.state: Optional[CallbackState] = None

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    def _run(self, hook, *args, pos, save: Optional[Callable] = None):
        try:
            return hook(self.callbacks, *args, self.state)
        except Exception as error:
            if save is not None:
                save()
            last = CallbackState(pos.params, pos.opt_state, _lists(pos.history), pos.done)
            attached = attach_state(error, last)
            if attached is error:
                raise
            raise attached from error

    def begin(self, pos) -> None:
        """`on_train_begin` with the starting state (the history of a resumed run included)."""
        self.state = CallbackState(pos.params, pos.opt_state, _lists(pos.history), pos.done)
        self._run(train_begin, pos=pos)

    def epoch_end(self, pos, save: Optional[Callable] = None):
        """`on_epoch_end(pos.done - 1, state)` after epoch `pos.done - 1`; returns `(pos with
        the params and optimizer state the callbacks left, stop)`. `save` (or None) writes the
        checkpoint of `pos` before a callback's exception propagates."""
        state = self.state
        state.params, state.opt_state, state.epoch = pos.params, pos.opt_state, pos.done
        for name, values in pos.history.items():
            have = state.history.setdefault(name, [])
            have.extend(values[len(have):])
        stop = self._run(epoch_end, pos.done - 1, pos=pos, save=save)
        if state.params is not pos.params or state.opt_state is not pos.opt_state:
            pos = pos._replace(params=state.params, opt_state=state.opt_state)
        return pos, stop

    def end(self, pos):
        """`on_train_end`; returns `(params, opt_state)` as the callbacks leave them."""
        state = self.state
        state.params, state.opt_state, state.epoch = pos.params, pos.opt_state, pos.done
        self._run(train_end, pos=pos)
        return state.params, state.opt_state
