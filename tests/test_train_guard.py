"""The NaN guard inside the compiled scan, and bf16 mixed precision, against the hand-written
reference loop of tests/train_reference.py."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import optim, train
from funcdl.train import epochs as epoch_program
from train_reference import (ADAM, BATCH, LOSS, MODEL, PARAMS, SGD, X, Y, assert_trees_close,
                             reference_fit)


def blows_up_at(update):
    """SGD whose learning rate is 1e37 for update number `update` (0-based), 0.1 otherwise:
    that update leaves finite but huge params, so the loss of the NEXT step is inf."""
    return optim.sgd(lambda count: jnp.where(count == update, 1e37, 0.1).astype(jnp.float32))


@pytest.mark.parametrize("backend", ["jax", "funcdl"])
def test_minibatch_nan_stop_keeps_exactly_the_state_before_the_bad_step(backend):
    opt = blows_up_at(6)  # 4 steps per epoch: the loss of step 7 = epoch 1, step 3 is inf
    with pytest.raises(FloatingPointError, match=r"non-finite .* at epoch 1, step 3") as caught:
        train.fit(MODEL, PARAMS, LOSS, opt, X, Y, epochs=5, batch_size=BATCH, shuffle=False,
                  grad_backend=backend, progress=False)
    error = caught.value
    ref_params, ref_state, ref_history = reference_fit(opt, 5, BATCH, None, False, max_steps=7)
    assert (error.epoch, error.step) == (1, 3)
    assert_trees_close(error.params, ref_params)
    assert int(error.opt_state[-1].count) == int(ref_state[-1].count) == 7
    assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(error.params))
    np.testing.assert_allclose(error.history["loss"], ref_history, rtol=2e-5)
    assert len(error.history["loss"]) == 1


@pytest.mark.slow  # ~7 s: the slow tier (`make test-slow`, run by CI)
def test_full_batch_nan_stop_inside_a_multi_epoch_call_names_the_epoch():
    opt = blows_up_at(5)  # one step per epoch: epoch 6's loss is inf
    with pytest.raises(FloatingPointError, match=r"at epoch 6, step 0") as caught:
        train.fit(MODEL, PARAMS, LOSS, opt, X, Y, epochs=20, progress=False)
    ref_params, _, ref_history = reference_fit(opt, 6, len(X), None, False)
    assert caught.value.epoch == 6
    assert_trees_close(caught.value.params, ref_params)
    np.testing.assert_allclose(caught.value.history["loss"], ref_history, rtol=2e-5)


@pytest.mark.slow  # ~3 s: the slow tier (`make test-slow`, run by CI)
def test_an_inf_data_row_stops_at_its_batch_before_any_update_from_it():
    x = X.copy()
    x[20, 1] = np.inf  # row 20 is in batch 1 (rows 16..31) without shuffling
    with pytest.raises(FloatingPointError, match=r"at epoch 0, step 1") as caught:
        train.fit(MODEL, PARAMS, LOSS, ADAM, x, Y, epochs=2, batch_size=BATCH, shuffle=False,
                  progress=False)
    ref_params, ref_state, _ = reference_fit(ADAM, 1, BATCH, None, False, max_steps=1)
    assert_trees_close(caught.value.params, ref_params)
    assert_trees_close(caught.value.opt_state, ref_state)
    assert caught.value.history == {"loss": [], "lr": []}


@pytest.mark.slow  # ~3 s: the slow tier (`make test-slow`, run by CI)
def test_a_nan_gradient_under_a_finite_loss_stops_before_its_update():
    # d sqrt(s)/ds = inf at s = 0 and 0 * inf = NaN: the loss stays finite, the gradient of `s`
    # is NaN at the first step. The fast program only sees the NaN it leaves in `s`; the replay
    # finds the step.
    def apply(p, x):
        return MODEL.apply(p["net"], x) + 0.0 * jnp.sqrt(p["s"])

    params = {"net": PARAMS, "s": jnp.zeros((), jnp.float32)}
    with pytest.raises(FloatingPointError, match=r"at epoch 0, step 0") as caught:
        train.fit(apply, params, LOSS, SGD, X, Y, epochs=2, batch_size=BATCH, shuffle=False,
                  progress=False)
    assert_trees_close(caught.value.params, params)
    assert caught.value.history == {"loss": [], "lr": []}


@pytest.mark.slow  # ~5 s: the slow tier (`make test-slow`, run by CI)
def test_only_a_non_finite_run_replays_with_the_per_step_guard(monkeypatch):
    fit_module = importlib.import_module("funcdl.train.loop")
    replays = []

    def counting(*args, **kwargs):
        replays.append(kwargs["plan"].guarded)
        return epoch_program.run_epochs_guarded(*args, **kwargs)

    monkeypatch.setattr(fit_module, "run_epochs_guarded", counting)
    train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=3, batch_size=BATCH, progress=False)
    assert replays == []  # finite: the fast program alone, no per-step check
    with pytest.raises(FloatingPointError):
        train.fit(MODEL, PARAMS, LOSS, blows_up_at(6), X, Y, epochs=3, batch_size=BATCH,
                  progress=False)
    assert replays == [True]  # the failing epoch only, with the guard


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("backend", ["jax", "funcdl"])
def test_bf16_compute_keeps_float32_state_and_tracks_the_float32_loss(backend):
    kwargs = dict(epochs=30, batch_size=BATCH, grad_backend=backend, progress=False)
    p16, s16, h16 = train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, compute_dtype=jnp.bfloat16,
                              **kwargs)
    p32, _, h32 = train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, **kwargs)
    for leaf in jax.tree_util.tree_leaves((p16, s16)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32
    # bf16 has 8 significant bits: the losses agree to a few percent, and training works.
    np.testing.assert_allclose(h16["loss"], h32["loss"], rtol=0.05)
    assert h16["loss"][-1] < 0.5 * h16["loss"][0]
    assert not np.allclose(h16["loss"], h32["loss"], rtol=1e-6)  # it did compute in bf16
