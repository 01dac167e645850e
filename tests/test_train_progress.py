"""Progress (a tqdm bar on a terminal, one line per epoch elsewhere), validation and metrics
of fit. A terminal is a fake stderr whose `isatty()` is True; pytest's captured stderr
(`capsys`) is not one, like a log file."""
import functools
import importlib
import io
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from funcdl import train
from funcdl.train import epochs as epoch_program, progress
from train_reference import ADAM, BATCH, LOSS, MODEL, PARAMS, X, Y, reference_fit

fit_module = importlib.import_module("funcdl.train.fit")  # `train.fit` is the function
loop_module = importlib.import_module("funcdl.train.loop")  # the calls of a fit


def mae(pred, target):
    return jnp.mean(jnp.abs(pred - target))


class Terminal(io.StringIO):
    def isatty(self):
        return True


def on_a_terminal(monkeypatch):
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def test_on_a_terminal_the_bar_reaches_its_total_in_steps_or_epochs_after_compiling(
        monkeypatch, capsys):
    stream = on_a_terminal(monkeypatch)
    train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=3, batch_size=BATCH, progress=True)
    minibatch = stream.getvalue()
    assert minibatch.startswith("\rcompiling:   0%|")
    assert "12/12" in minibatch and "step" in minibatch and "loss=" in minibatch
    assert "compiling" not in minibatch.split("\r")[-1] and "Epoch" not in minibatch
    stream.seek(0), stream.truncate()
    train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=30, progress=True)
    assert "30/30" in stream.getvalue() and "epoch" in stream.getvalue()
    assert capsys.readouterr() == ("", "")


def test_on_a_terminal_the_rate_and_eta_count_from_the_first_finished_step(monkeypatch):
    """A first call that takes 1 s longer (a slow compile): the rate of the 12 steps would be
    below 12 steps/s with that second in it; the bar's clock starts at the first step's report
    instead (tqdm's `initial` 1, `start_t` after the delay)."""
    stream, bars, delayed = on_a_terminal(monkeypatch), [], []
    real_run = loop_module.run_epochs

    def slow_first_call(*args, **kwargs):
        if not delayed:
            time.sleep(1.0)
            delayed.append(time.time())
        return real_run(*args, **kwargs)

    class Recorded(progress.ProgressBar):
        def __init__(self, *args):
            super().__init__(*args)
            bars.append(self)

    monkeypatch.setattr(loop_module, "run_epochs", slow_first_call)
    monkeypatch.setattr(fit_module, "ProgressBar", Recorded)
    started = time.perf_counter()
    train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=3, batch_size=BATCH, progress=True)
    assert time.perf_counter() - started > 1.0
    (bar,) = bars
    assert bar.bar.initial == 1 and bar.bar.n == 12 and bar.bar.start_t >= delayed[0]
    last = stream.getvalue().split("\r")[-1]
    elapsed, rate = re.search(r"12/12 \[(\d\d:\d\d)<00:00, ([\d.]+)step/s", last).groups()
    assert elapsed == "00:00" and float(rate) > 24


LINE = re.compile(r"Epoch (\d+)/(\d+) - ([\d.]+)(m?s) - (.*)")


def epoch_lines(err):
    """`[(epoch, epochs, seconds, {name: value})]` of the per-epoch lines in `err`."""
    rows = []
    for line in err.splitlines():
        epoch, epochs, seconds, unit, values = LINE.fullmatch(line).groups()
        pairs = dict(pair.split(": ") for pair in values.split(" - "))
        rows.append((int(epoch), int(epochs), float(seconds) / (1e3 if unit == "ms" else 1),
                     {name: float(value) for name, value in pairs.items()}))
    return rows


def assert_lines_hold(rows, history, first_epoch, epochs):
    assert [row[:2] for row in rows] == [(first_epoch + i + 1, epochs) for i in range(len(rows))]
    assert len(rows) == len(history["loss"])
    for name, values in history.items():  # 4 significant digits, as printed
        np.testing.assert_allclose([row[3][name] for row in rows], values, rtol=5.1e-4)
    assert [list(row[3]) for row in rows] == [list(history)] * len(rows)


def test_elsewhere_one_line_per_epoch_with_the_history_values_and_no_bar_frames(capsys):
    started = time.perf_counter()
    *_, history = train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=3, batch_size=BATCH,
                            validation=(X[:7] * 0.5, Y[:7]), metrics={"mae": mae},
                            progress=True)
    wall = time.perf_counter() - started
    out, err = capsys.readouterr()
    assert out == "" and "\r" not in err and "%|" not in err and err.endswith("\n")
    rows = epoch_lines(err)
    assert_lines_hold(rows, history, 0, 3)
    assert 0 < sum(row[2] for row in rows) <= wall + 0.005 * len(rows)  # printed to 0.01 s


