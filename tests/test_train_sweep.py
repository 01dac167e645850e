"""`fdl.train.sweep`: k configurations trained at once equal k separate `fit` calls (the
reference) within float32 rounding, in one compiled program that another sweep of other values
reuses; a configuration with a non-finite step stops alone, as `fit`'s NaN stop; bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import losses, metrics as fm, optim, train
from funcdl.train.sweep import run_swept
from train_reference import (MODEL, PARAMS, X, Y, assert_trees_close,
                             counting_compilations)

KEY = jax.random.key(7)
VALIDATION = (X[:20] + 0.1, Y[:20])
METRICS = {"mae": lambda p, t: jnp.mean(jnp.abs(p - t)), "r2": fm.r2_score()}


def assert_sweep_equals_fits(make_optimizer, hyperparams, **options):
    params_k, state_k, history = train.sweep(MODEL, PARAMS, losses.mse_loss, make_optimizer,
                                             hyperparams, X, Y, key=KEY, progress=False,
                                             **options)
    k = len(next(iter(hyperparams.values())))
    for i in range(k):
        config = {name: float(values[i]) for name, values in hyperparams.items()}
        params, state, expected = train.fit(MODEL, PARAMS, losses.mse_loss,
                                            make_optimizer(**config), X, Y, key=KEY,
                                            progress=False, **options)
        pick = lambda tree: jax.tree_util.tree_map(lambda leaf: leaf[i], tree)  # noqa: E731
        assert_trees_close(pick(params_k), params)
        assert_trees_close(pick(state_k), state)
        assert sorted(history) == sorted(expected)
        for name, values in expected.items():
            assert history[name].shape == (k, options["epochs"])
            np.testing.assert_allclose(history[name][i], values, rtol=2e-5, atol=1e-6,
                                       err_msg=f"{config}: {name}")
    return history


@pytest.mark.slow  # ~10 s: the slow tier (`make test-slow`, run by CI)
def test_adam_minibatch_shuffled_with_validation_and_metrics_equals_separate_fits():
    history = assert_sweep_equals_fits(
        lambda lr: optim.adam(lr), {"lr": np.array([1e-3, 1e-2, 3e-2])}, epochs=3,
        batch_size=16, shuffle=True, validation=VALIDATION, metrics=METRICS)
    assert not np.allclose(history["loss"][0], history["loss"][2])  # the lrs do differ


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_sgd_momentum_full_batch_two_keywords_with_validation_equals_separate_fits():
    assert_sweep_equals_fits(
        lambda lr, momentum: optim.sgd(lr, momentum=momentum),
        {"lr": [0.05, 0.1, 0.2, 0.1], "momentum": np.array([0.9, 0.5, 0.8, 0.99])},
        epochs=12, validation=VALIDATION, metrics=METRICS)


@pytest.mark.slow  # ~11 s: the slow tier (`make test-slow`, run by CI)
def test_sgd_momentum_minibatch_with_a_schedule_equals_separate_fits():
    assert_sweep_equals_fits(
        lambda lr: optim.sgd(optim.schedules.cosine_decay(lr, 8), momentum=0.9,
                             nesterov=True),
        {"lr": np.array([0.01, 0.1])}, epochs=2, batch_size=16, validation=VALIDATION,
        validation_batch_size=7)


@pytest.mark.slow  # ~3 s: the slow tier (`make test-slow`, run by CI)
def test_one_compiled_program_and_other_values_compile_nothing():
    make = lambda lr, b1: optim.adamw(lr, betas=(b1, 0.999), weight_decay=0.01)  # noqa: E731
    options = dict(epochs=2, batch_size=16, progress=False, key=KEY)
    # a loss of its own: a program no other test (in this worker) has compiled already
    loss = lambda pred, target: losses.mse_loss(pred, target)  # noqa: E731
    # compiles are counted by name: the jit cache's own count (`_cache_size`) stays 0 when jax
    # dispatches a program on its Python path
    with counting_compilations() as compiled:
        train.sweep(MODEL, PARAMS, loss, make, {"lr": [1e-3, 1e-2], "b1": [0.9, 0.8]},
                    X, Y, **options)
    assert compiled.count(f"jit({run_swept.__name__})") == 1, compiled
    with counting_compilations() as compiled:
        train.sweep(MODEL, PARAMS, loss, make,
                    {"lr": [3e-3, 5e-2], "b1": [0.7, 0.95]}, X, Y, **options)
    assert compiled == []


@pytest.mark.slow  # ~10 s: the slow tier (`make test-slow`, run by CI)
def test_diverging_configurations_stop_alone_as_fit_stops():
    # config 1 (lr 1e30) is non-finite at epoch 0 (the first call: one epoch), config 2 at
    # epoch 2, when its step decay multiplies the lr by 1e30 (a later call): each keeps the
    # state of fit's NaN stop, and config 0 trains to the end as its own fit
    make = lambda lr, gamma: optim.sgd(optim.schedules.step_decay(lr, 10, gamma),  # noqa: E731
                                       momentum=0.9)
    hyperparams = {"lr": [0.1, 1e30, 0.1], "gamma": [0.5, 0.5, 1e30]}
    options = dict(epochs=6, batch_size=16, key=KEY, progress=False)
    with pytest.warns(RuntimeWarning, match=r"configurations with a non-finite training step: "
                                            r"1 \(lr=1e\+30, gamma=0\.5\) at epoch 0, step \d, "
                                            r"loss .*; 2 \(lr=0\.1, gamma=1e\+30\) at epoch 2"):
        params_k, state_k, history = train.sweep(MODEL, PARAMS, losses.mse_loss, make,
                                                 hyperparams, X, Y, **options)
    pick = lambda tree, i: jax.tree_util.tree_map(lambda leaf: leaf[i], tree)  # noqa: E731
    for i in (1, 2):
        with pytest.raises(FloatingPointError) as stop:
            train.fit(MODEL, PARAMS, losses.mse_loss, make(hyperparams["lr"][i],
                                                           hyperparams["gamma"][i]), X, Y,
                      **options)
        bad = stop.value
        assert_trees_close(pick(params_k, i), bad.params)
        assert_trees_close(pick(state_k, i), bad.opt_state)
        np.testing.assert_allclose(history["loss"][i, :bad.epoch], bad.history["loss"],
                                   rtol=2e-5)
        assert np.isnan(history["loss"][i, bad.epoch:]).all()
    params, _, expected = train.fit(MODEL, PARAMS, losses.mse_loss, make(0.1, 0.5), X, Y,
                                    **options)
    assert_trees_close(pick(params_k, 0), params)
    np.testing.assert_allclose(history["loss"][0], expected["loss"], rtol=2e-5)


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_history_and_state_with_zero_epochs_and_an_initial_epoch():
    make = lambda lr: optim.sgd(lr)  # noqa: E731
    params_k, _, history = train.sweep(MODEL, PARAMS, losses.mse_loss, make, {"lr": [0.1, 0.2]},
                                       X, Y, epochs=0, progress=False)
    assert history["loss"].shape == (2, 0)
    assert_trees_close(params_k, jax.tree_util.tree_map(lambda p: jnp.stack([p, p]), PARAMS))
    params_k, _, history = train.sweep(MODEL, PARAMS, losses.mse_loss, make, {"lr": [0.1, 0.2]},
                                       X, Y, epochs=4, initial_epoch=2, batch_size=16,
                                       key=KEY, progress=False)
    params, _, expected = train.fit(MODEL, PARAMS, losses.mse_loss, make(0.2), X, Y, epochs=4,
                                    initial_epoch=2, batch_size=16, key=KEY, progress=False)
    assert history["loss"].shape == (2, 2)
    np.testing.assert_allclose(history["loss"][1], expected["loss"], rtol=2e-5)
    assert_trees_close(jax.tree_util.tree_map(lambda leaf: leaf[1], params_k), params)


def _sweep(make=lambda lr: optim.sgd(lr), hyperparams=None, **options):
    options = {"epochs": 1, "progress": False, **options}
    return train.sweep(MODEL, PARAMS, losses.mse_loss, make,
                       {"lr": [0.1, 0.2]} if hyperparams is None else hyperparams, X, Y,
                       **options)


@pytest.mark.parametrize("hyperparams, error, message", [
    ({"lr": [0.1, 0.2], "momentum": [0.9, 0.8, 0.7]}, ValueError,
     r"same length k .*hyperparams\['lr'\] has 2, hyperparams\['momentum'\] has 3"),
    ({"lr": [0.1, -0.2]}, ValueError, r"configuration 1 \(hyperparams\['lr'\]\[1\] = -0\.2\).*"
                                      r"`lr` must be >= 0"),
    ({"lr": [[0.1, 0.2]]}, ValueError, r"`hyperparams\['lr'\]` must be a 1-D array .*shape "
                                       r"\(1, 2\)"),
    ({"lr": []}, ValueError, r"`hyperparams\['lr'\]` must be a 1-D array"),
    ({"lr": ["a", "b"]}, TypeError, r"`hyperparams\['lr'\]` must be a 1-D array of real"),
    ({}, TypeError, r"`hyperparams` must be a non-empty dict"),
    ({"rate": [0.1, 0.2]}, TypeError, r"keywords \['rate'\] must be keywords of "
                                      r"`make_optimizer`"),
])
def test_bad_hyperparams_name_the_entry(hyperparams, error, message):
    with pytest.raises(error, match=message):
        _sweep(hyperparams=hyperparams)


def test_hyperparams_of_different_lengths_are_named_before_anything_compiles():
    with counting_compilations() as compiled:
        with pytest.raises(ValueError, match=r"`hyperparams` arrays must all have the same "
                                             r"length k .*hyperparams\['lr'\] has 3, "
                                             r"hyperparams\['weight_decay'\] has 2"):
            _sweep(lambda lr, weight_decay: optim.adamw(lr, weight_decay=weight_decay),
                   {"lr": np.array([1e-3, 2e-3, 3e-3]), "weight_decay": np.array([0.1, 0.2])})
    assert compiled == []


def test_configurations_of_different_structures_are_refused():
    with pytest.raises(ValueError, match=r"configurations 0 \(hyperparams\['momentum'\]\[0\] = "
                                         r"0\.0\) and 1 .*different structures"):
        _sweep(lambda momentum: optim.sgd(0.1, momentum=momentum),
               {"momentum": [0.0, 0.9]})


def test_an_optimizer_built_by_hand_is_refused():
    sgd = optim.sgd(0.1)
    hand = lambda lr: optim.Optimizer(lambda p: sgd.init(p),  # noqa: E731
                                      lambda g, s, p=None: sgd.update(g, s, p))
    with pytest.raises(TypeError, match="built by fdl.optim's constructors"):
        _sweep(hand)


@pytest.mark.parametrize("option", ["mesh", "callbacks", "checkpoint", "resume", "opt_state"])
def test_fit_options_a_sweep_does_not_take(option):
    with pytest.raises(TypeError, match=f"sweep does not take `{option}`"):
        _sweep(**{option: None})


def test_unknown_and_missing_options():
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['epoch'\]"):
        _sweep(epoch=3)
    with pytest.raises(TypeError, match="sweep needs `epochs`"):
        train.sweep(MODEL, PARAMS, losses.mse_loss, optim.sgd, {"lr": [0.1]}, X, Y)
    with pytest.raises(TypeError, match="`make_optimizer` must be a function"):
        _sweep(make=optim.sgd(0.1))
