"""`make_train_step`'s numeric hyperparameters are data: a second step made with an equal model
and loss and an optimizer that differs only in its non-zero floats compiles nothing, and trains
as the hand-written step with that optimizer (`reference_step` of tests/train_reference.py, and
plain SGD written out in NumPy). Compiles are counted by `jax.monitoring`'s compile events.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import losses, nn, optim, train
from funcdl.optim import schedules
from train_reference import (LOSS, MODEL, PARAMS, X, Y, assert_trees_close,
                             counting_compilations, reference_step)


def copy(tree):
    return jax.tree_util.tree_map(jnp.copy, tree)


def three_steps(step, optimizer, params=PARAMS):
    params = copy(params)
    state = optimizer.init(params)
    losses_seen = []
    for rows in (slice(0, 16), slice(16, 32), slice(32, 50)):
        params, state, loss = step(params, state, X[rows], Y[rows])
        losses_seen.append(float(loss))
    return params, state, losses_seen


def reference_three_steps(optimizer):
    return three_steps(reference_step(optimizer), optimizer)


def rebuilt_model():
    return nn.Sequential(nn.Linear(8), nn.Tanh(), nn.Linear(2))  # equal to MODEL


@pytest.mark.slow  # ~9 s: the slow tier (`make test-slow`, run by CI)
def test_a_step_with_other_numbers_compiles_nothing_and_trains_as_the_reference():
    families = [
        lambda lr, b1, b2, eps: optim.adam(lr, betas=(b1, b2), eps=eps),
        lambda lr, b1, b2, eps: optim.sgd(schedules.cosine_decay(lr, 10, eta_min=lr * b2 / 10),
                                          momentum=b1, nesterov=True),
        lambda lr, b1, b2, eps: optim.chain(optim.clip_by_global_norm(10 * b1),
                                            optim.adamw(lr, betas=(b1, b2), eps=eps,
                                                        weight_decay=0.05)),
    ]
    first = (1e-2, 0.9, 0.999, 1e-8)
    others = [(3e-3, 0.8, 0.99, 1e-6), (5e-2, 0.5, 0.9, 1e-4)]
    for make in families:
        optimizer = make(*first)
        three_steps(train.make_train_step(MODEL, LOSS, optimizer), optimizer)
        for numbers in others:
            optimizer = make(*numbers)
            with counting_compilations() as compiled:
                step = train.make_train_step(rebuilt_model(), losses.mse_loss, optimizer)
                params, state, seen = three_steps(step, optimizer)
            assert compiled == [], numbers
            ref_params, ref_state, ref_seen = reference_three_steps(optimizer)
            assert_trees_close(params, ref_params)
            assert_trees_close(state, ref_state)
            np.testing.assert_allclose(seen, ref_seen, rtol=2e-5)


def test_only_the_learning_rate_changed_trains_as_sgd_written_out():
    w0 = np.array([[0.5], [-1.0], [2.0]], np.float32)
    model = nn.Model(lambda key, x: {"w": jnp.asarray(w0)}, lambda params, x: x @ params["w"])
    x, y = X[:16], (X[:16] @ np.array([[1.0], [2.0], [-1.0]], np.float32))

    def by_hand(lr, steps):  # float64: w -= lr * 2 x^T (x w - y) / n
        w = w0.astype(np.float64)
        for _ in range(steps):
            w = w - lr * 2 * x.T.astype(np.float64) @ (x @ w - y) / len(x)
        return w

    results = {}
    for lr in (0.05, 0.2):
        with counting_compilations() as compiled:
            step = train.make_train_step(model, losses.mse_loss, optim.sgd(lr))
            params, state = {"w": jnp.asarray(w0)}, None
            state = optim.sgd(lr).init(params)
            for _ in range(5):
                params, state, _ = step(params, state, x, y)
        results[lr] = (compiled, params["w"])
    assert any("step" in name for name in results[0.05][0])  # the first one compiles
    assert not any("step" in name for name in results[0.2][0])  # the second reuses it
    for lr, (_, w) in results.items():
        np.testing.assert_allclose(np.asarray(w), by_hand(lr, 5), rtol=1e-5, atol=1e-6)


def test_a_zero_made_non_zero_compiles_again():
    three_steps(train.make_train_step(MODEL, LOSS, optim.sgd(0.1)), optim.sgd(0.1))
    optimizer = optim.sgd(0.1, momentum=0.9)
    with counting_compilations() as compiled:
        params, _, _ = three_steps(train.make_train_step(MODEL, LOSS, optimizer), optimizer)
    assert any("step" in name for name in compiled)  # a momentum buffer: another program
    assert_trees_close(params, reference_three_steps(optimizer)[0])


def test_a_hand_built_optimizer_and_an_unhashable_loss_still_train():
    sgd = optim.sgd(0.1)
    by_hand = optim.Optimizer(sgd.init, sgd.update)  # no construction record: its own program

    class UnhashableLoss:
        __hash__ = None

        def __call__(self, pred, target):
            return losses.mse_loss(pred, target)

    expected = reference_three_steps(sgd)[0]
    assert_trees_close(three_steps(train.make_train_step(MODEL, LOSS, by_hand), by_hand)[0],
                       expected)
    assert_trees_close(three_steps(train.make_train_step(MODEL, UnhashableLoss(), sgd), sgd)[0],
                       expected)
