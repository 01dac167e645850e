"""Callbacks: host-side hooks that `fit` calls between its compiled calls (Keras's semantics).

A callback is any object with one or more of

    on_train_begin(state)           before the first epoch
    on_epoch_end(epoch, state)      after each epoch; returning True stops training there
    on_train_end(state)             after the last epoch (also after an early stop)

`epoch` is the index of the epoch just finished, from 0 (from `initial_epoch` when given).
`state` is a `CallbackState`: `.params`, `.opt_state`, `.history` (already holding this epoch's
values, `{name: [float, ...]}`) and `.epoch` (the epochs done). A callback may replace
`state.params` (`EarlyStopping(restore_best=True)` does); `fit` returns the params as the
callbacks leave them after `on_train_end`. With callbacks, each compiled call of `fit` runs one
epoch, so the hooks see every epoch; without them nothing changes.

A callback that raises stops `fit`: the exception propagates with `.params`, `.opt_state`,
`.history` and `.epoch` attached (the last state, as a NaN stop's `FloatingPointError`).

In a run of several processes (`jax.distributed`), every process calls the hooks with the same
history (the mesh's values are global), so `EarlyStopping` stops them all at the same epoch;
the callbacks that write files (`BestCheckpoint`, `CSVLogger`, `TensorBoard`) write on process
0 only, as Lightning's `rank_zero_only` loggers.
"""
import csv
import os
import time
from typing import Dict, List, Optional

from funcdl import checkpoint as checkpoint_files
from funcdl.train.sharding import is_main_process, to_host

HOOKS = ("on_train_begin", "on_epoch_end", "on_train_end")

# Names whose better values are larger (mode="auto"); "loss", errors and the rest are smaller.
_LARGER_IS_BETTER = ("acc", "accuracy", "r2", "auc", "precision", "recall", "f1")


class CallbackState:
    """What the hooks see (and may change): `params`, `opt_state`, `history`, `epoch`.

    Attributes:
      params, opt_state: the state after the epochs done (jax arrays, as `fit` returns them).
      history: `{name: [float per epoch]}`, the epochs done so far, as `fit` returns it.
      epoch: the number of epochs done, counting from 0 (or from `initial_epoch`).
    """
    __slots__ = ("params", "opt_state", "history", "epoch")

    def __init__(self, params, opt_state, history: Dict[str, List[float]], epoch: int):
        self.params, self.opt_state, self.history, self.epoch = params, opt_state, history, epoch

    def __repr__(self):
        return f"CallbackState(epoch={self.epoch}, history names={list(self.history)})"


