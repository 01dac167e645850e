"""fit against an independent reference (tests/train_reference.py): a hand-written loop over a
jitted `jax.value_and_grad` step over the same batch order, so params, optimizer state and the
batch-weighted epoch losses must agree to float32 rounding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import optim, train
from train_reference import (ADAM, BATCH, LOSS, MODEL, N_ROWS, PARAMS, SGD, X, Y,
                             assert_trees_close, counting_compilations, reference_fit)


@pytest.mark.parametrize("backend", ["jax", "funcdl"])
def test_fit_equals_the_hand_written_loop_with_shuffling_and_a_partial_batch(backend):
    key = jax.random.key(7)
    params, state, history = train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=3,
                                       batch_size=BATCH, key=key, grad_backend=backend,
                                       progress=False)
    ref_params, ref_state, ref_history = reference_fit(ADAM, 3, BATCH, key, True)
    assert_trees_close(params, ref_params)
    assert_trees_close(state, ref_state)
    np.testing.assert_allclose(history["loss"], ref_history, rtol=2e-5)
    assert list(history) == ["loss", "lr"] and history["lr"] == [1e-2] * 3


@pytest.mark.parametrize("backend", ["jax", "funcdl"])
def test_full_batch_runs_many_epochs_in_one_dispatch_unshuffled(backend):
    params, _, history = train.fit(MODEL, PARAMS, LOSS, SGD, X, Y, epochs=40,
                                   grad_backend=backend, progress=False)
    ref_params, _, ref_history = reference_fit(SGD, 40, N_ROWS, jax.random.PRNGKey(0), False)
    assert_trees_close(params, ref_params, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(history["loss"], ref_history, rtol=1e-4)


def test_opt_state_continues_a_run_fit_3_plus_fit_2_equals_fit_5():
    kwargs = dict(batch_size=BATCH, shuffle=False, progress=False)
    p5, s5, h5 = train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=5, **kwargs)
    p3, s3, h3 = train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=3, **kwargs)
    p2, s2, h2 = train.fit(MODEL, p3, LOSS, ADAM, X, Y, epochs=2, opt_state=s3, **kwargs)
    assert_trees_close(p2, p5, rtol=0, atol=0)
    assert_trees_close(s2, s5, rtol=0, atol=0)
    assert h3["loss"] + h2["loss"] == h5["loss"]
    assert int(s2[1].count) == 5 * 4  # 4 steps per epoch
    ref_p, ref_s, ref_h = reference_fit(ADAM, 5, BATCH, None, False)
    assert_trees_close(p5, ref_p)
    np.testing.assert_allclose(h5["loss"], ref_h, rtol=2e-5)


def test_a_continued_shuffled_run_numbers_its_epochs_from_0_again():
    key = jax.random.key(3)
    p3, s3, _ = train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=3, batch_size=BATCH,
                          key=key, progress=False)
    p2, s2, h2 = train.fit(MODEL, p3, LOSS, ADAM, X, Y, epochs=2, batch_size=BATCH, key=key,
                           opt_state=s3, progress=False)
    ref_p, ref_s, _ = reference_fit(ADAM, 3, BATCH, key, True)
    ref_p, ref_s, ref_h2 = reference_fit(ADAM, 2, BATCH, key, True, ref_p, ref_s)
    assert_trees_close(p2, ref_p)
    assert_trees_close(s2, ref_s)
    np.testing.assert_allclose(h2["loss"], ref_h2, rtol=2e-5)


def test_a_second_fit_with_the_same_model_loss_optimizer_and_shapes_does_not_compile():
    kwargs = dict(epochs=2, batch_size=BATCH, key=jax.random.key(5), progress=False)
    train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, **kwargs)
    other_data = (X + 1.0, Y * 2.0)  # same shapes, different values
    with counting_compilations() as compiled:
        _, _, history = train.fit(MODEL, PARAMS, LOSS, ADAM, *other_data, **kwargs)
    assert compiled == [], f"{len(compiled)} compilations in the second fit"
    assert len(history["loss"]) == 2
    with counting_compilations() as compiled:  # the counter does see compilations
        train.fit(MODEL, PARAMS, LOSS, ADAM, X[:40], Y[:40], **kwargs)
    assert compiled


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_fit_leaves_the_callers_arrays_valid():
    params = jax.tree_util.tree_map(jnp.asarray, PARAMS)
    state = ADAM.init(params)
    x, y = jnp.asarray(X), jnp.asarray(Y)
    train.fit(MODEL, params, LOSS, ADAM, x, y, epochs=1, batch_size=BATCH, opt_state=state,
              progress=False)
    for leaf in jax.tree_util.tree_leaves((params, state, x, y)):
        assert not leaf.is_deleted()
    np.testing.assert_array_equal(np.asarray(params[0]["w"]), np.asarray(PARAMS[0]["w"]))


def test_a_plain_apply_function_is_a_model_too():
    def apply(params, x):
        return x @ params["w"]

    params = {"w": jnp.zeros((3, 2), jnp.float32)}
    fitted, _, history = train.fit(apply, params, LOSS, optim.sgd(0.1), X, Y, epochs=20,
                                   progress=False)
    w = np.zeros((3, 2), np.float32)
    for _ in range(20):  # full-batch gradient descent on the mean squared error, by hand
        w = w - 0.1 * 2 * X.T @ (X @ w - Y) / Y.size
    np.testing.assert_allclose(np.asarray(fitted["w"]), w, rtol=1e-4, atol=1e-6)
    assert len(history["loss"]) == 20


@pytest.mark.parametrize("backend", ["jax", "funcdl"])
def test_make_train_step_is_one_donating_jitted_update(backend):
    step = train.make_train_step(MODEL, LOSS, ADAM, grad_backend=backend)
    params = jax.tree_util.tree_map(jnp.array, PARAMS)
    state = ADAM.init(params)
    new_params, new_state, loss = step(params, state, X, Y)
    assert params[0]["w"].is_deleted()  # consumed, as documented
    ref_params, ref_state, ref_history = reference_fit(ADAM, 1, N_ROWS, None, False)
    assert_trees_close(new_params, ref_params)
    assert_trees_close(new_state, ref_state)
    np.testing.assert_allclose(float(loss), ref_history[0], rtol=1e-6)


def test_evaluate_and_predict_are_row_weighted_over_batches():
    pred = MODEL.apply(PARAMS, X)
    mae = lambda p, t: jnp.mean(jnp.abs(p - t))  # noqa: E731
    result = train.evaluate(MODEL, PARAMS, LOSS, X, Y, batch_size=BATCH, metrics={"mae": mae})
    np.testing.assert_allclose(result["loss"], np.mean((np.asarray(pred) - Y) ** 2), rtol=1e-5)
    np.testing.assert_allclose(result["mae"], np.mean(np.abs(np.asarray(pred) - Y)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(train.predict(MODEL, PARAMS, X, batch_size=BATCH)),
                               np.asarray(pred), rtol=1e-6, atol=1e-6)