def test_elsewhere_a_full_batch_call_prints_each_of_its_epochs_after_it(capsys):
    # 28 epochs in a few dispatches (the first of one epoch, then calls of up to ~0.5 s, their
    # lengths set from the previous call's time), from epoch 2: epochs 3..30 of 30, each line
    # its call's time divided by the call's epochs
    started = time.perf_counter()
    *_, history = train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=30, initial_epoch=2,
                            progress=True)
    wall = time.perf_counter() - started
    rows = epoch_lines(capsys.readouterr().err)
    assert_lines_hold(rows, history, 2, 30)
    seconds = [row[2] for row in rows]
    assert len(set(seconds)) < len(seconds) and min(seconds) > 0  # calls of several epochs
    assert seconds.count(seconds[-1]) > 1 and sum(seconds) <= wall + 28 * 0.005


def test_a_jupyter_stream_counts_as_a_terminal_and_a_plain_one_does_not():
    jupyter = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})
    assert progress.is_terminal(Terminal()) and progress.is_terminal(jupyter())
    assert not progress.is_terminal(io.StringIO()) and not progress.is_terminal(object())


def test_a_line_is_keras_verbose_2_with_4_significant_digits():
    line = progress.epoch_line(3, 10, 0.523, ["loss", "mae", "val_loss"], [0.12344, 0.2, 2e-5])
    assert line == "Epoch 3/10 - 0.52s - loss: 0.1234 - mae: 0.2 - val_loss: 2e-05"
    short = progress.epoch_line(1, 2, 0.00042, ["loss"], [1.5])
    assert short == "Epoch 1/2 - 0.42ms - loss: 1.5"


def test_the_bar_moves_from_inside_the_compiled_epoch_and_a_repeat_of_a_short_run_does_not(
        monkeypatch):
    stream = on_a_terminal(monkeypatch)
    positions = []
    real_report = progress.report

    def recording(token, position, loss):
        positions.append(int(position))
        real_report(token, position, loss)

    monkeypatch.setattr(progress, "report", recording)
    loss = lambda pred, target: LOSS(pred, target)  # noqa: E731 (a program of its own)
    train.fit(MODEL, PARAMS, loss, ADAM, X, Y, epochs=2, batch_size=BATCH, progress=True)
    # 4 steps an epoch, k = 4 // 8 -> 1 on a first run: every step reports from inside the
    # scan; after each call the bar is set to the call's end (4, 8). The first call's time,
    # compile excluded, is far below a quarter second a step: in the second call only its
    # first step reports.
    assert positions == [1, 2, 3, 4, 4, 5, 8]
    positions.clear()
    train.fit(MODEL, PARAMS, loss, ADAM, X, Y, epochs=2, batch_size=BATCH, progress=True)
    # the same program measured at far below a quarter second a step: inside, only each
    # call's first step reports (the end of the compile phase)
    assert positions == [1, 4, 5, 8]
    assert "8/8" in stream.getvalue()


def test_progress_false_prints_nothing_and_compiles_no_callback(capsys):
    train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=2, batch_size=BATCH, progress=False)
    assert capsys.readouterr() == ("", "")
    spec = train.step.StepSpec(MODEL, LOSS, ADAM, "jax", None)
    plan = epoch_program.EpochPlan(spec, 50, BATCH, 3, 2, True, 1, None, 0, None)
    args = (PARAMS, ADAM.init(PARAMS), epoch_program.new_guard(), None, (X, Y, None, None),
            jax.random.key(0), jnp.int32(0), jnp.int32(1), jnp.int32(1), jnp.int32(0))
    without = str(jax.make_jaxpr(functools.partial(epoch_program._run_epochs, plan=plan))(*args))
    with_bar = str(jax.make_jaxpr(functools.partial(
        epoch_program._run_epochs, plan=plan._replace(progress="step")))(*args))
    assert "callback" not in without
    assert "callback" in with_bar


def test_validation_and_metrics_in_the_history():
    x_val, y_val = X[:7] * 0.5, Y[:7]
    params, _, history = train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=2, batch_size=BATCH,
                                   shuffle=False, validation=(x_val, y_val),
                                   metrics={"mae": mae}, progress=False)
    assert list(history) == ["loss", "mae", "val_loss", "val_mae", "lr"]
    assert all(len(values) == 2 for values in history.values())
    # the last epoch's validation values are those of the returned params (train=False)
    final = train.evaluate(MODEL, params, LOSS, x_val, y_val, metrics={"mae": mae})
    np.testing.assert_allclose(history["val_loss"][-1], final["loss"], rtol=1e-5)
    np.testing.assert_allclose(history["val_mae"][-1], final["mae"], rtol=1e-5)
    # the training metric: the batch-weighted mean of each step's mae at the step's params
    step_params, total = PARAMS, 0.0
    for start in range(0, 50, BATCH):
        rows = slice(start, start + BATCH)
        total += len(X[rows]) * float(mae(MODEL.apply(step_params, X[rows]), Y[rows]))
        step_params, _, _ = reference_fit(ADAM, 1, BATCH, None, False, max_steps=start // BATCH + 1)
    np.testing.assert_allclose(history["mae"][0], total / 50, rtol=2e-5)
