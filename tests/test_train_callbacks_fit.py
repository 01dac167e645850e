"""Callbacks through `fdl.train.fit`, and `history["lr"]`.

References: Keras's EarlyStopping rule written out by hand over a history recorded without
callbacks; `fit` of exactly the epochs a callback let run (bitwise: with callbacks each call runs
one epoch of the same program); the files read back with the csv module, fdl.checkpoint's reader
and TensorBoard's own event reader; the learning-rate schedules written out in closed form with
NumPy at the count of each epoch's last update.
"""
import csv
import math
import pathlib
import re

import jax
import numpy as np
import pytest

from funcdl import checkpoint, optim, train
from funcdl.train import loop
from funcdl.train.callbacks import BestCheckpoint, CSVLogger, EarlyStopping, TensorBoard
from train_reference import (BATCH, LOSS, MODEL, N_ROWS, PARAMS, X, Y, assert_bitwise_equal,
                             counting_compilations)

ROOT = pathlib.Path(__file__).resolve().parent.parent
KEY = jax.random.key(3)
VALIDATION = (X[:10] * 1.5, Y[:10])
SGD = optim.sgd(0.1, momentum=0.9)  # noisy enough that val_loss goes up and down
EPOCHS = 12
STEPS = math.ceil(N_ROWS / BATCH)  # 4 steps per epoch


def fit(epochs, opt=SGD, params=PARAMS, x=X, **options):
    options = {"batch_size": BATCH, "key": KEY, "validation": VALIDATION, **options}
    return train.fit(MODEL, params, LOSS, opt, x, Y, epochs=epochs, progress=False, **options)


@pytest.fixture(scope="module")
def recorded():
    """The run without callbacks: `(params, opt_state, history)` after EPOCHS epochs."""
    return fit(EPOCHS)


# ---- EarlyStopping: Keras's rule written out --------------------------------------------------
def keras_early_stopping(values, patience, min_delta, mode):
    """keras.callbacks.EarlyStopping.on_epoch_end over `values`, one per epoch from 0:
    `(stopped_epoch or None, best_epoch)`."""
    best, best_epoch, wait = (math.inf if mode == "min" else -math.inf), None, 0
    for epoch, value in enumerate(values):
        wait += 1
        better = (value + min_delta < best) if mode == "min" else (value - min_delta > best)
        if better:
            best, best_epoch, wait = value, epoch, 0
            continue
        if wait >= patience and epoch > 0:
            return epoch, best_epoch
    return None, best_epoch


@pytest.mark.parametrize("monitor, patience, min_delta, mode, mode_of_rule", [
    ("val_loss", 0, 0.0, "auto", "min"),
    ("val_loss", 3, 0.0, "min", "min"),
    ("loss", 1, 0.05, "auto", "min"),
    ("loss", 2, 0.0, "max", "max"),
    ("loss", 20, 0.0, "auto", "min"),  # never stops: restore_best still returns the best epoch
])
def test_early_stopping_follows_keras_rule_and_restores_the_best_params(
        recorded, monitor, patience, min_delta, mode, mode_of_rule):
    stopped, best = keras_early_stopping(recorded[2][monitor], patience, min_delta, mode_of_rule)
    assert (stopped is None) == (patience == 20)  # the cases do what their comments say
    stop = EarlyStopping(monitor=monitor, patience=patience, min_delta=min_delta, mode=mode,
                         restore_best=True)
    params, opt_state, history = fit(EPOCHS, callbacks=[stop])
    ran = EPOCHS if stopped is None else stopped + 1
    assert (stop.stopped_epoch, stop.best_epoch) == (stopped, best)
    # the history holds exactly the epochs run, equal to the uninterrupted run's
    assert history == {name: values[:ran] for name, values in recorded[2].items()}
    # the params are the best epoch's: those of a fit of exactly best + 1 epochs
    assert_bitwise_equal(params, fit(best + 1)[0])
    # the optimizer state is the last epoch's (Keras restores the weights only)
    assert_bitwise_equal(opt_state, fit(ran)[1])


