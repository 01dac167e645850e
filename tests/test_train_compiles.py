"""A second `fdl.train.fit` with an equal model and an equal optimizer compiles nothing.

fit's compiled programs are cached by `jax.jit` on a static spec that holds the Model and the
Optimizer; both compare by the call that built them (`funcdl.construction`), so rebuilding
`Sequential(Linear(16), Tanh(), Linear(1))` and `adam(1e-3)` for a second run finds the
programs of the first. Compiles are counted by `jax.monitoring`'s compile events
(`counting_compilations` of tests/train_reference.py).

Numeric hyperparameters are data: a second fit that changes only the optimizer's non-zero
floats (lr, betas, eps, weight decay, momentum, a schedule's numbers) compiles nothing either,
and trains as the hand-written loop with that optimizer; a zero switched to non-zero changes the
optimizer state's structure and compiles again.
"""
import jax
import numpy as np
import pytest

from funcdl import losses, nn, optim, train
from funcdl.optim import schedules
from train_reference import (PARAMS, X as REF_X, Y as REF_Y, assert_trees_close,
                             counting_compilations, reference_fit)

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 4)).astype(np.float32)
Y = (X @ RNG.normal(size=(4, 1))).astype(np.float32)


def fit(model, optimizer, **options):
    params = model.init(KEY, X)
    return train.fit(model, params, losses.mse_loss, optimizer, X, Y, epochs=2, batch_size=16,
                     progress=False, **options)


@pytest.mark.slow  # ~8 s: the slow tier (`make test-slow`, run by CI)
def test_a_rebuilt_model_and_a_new_adam_compile_nothing():
    def build():
        return nn.Sequential(nn.Linear(16), nn.Tanh(), nn.Linear(1)), optim.adam(1e-3)

    with counting_compilations() as first:
        first_params = fit(*build())[0]
    assert first  # the counter sees compiles
    model, optimizer = build()
    with counting_compilations() as second:
        params = fit(model, optimizer)[0]
    assert second == []
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, first_params)


@pytest.mark.slow  # ~6 s: the slow tier (`make test-slow`, run by CI)
def test_rebuilt_chains_with_schedules_and_validation_compile_nothing():
    def build():
        model = nn.Sequential(nn.Linear(8, w_init=nn.init.xavier_uniform()), nn.Dropout(0.1),
                              nn.ReLU(), nn.Linear(1))
        optimizer = optim.chain(optim.clip_by_global_norm(1.0),
                                optim.adamw(schedules.warmup_cosine(1e-2, 2, 10), weight_decay=0.05))
        return model, optimizer

    options = dict(validation=(X[:8], Y[:8]))
    fit(*build(), **options)
    with counting_compilations() as compiled:
        fit(*build(), **options)
    assert compiled == []


def _fit_reference_problem(optimizer, batch_size, **options):
    return train.fit(nn.Sequential(nn.Linear(8), nn.Tanh(), nn.Linear(2)), PARAMS,
                     losses.mse_loss, optimizer, REF_X, REF_Y, epochs=3, batch_size=batch_size,
                     key=KEY, progress=False, **options)


@pytest.mark.slow  # ~22 s: the slow tier (`make test-slow`, run by CI)
def test_other_numeric_hyperparameters_compile_nothing_and_train_as_the_reference():
    families = [
        lambda lr, b1, b2, eps, wd: optim.adamw(lr, betas=(b1, b2), eps=eps, weight_decay=wd),
        lambda lr, b1, b2, eps, wd: optim.sgd(schedules.cosine_decay(lr, 10, eta_min=lr * b2 / 10),
                                              momentum=b1, weight_decay=wd, nesterov=True),
        lambda lr, b1, b2, eps, wd: optim.chain(optim.clip_by_global_norm(10 * b1),
                                                optim.rmsprop(lr, alpha=b2, eps=eps)),
    ]
    first = (1e-2, 0.9, 0.999, 1e-8, 1e-2)
    others = [(3e-3, 0.8, 0.99, 1e-6, 0.1), (5e-2, 0.5, 0.9, 1e-4, 1e-4)]
    for make in families:
        for batch_size in (16, None):  # minibatch (shuffled) and full batch
            # twice: the second full-batch fit runs its epochs in calls of other lengths
            # (timed by the first), whose history["lr"] evaluates a schedule eagerly on new
            # shapes; none of that depends on the numbers
            for _ in range(2):
                _fit_reference_problem(make(*first), batch_size)
            for numbers in others:
                optimizer = make(*numbers)
                with counting_compilations() as compiled:
                    params, state, history = _fit_reference_problem(optimizer, batch_size)
                assert compiled == [], (numbers, batch_size)
                ref_params, ref_state, ref_history = reference_fit(
                    optimizer, 3, batch_size or len(REF_X), KEY, batch_size is not None)
                assert_trees_close(params, ref_params)
                assert_trees_close(state, ref_state)
                np.testing.assert_allclose(history["loss"], ref_history, rtol=2e-5)


@pytest.mark.slow  # ~5 s: the slow tier (`make test-slow`, run by CI)
def test_a_zero_hyperparameter_made_non_zero_compiles_again():
    _fit_reference_problem(optim.sgd(0.1), 16)
    with counting_compilations() as compiled:
        _fit_reference_problem(optim.sgd(0.1, momentum=0.9), 16)
    assert compiled  # a momentum buffer: another optimizer state, another program
