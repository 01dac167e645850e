"""Tests for `funcdl/train/callbacks.py`, the hooks on their own (fit drives them the same way).

References: Keras's own test cases for EarlyStopping (keras/src/callbacks/early_stopping_test.py:
the loss sequences and the epochs Keras stops at), the CSV read back with the csv module,
TensorBoard's own event reader, and fdl.checkpoint's reader.
"""
import csv
import math

import numpy as np
import pytest

from funcdl import checkpoint
from funcdl.train import callbacks as cb


def drive(callback, values, name="loss", params_of=lambda epoch: {"w": np.float32(epoch)}):
    """Keras's test loop: one epoch per value; stops when `on_epoch_end` returns True (through
    the functions fit calls, which skip the hooks a callback lacks)."""
    state = cb.CallbackState(params_of(-1), (), {name: []}, 0)
    cb.train_begin([callback], state)
    for epoch, value in enumerate(values):
        state.history[name].append(value)
        state.params, state.epoch = params_of(epoch), epoch + 1
        if cb.epoch_end([callback], epoch, state):
            break
    cb.train_end([callback], state)
    return state


@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_early_stopping_stops_where_keras_does(patience):
    stop = cb.EarlyStopping(monitor="loss", patience=patience)
    drive(stop, [10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5])
    assert stop.stopped_epoch == max(patience, 1) + 2  # Keras's expectation


def test_restore_best_returns_the_best_epochs_params_as_keras():
    stop = cb.EarlyStopping(monitor="val_loss", patience=2, restore_best=True)
    state = drive(stop, [0.2, 0.15, 0.1, 0.11, 0.12], name="val_loss")
    assert state.params == {"w": np.float32(2)}  # Keras: the weights of epoch 2
    # also when training ends without a stop
    stop = cb.EarlyStopping(monitor="val_loss", patience=10, restore_best=True)
    assert drive(stop, [0.3, 0.1, 0.2], name="val_loss").params == {"w": np.float32(1)}


def test_min_delta_and_direction():
    # an improvement must beat the best by more than min_delta: 0.95 is not enough after 1.0
    stop = cb.EarlyStopping(monitor="loss", patience=0, min_delta=0.1)
    drive(stop, [1.0, 0.95, 0.5])
    assert (stop.stopped_epoch, stop.best) == (1, 1.0)
    # accuracy-like names are maximised in mode="auto"
    stop = cb.EarlyStopping(monitor="val_accuracy", patience=0)
    drive(stop, [0.5, 0.7, 0.6, 0.9], name="val_accuracy")
    assert (stop.stopped_epoch, stop.best, stop.best_epoch) == (2, 0.7, 1)
    stop = cb.EarlyStopping(monitor="val_accuracy", patience=0, mode="min")
    drive(stop, [0.5, 0.7], name="val_accuracy")
    assert stop.stopped_epoch == 1


def test_early_stopping_is_reset_by_each_fit():
    stop = cb.EarlyStopping(monitor="loss", patience=0)
    drive(stop, [1.0, 2.0])
    assert stop.stopped_epoch == 1
    drive(stop, [5.0, 4.0, 3.0])
    assert (stop.stopped_epoch, stop.best) == (None, 3.0)


def test_csv_logger_rows_read_back_as_the_same_floats(tmp_path):
    path = tmp_path / "log.csv"
    values = [1 / 3, math.pi, 1e-300]
    state = cb.CallbackState({}, (), {"loss": [], "val_loss": []}, 0)
    logger = cb.CSVLogger(path)
    logger.on_train_begin(state)
    for epoch, value in enumerate(values):
        state.history["loss"].append(value)
        state.history["val_loss"].append(2 * value)
        logger.on_epoch_end(epoch, state)
    logger.on_train_end(state)
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["epoch", "loss", "val_loss"]
    assert [(int(r[0]), float(r[1]), float(r[2])) for r in rows[1:]] == [
        (i, v, 2 * v) for i, v in enumerate(values)]


def test_best_checkpoint_holds_the_best_epochs_params(tmp_path):
    path = tmp_path / "best.safetensors"
    best = cb.BestCheckpoint(path, monitor="val_loss")
    drive(best, [0.5, 0.2, 0.3, 0.25], name="val_loss",
          params_of=lambda epoch: {"w": np.full(3, epoch, np.float32)})
    loaded = checkpoint.load(path, {"params": {"w": np.zeros(3, np.float32)}})["params"]
    np.testing.assert_array_equal(loaded["w"], np.full(3, 1, np.float32))
    meta = checkpoint.metadata(path)
    assert (meta["epoch"], float(meta["val_loss"])) == ("1", 0.2)


def test_tensorboard_scalars_read_back_by_tensorboards_reader(tmp_path):
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard (the funcdl[tensorboard] extra) is not installed")
    state = cb.CallbackState({}, (), {"loss": [], "val_loss": []}, 0)
    board = cb.TensorBoard(tmp_path / "tb")
    board.on_train_begin(state)
    for epoch, (loss, val) in enumerate([(1.5, 2.0), (0.75, 1.25), (0.5, 1.0)]):
        state.history["loss"].append(loss)
        state.history["val_loss"].append(val)
        board.on_epoch_end(epoch, state)
    board.on_train_end(state)
    events = accumulator.EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["loss", "val_loss"]
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(0, 1.5), (1, 0.75), (2, 0.5)]
    assert [e.value for e in events.Scalars("val_loss")] == [2.0, 1.25, 1.0]


def test_bad_callbacks_and_arguments_name_them(tmp_path):
    with pytest.raises(TypeError, match=r"`callbacks\[1\]` \(object\) has none of the hook"):
        cb.check_callbacks([cb.CSVLogger(tmp_path / "a.csv"), object()])
    with pytest.raises(TypeError, match=r"`callbacks` must be a list"):
        cb.check_callbacks(cb.CSVLogger(tmp_path / "a.csv"))
    with pytest.raises(ValueError, match=r"`mode` must be 'auto', 'min' or 'max'"):
        cb.EarlyStopping(mode="up")
    with pytest.raises(ValueError, match=r"`patience` must be an int >= 0"):
        cb.EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match=r"`min_delta` must be a number >= 0"):
        cb.EarlyStopping(min_delta=-0.1)
    with pytest.raises(ValueError, match=r"`monitor` 'val_loss' is not in the history"):
        cb.EarlyStopping().on_train_begin(cb.CallbackState({}, (), {"loss": []}, 0))
    with pytest.raises(FileNotFoundError, match=r"the folder of `path`"):
        cb.BestCheckpoint(tmp_path / "no" / "best.safetensors", monitor="loss").on_train_begin(
            cb.CallbackState({}, (), {"loss": []}, 0))


def test_attach_state_puts_the_last_state_on_the_error():
    state = cb.CallbackState({"w": 1}, ("s",), {"loss": [0.5]}, 1)
    error = cb.attach_state(ValueError("boom"), state)
    assert (error.params, error.opt_state, error.history, error.epoch) == (
        {"w": 1}, ("s",), {"loss": [0.5]}, 1)