def test_early_stopping_without_restore_returns_the_last_epochs_params(recorded):
    stopped, _ = keras_early_stopping(recorded[2]["val_loss"], 0, 0.0, "min")
    params, opt_state, history = fit(EPOCHS, callbacks=[EarlyStopping(patience=0)])
    assert len(history["loss"]) == stopped + 1
    assert_bitwise_equal((params, opt_state), fit(stopped + 1)[:2])


# ---- BestCheckpoint, CSVLogger, TensorBoard -----------------------------------------------------
def test_best_checkpoint_holds_the_best_epochs_params(recorded, tmp_path):
    path = tmp_path / "best.safetensors"
    params, _, history = fit(EPOCHS, callbacks=[BestCheckpoint(path, monitor="val_loss")])
    assert history == recorded[2]
    values = recorded[2]["val_loss"]
    best = values.index(min(values))  # the first epoch of the smallest value (strictly better)
    stored = checkpoint.load(path, {"params": PARAMS})["params"]
    assert_bitwise_equal(stored, fit(best + 1)[0])
    assert checkpoint.metadata(path)["epoch"] == str(best)
    assert float(checkpoint.metadata(path)["val_loss"]) == values[best]


def read_csv(path):
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    return rows[0], rows[1:]


def test_csv_logger_file_equals_the_history(recorded, tmp_path):
    path = tmp_path / "log.csv"
    _, _, history = fit(EPOCHS, callbacks=[CSVLogger(path)])
    header, rows = read_csv(path)
    assert header == ["epoch", "loss", "val_loss", "lr"] == ["epoch", *history]
    assert [int(row[0]) for row in rows] == list(range(EPOCHS))
    assert {name: [float(row[i + 1]) for row in rows] for i, name in enumerate(history)} \
        == history == recorded[2]


def test_csv_logger_numbers_a_continuation_from_initial_epoch(recorded, tmp_path):
    path = tmp_path / "log.csv"
    params, opt_state, _ = fit(3)
    _, _, history = fit(5, params=params, opt_state=opt_state, initial_epoch=3,
                        callbacks=[CSVLogger(path)])
    _, rows = read_csv(path)
    assert [int(row[0]) for row in rows] == [3, 4]
    assert [float(row[1]) for row in rows] == history["loss"] == recorded[2]["loss"][3:5]


def test_tensorboard_through_fit_read_back_by_tensorboards_reader(recorded, tmp_path):
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard (the funcdl[tensorboard] extra) is not installed")
    _, _, history = fit(4, callbacks=[TensorBoard(tmp_path / "tb")])
    events = accumulator.EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == sorted(history) == ["loss", "lr", "val_loss"]
    for name, values in history.items():
        assert [(e.step, e.value) for e in events.Scalars(name)] == \
            [(epoch, float(np.float32(v))) for epoch, v in enumerate(values)]


def test_the_file_writing_callbacks_write_on_process_0_only(recorded, tmp_path, monkeypatch):
    # as Lightning's rank_zero_only: every other process of a multi-process run trains alike
    # (the same history) and writes nothing; EarlyStopping stops it at the same epoch
    monkeypatch.setattr(jax, "process_index", lambda *args, **kwargs: 1)
    writers = [BestCheckpoint(tmp_path / "best.safetensors"), CSVLogger(tmp_path / "log.csv"),
               EarlyStopping(patience=2)]
    try:
        import tensorboard  # noqa: F401
        writers.append(TensorBoard(tmp_path / "tb"))
    except ImportError:
        pass
    _, _, history = fit(EPOCHS, callbacks=writers)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    _, _, alone = fit(EPOCHS, callbacks=[EarlyStopping(patience=2)])
    assert history == alone


