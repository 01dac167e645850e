"""Progress bar, validation and metrics of fit."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from funcdl import train
from funcdl.train import epochs as epoch_program, progress
from train_reference import ADAM, BATCH, LOSS, MODEL, PARAMS, X, Y, reference_fit


def mae(pred, target):
    return jnp.mean(jnp.abs(pred - target))


def test_the_bar_reaches_its_total_in_steps_for_minibatches_and_epochs_for_full_batch(capsys):
    train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=3, batch_size=BATCH, progress=True)
    minibatch = capsys.readouterr()
    assert "12/12" in minibatch.err and "step" in minibatch.err and "loss=" in minibatch.err
    train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=30, progress=True)
    full_batch = capsys.readouterr()
    assert "30/30" in full_batch.err and "epoch" in full_batch.err
    assert minibatch.out == full_batch.out == ""


def test_the_bar_moves_from_inside_the_compiled_epoch_and_a_repeat_of_a_short_run_does_not(
        monkeypatch, capsys):
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
    # compile excluded, is far below a quarter second a step: no callback in the second.
    assert positions == [1, 2, 3, 4, 4, 8]
    positions.clear()
    train.fit(MODEL, PARAMS, loss, ADAM, X, Y, epochs=2, batch_size=BATCH, progress=True)
    # the same program measured at far below a quarter second a step: no callback inside
    assert positions == [4, 8]
    assert "8/8" in capsys.readouterr().err


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