def check_callbacks(callbacks) -> list:
    """`callbacks` as a list; TypeError naming the entry without any of the hook methods."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"`callbacks` must be a list of callback objects, got "
                        f"{type(callbacks).__name__}")
    for i, callback in enumerate(callbacks):
        if not any(callable(getattr(callback, hook, None)) for hook in HOOKS):
            raise TypeError(f"`callbacks[{i}]` ({type(callback).__name__}) has none of the "
                            f"hook methods {', '.join(HOOKS)}")
    return list(callbacks)


def attach_state(error: BaseException, state: CallbackState) -> BaseException:
    """`error` with the last state attached (`.params`, `.opt_state`, `.history`, `.epoch`)."""
    try:
        error.params, error.opt_state = state.params, state.opt_state
        error.history, error.epoch = state.history, state.epoch
        return error
    except AttributeError:  # an exception type with __slots__: wrap it
        wrapped = RuntimeError(f"a callback raised {type(error).__name__}: {error}")
        return attach_state(wrapped, state)


def train_begin(callbacks, state: CallbackState) -> None:
    for callback in callbacks:
        hook = getattr(callback, "on_train_begin", None)
        if callable(hook):
            hook(state)


def epoch_end(callbacks, epoch: int, state: CallbackState) -> bool:
    """Run every callback's `on_epoch_end` (all of them, even after one asks to stop);
    True when one of them returned True."""
    stop = False
    for callback in callbacks:
        hook = getattr(callback, "on_epoch_end", None)
        if callable(hook) and hook(epoch, state) is True:
            stop = True
    return stop


def train_end(callbacks, state: CallbackState) -> None:
    for callback in callbacks:
        hook = getattr(callback, "on_train_end", None)
        if callable(hook):
            hook(state)


class _Monitor:
    """A monitored history name and its direction (Keras's MonitorCallback)."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0):
        if not isinstance(monitor, str):
            raise TypeError(f"`monitor` must be a history name (a str), got {monitor!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"`mode` must be 'auto', 'min' or 'max', got {mode!r}")
        if not (isinstance(min_delta, (int, float)) and min_delta >= 0):
            raise ValueError(f"`min_delta` must be a number >= 0, got {min_delta!r}")
        self.monitor, self.mode, self.min_delta = monitor, mode, float(min_delta)

    def direction(self) -> str:
        if self.mode != "auto":
            return self.mode
        name = self.monitor.removeprefix("val_").lower()
        return "max" if any(part in _LARGER_IS_BETTER for part in name.split("_")) else "min"

    def check_name(self, history) -> None:
        if self.monitor not in history:
            raise ValueError(f"`monitor` {self.monitor!r} is not in the history; it has "
                             f"{sorted(history)} (validation values need `validation=`)")

    def improves(self, value: float, reference: Optional[float]) -> bool:
        """Keras's `_is_improvement`: better than `reference` by more than `min_delta`."""
        if reference is None:
            return True
        if self.direction() == "max":
            return value - self.min_delta > reference
        return value + self.min_delta < reference


class EarlyStopping:
    """Stop when the monitored value has not improved for `patience` epochs (Keras's rule).

    Args:
      monitor: the history name to watch (`"val_loss"`, `"loss"`, `"val_accuracy"`, ...).
      patience: epochs without improvement after which training stops.
      min_delta: an improvement must beat the best value by more than this.
      mode: "min", "max" or "auto" (max for names like accuracy, r2, auc; min otherwise).
      restore_best: when training ends (stopped or not), set `state.params` to those of the
        best epoch, so `fit` returns them.

    The rule, per epoch (Keras's `EarlyStopping`): `wait += 1`; if the value improves on the
    best (by more than `min_delta`), it becomes the best and `wait = 0`; otherwise, once
    `wait >= patience` (and after the first epoch), training stops. `best`, `best_epoch` and
    `stopped_epoch` (None when it did not stop) are readable afterwards.

    Raises:
      ValueError: a bad `mode`/`patience`/`min_delta`, or (at the start of training) a
        `monitor` that is not a history name.

    Examples:
        >>> from funcdl.train.callbacks import CallbackState, EarlyStopping
        >>> stop = EarlyStopping(monitor="loss", patience=1)
        >>> state = CallbackState(params={}, opt_state=(), history={"loss": []}, epoch=0)
        >>> stop.on_train_begin(state)
        >>> for epoch, loss in enumerate([3.0, 2.0, 2.5, 2.4]):
        ...     state.history["loss"].append(loss)
        ...     if stop.on_epoch_end(epoch, state):
        ...         break
        >>> stop.stopped_epoch, stop.best, stop.best_epoch
        (2, 2.0, 1)
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 mode: str = "auto", restore_best: bool = False):
        self._monitor = _Monitor(monitor, mode, min_delta)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"`patience` must be an int >= 0, got {patience!r}")
        if not isinstance(restore_best, bool):
            raise TypeError(f"`restore_best` must be a bool, got {restore_best!r}")
        self.monitor, self.patience, self.restore_best = monitor, patience, restore_best
        self.on_train_begin(None)

    def on_train_begin(self, state) -> None:
        if state is not None:
            self._monitor.check_name(state.history)
        self.wait, self.best, self.best_epoch = 0, None, None
        self.best_params, self.stopped_epoch = None, None
        self._first = None

    def on_epoch_end(self, epoch: int, state) -> bool:
        value = state.history[self.monitor][-1]
        if self._first is None:
            self._first = epoch
        if self.restore_best and self.best_params is None:
            self.best_params = state.params
        self.wait += 1
        if self._monitor.improves(value, self.best):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.best_params = state.params
            return False
        if self.wait >= self.patience and epoch > self._first:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, state) -> None:
        if self.restore_best and self.best_params is not None:
            state.params = self.best_params


class BestCheckpoint:
    """Save `{"params": state.params}` to `path` with `fdl.checkpoint` whenever the monitored
    value improves (Keras's `ModelCheckpoint(save_best_only=True)`).

    The file's metadata holds `"epoch"` (the epoch's index, from 0) and the monitored value
    (`{monitor: repr(value)}`); load the params with
    `fdl.checkpoint.load(path, {"params": like})["params"]`. Written atomically, so a crash
    leaves the previous best.

    Args:
      path: the file to write (its folder must exist: checked when training begins).
      monitor, mode: as `EarlyStopping`'s.
    """

    def __init__(self, path, monitor: str = "val_loss", mode: str = "auto"):
        self.path = os.fspath(path)
        self._monitor = _Monitor(monitor, mode)
        self.monitor, self.best, self.best_epoch = monitor, None, None

    def on_train_begin(self, state) -> None:
        self._monitor.check_name(state.history)
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"BestCheckpoint: the folder of `path` {self.path!r} does "
                                    "not exist")
        self.best, self.best_epoch = None, None

    def on_epoch_end(self, epoch: int, state) -> bool:
        value = state.history[self.monitor][-1]
        if self._monitor.improves(value, self.best):
            self.best, self.best_epoch = value, epoch
            if is_main_process():
                checkpoint_files.save(self.path, {"params": to_host(state.params)},
                                      metadata={"epoch": str(epoch), self.monitor: repr(value)})
        return False


class CSVLogger:
    """One CSV row per epoch: a header `epoch` and the history names, then the epoch's index
    and its values at full precision (`repr`, so they read back as the same floats).

    Args:
      path: the file, written anew when training begins and flushed after every row.
      separator: the field separator.

    Examples:
        >>> import os, tempfile
        >>> from funcdl.train.callbacks import CallbackState, CSVLogger
        >>> path = os.path.join(tempfile.mkdtemp(), "log.csv")
        >>> logger = CSVLogger(path)
        >>> state = CallbackState({}, (), {"loss": [], "val_loss": []}, 0)
        >>> logger.on_train_begin(state)
        >>> state.history["loss"].append(0.5); state.history["val_loss"].append(0.75)
        >>> logger.on_epoch_end(0, state)
        False
        >>> logger.on_train_end(state)
        >>> print(open(path).read().strip())
        epoch,loss,val_loss
        0,0.5,0.75
    """

    def __init__(self, path, separator: str = ","):
        self.path, self.separator = os.fspath(path), separator
        self._file = None

    def on_train_begin(self, state) -> None:
        self.names = list(state.history)
        if not is_main_process():
            return
        self._file = open(self.path, "w", newline="")
        self._writer = csv.writer(self._file, delimiter=self.separator)
        self._writer.writerow(["epoch", *self.names])
        self._file.flush()

    def on_epoch_end(self, epoch: int, state) -> bool:
        if self._file is None:  # not process 0
            return False
        self._writer.writerow([epoch, *(repr(float(state.history[name][-1]))
                                        for name in self.names)])
        self._file.flush()
        return False

    def on_train_end(self, state) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorBoard:
    """Scalars for TensorBoard: one per history name (tag = the name), step = the epoch index.

    The event files go to `log_dir` (created if needed) through the `tensorboard` package, an
    optional dependency: `pip install "funcdl[tensorboard]"`. View them with
    `tensorboard --logdir LOG_DIR`.

    Raises:
      ImportError: the `tensorboard` package is not installed (when training begins).
    """

    def __init__(self, log_dir):
        self.log_dir = os.fspath(log_dir)
        self._writer = None

    def on_train_begin(self, state) -> None:
        try:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError as error:
            raise ImportError("TensorBoard: the `tensorboard` package is needed to write "
                              "event files: pip install \"funcdl[tensorboard]\"") from error
        if not is_main_process():
            return
        os.makedirs(self.log_dir, exist_ok=True)
        self._writer = EventFileWriter(self.log_dir)

    def on_epoch_end(self, epoch: int, state) -> bool:
        if self._writer is None:  # not process 0
            return False
        from tensorboard.compat.proto import event_pb2, summary_pb2
        values = [summary_pb2.Summary.Value(tag=name, simple_value=float(values[-1]))
                  for name, values in state.history.items() if values]
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=epoch,
                                               summary=summary_pb2.Summary(value=values)))
        self._writer.flush()
        return False

    def on_train_end(self, state) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