# ---- any object with the hooks ------------------------------------------------------------------
class Recorder:
    """Records what each hook sees; stops after epoch `stop_at` (None: never)."""

    def __init__(self, stop_at=None):
        self.stop_at, self.seen, self.calls = stop_at, [], []

    def on_train_begin(self, state):
        self.calls.append(("begin", state.epoch, {k: list(v) for k, v in state.history.items()}))

    def on_epoch_end(self, epoch, state):
        self.seen.append((epoch, state.epoch, len(state.history["loss"]), state.params))
        return epoch == self.stop_at

    def on_train_end(self, state):
        self.calls.append(("end", state.epoch, len(state.history["loss"])))


def test_an_object_callback_stopping_at_epoch_2(recorded):
    recorder = Recorder(stop_at=2)
    params, opt_state, history = fit(EPOCHS, callbacks=[recorder])
    assert [(epoch, done, length) for epoch, done, length, _ in recorder.seen] == \
        [(0, 1, 1), (1, 2, 2), (2, 3, 3)]
    assert recorder.calls == [("begin", 0, {"loss": [], "val_loss": [], "lr": []}),
                              ("end", 3, 3)]
    assert history == {name: values[:3] for name, values in recorded[2].items()}
    assert_bitwise_equal((params, opt_state), fit(3)[:2])
    assert_bitwise_equal(recorder.seen[1][3], fit(2)[0])  # state.params after each epoch


def test_only_on_epoch_end_is_enough_and_a_full_batch_run_sees_every_epoch(monkeypatch):
    """With callbacks every compiled call runs one epoch; without them a full-batch run still
    runs many epochs per call (nothing costs more)."""
    calls = []
    original = loop.run_epochs
    monkeypatch.setattr(loop, "run_epochs", lambda *a, **k: calls.append(1) or original(*a, **k))

    class Epochs:
        def __init__(self):
            self.epochs = []

        def on_epoch_end(self, epoch, state):
            self.epochs.append(epoch)

    seen = Epochs()
    loop._seconds_per_epoch.clear()
    plain = fit(40, batch_size=None)
    plain_calls, calls[:] = len(calls), []
    with_callback = fit(40, batch_size=None, callbacks=[seen])
    assert seen.epochs == list(range(40)) and len(calls) == 40
    assert plain_calls < 40
    assert_bitwise_equal(with_callback[:2], plain[:2])
    assert with_callback[2] == plain[2]


def test_a_callback_may_replace_the_params_and_training_continues_from_them(recorded):
    class Reset:
        def on_epoch_end(self, epoch, state):
            if epoch == 1:
                state.params = PARAMS

    params, opt_state, _ = fit(3, callbacks=[Reset()])
    after_two = fit(2)
    reference = fit(3, opt_state=after_two[1], initial_epoch=2)
    assert_bitwise_equal((params, opt_state), reference[:2])


def test_a_raising_callback_stops_fit_with_the_last_state_and_the_checkpoint_written(
        recorded, tmp_path):
    class Broken:
        def on_epoch_end(self, epoch, state):
            if epoch == 1:
                raise RuntimeError("the disk is full")

    path = tmp_path / "run.safetensors"
    with pytest.raises(RuntimeError, match="the disk is full") as caught:
        fit(EPOCHS, callbacks=[Broken()], checkpoint=path, checkpoint_every=5)
    error = caught.value
    two = fit(2)
    assert error.epoch == 2
    assert error.history == two[2] == {name: v[:2] for name, v in recorded[2].items()}
    assert_bitwise_equal((error.params, error.opt_state), two[:2])
    assert checkpoint.metadata(path)["epochs_done"] == "2"
    # the callbacks' own state is not in the file; resuming continues the run exactly
    resumed = fit(EPOCHS, checkpoint=path, resume=True)
    assert_bitwise_equal(resumed[:2], recorded[:2])
    assert resumed[2] == recorded[2]


def test_an_early_stop_writes_the_checkpoint_and_resume_continues(recorded, tmp_path):
    path = tmp_path / "run.safetensors"
    fit(EPOCHS, callbacks=[Recorder(stop_at=2)], checkpoint=path, checkpoint_every=5)
    assert checkpoint.metadata(path)["epochs_done"] == "3"
    recorder = Recorder()
    resumed = fit(EPOCHS, checkpoint=path, resume=True, callbacks=[recorder])
    assert recorder.calls[0][1:] == (3, {name: v[:3] for name, v in recorded[2].items()})
    assert [epoch for epoch, *_ in recorder.seen] == list(range(3, EPOCHS))
    assert_bitwise_equal(resumed[:2], recorded[:2])
    assert resumed[2] == recorded[2]


def test_on_train_end_is_not_called_after_a_nan_stop():
    x = X.copy()
    x[20, 0] = np.nan  # step 1 of every epoch without shuffling
    recorder = Recorder()
    with pytest.raises(FloatingPointError):
        fit(3, x=x, shuffle=False, callbacks=[recorder])
    assert [call[0] for call in recorder.calls] == ["begin"] and recorder.seen == []


def test_bad_callbacks_are_named_before_anything_compiles(tmp_path):
    with counting_compilations() as compiled:
        with pytest.raises(TypeError, match=r"`callbacks\[1\]` \(object\) has none of the hook "
                                            r"methods on_train_begin, on_epoch_end, on_train_end"):
            fit(2, callbacks=[CSVLogger(tmp_path / "a.csv"), object()])
        with pytest.raises(TypeError, match=r"`callbacks` must be a list of callback objects, "
                                            r"got EarlyStopping"):
            fit(2, callbacks=EarlyStopping())
    assert compiled == []
    with pytest.raises(ValueError, match=r"`monitor` 'val_loss' is not in the history; it has "
                                         r"\['loss', 'lr'\]") as caught:
        fit(2, validation=None, callbacks=[EarlyStopping()])
    assert caught.value.epoch == 0 and caught.value.history == {"loss": [], "lr": []}


# ---- history["lr"] ---------------------------------------------------------------------------
def test_a_constant_lr_is_repeated(recorded):
    assert recorded[2]["lr"] == [0.1] * EPOCHS
    assert list(recorded[2]) == ["loss", "val_loss", "lr"]


def cosine(t, lr=0.2, total=30, eta_min=0.01):
    return eta_min + (lr - eta_min) * (1 + np.cos(np.pi * t / total)) / 2


@pytest.mark.slow  # ~3 s: the slow tier (`make test-slow`, run by CI)
def test_a_schedule_at_each_epochs_last_update():
    schedule = optim.schedules.cosine_decay(0.2, total_steps=30, eta_min=0.01)
    _, _, history = fit(6, opt=optim.adam(schedule), validation=None)
    last_updates = np.arange(1, 7) * STEPS - 1  # 3, 7, 11, ...: the updates before each last
    np.testing.assert_allclose(history["lr"], cosine(last_updates), rtol=1e-6, atol=1e-7)
    _, _, history = fit(5, opt=optim.sgd(optim.schedules.step_decay(0.5, 6, 0.5)),
                        validation=None)
    assert history["lr"] == [0.5 * 0.5 ** (t // 6) for t in np.arange(1, 6) * STEPS - 1]


def test_a_schedule_in_full_batch_calls_of_many_epochs_and_a_continuation():
    schedule = optim.schedules.cosine_decay(0.2, total_steps=30, eta_min=0.01)
    params, opt_state, history = fit(40, opt=optim.sgd(schedule), batch_size=None)
    np.testing.assert_allclose(history["lr"], cosine(np.arange(40)), rtol=1e-6, atol=1e-7)
    # a continuation counts on from the optimizer state's count
    _, _, more = fit(45, opt=optim.sgd(schedule), params=params, opt_state=opt_state,
                     initial_epoch=40, batch_size=None)
    np.testing.assert_allclose(more["lr"], cosine(np.arange(40, 45)), rtol=1e-6, atol=1e-7)


def test_a_second_fit_with_a_schedule_compiles_nothing():
    opt = optim.sgd(optim.schedules.cosine_decay(0.2, total_steps=30, eta_min=0.01))
    first = fit(40, opt=opt, batch_size=None)
    with counting_compilations() as compiled:
        second = fit(40, opt=opt, batch_size=None)
    assert compiled == [] and second[2] == first[2]


@pytest.mark.slow  # ~5 s: the slow tier (`make test-slow`, run by CI)
def test_multi_transform_has_one_lr_per_label_and_freeze_one():
    schedule = optim.schedules.step_decay(0.05, 5, 0.1)
    labels = ["body", "body", "head"]
    multi = optim.multi_transform({"body": optim.sgd(0.1), "head": optim.adam(schedule)},
                                  labels)
    _, _, history = fit(3, opt=multi, validation=None)
    assert list(history) == ["loss", "lr/body", "lr/head"]
    assert history["lr/body"] == [0.1] * 3
    np.testing.assert_allclose(history["lr/head"],
                               [0.05 * 0.1 ** (t // 5) for t in np.arange(1, 4) * STEPS - 1],
                               rtol=1e-6)
    frozen = optim.freeze(optim.adam(0.01), [False, False, True])
    assert fit(2, opt=frozen, validation=None)[2]["lr"] == [0.01, 0.01]


def test_a_hand_made_optimizer_has_no_lr_and_metrics_keep_their_names():
    inner = optim.sgd(0.1)
    hand_made = optim.Optimizer(lambda p: inner.init(p),
                                lambda g, s, p=None: inner.update(g, s, p))
    _, _, history = fit(2, opt=hand_made, metrics={"mae": lambda p, t: abs(p - t).mean()})
    assert list(history) == ["loss", "mae", "val_loss", "val_mae"]


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_lr_round_trips_through_resume(tmp_path):
    path = tmp_path / "run.safetensors"
    opt = optim.adam(optim.schedules.cosine_decay(0.2, total_steps=30))
    fit(2, opt=opt, checkpoint=path)
    resumed = fit(4, opt=opt, checkpoint=path, resume=True)
    full = fit(4, opt=opt)
    assert resumed[2] == full[2] and len(full[2]["lr"]) == 4
    # a file without "lr" (an optimizer made by hand): NaN for its epochs; the other way
    # round, the file's "lr" is dropped
    adam = optim.adam(0.01)
    hand_made = optim.Optimizer(lambda p: adam.init(p), lambda g, s, p=None: adam.update(g, s, p))
    fit(2, opt=hand_made, checkpoint=tmp_path / "hand.safetensors")
    resumed = fit(3, opt=adam, checkpoint=tmp_path / "hand.safetensors", resume=True)
    np.testing.assert_array_equal(resumed[2]["lr"], [np.nan, np.nan, 0.01])
    assert list(resumed[2]) == ["loss", "val_loss", "lr"]
    fit(2, opt=adam, checkpoint=tmp_path / "adam.safetensors")
    resumed = fit(3, opt=hand_made, checkpoint=tmp_path / "adam.safetensors", resume=True)
    assert list(resumed[2]) == ["loss", "val_loss"] and len(resumed[2]["loss"]) == 3


# ---- the guide ---------------------------------------------------------------------------------
@pytest.mark.slow  # ~6 s: the slow tier (`make test-slow`, run by CI)
def test_every_python_block_of_the_callbacks_guide_runs_alone():
    guide = ROOT / "docs" / "guides" / "callbacks.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(), re.S)
    assert len(blocks) >= 2
    for code in blocks:
        exec(compile(code, str(guide), "exec"), {"__name__": "__guide__"})
