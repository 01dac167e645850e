"""What fdl.train does with what a user writes by hand: a `Model(init, apply)` without `key` or
`train`, integer params, tied (repeated) arrays, params used after a donating step, and a
loss whose prediction and target shapes broadcast by accident. References: NumPy loops
written out here."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import nn, optim, train
from train_reference import counting_compilations

RNG = np.random.RandomState(3)
X = RNG.randn(12, 3).astype(np.float32)
Y = (X @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3).astype(np.float32)
W0 = RNG.randn(3, 1).astype(np.float32) * 0.1
LR = 0.1


def plain_apply(params, x):  # no key, no train: fit/evaluate/predict must not pass them
    return x @ params["w"] + params["b"]


PLAIN = nn.Model(lambda key, x: {"w": jnp.asarray(W0), "b": jnp.zeros((1, 1))}, plain_apply)


def user_mse(pred, target):  # a hand-written loss (no shape check of its own)
    return jnp.mean((pred - target) ** 2)


def fresh_params():
    return {"w": jnp.asarray(W0), "b": jnp.zeros((1, 1), jnp.float32)}


def sgd_by_hand(steps, batches):
    """Plain SGD on the mean squared error of x @ w + b, in float64 NumPy."""
    w, b = W0.astype(np.float64), np.zeros((1, 1))
    for _ in range(steps):
        for rows in batches:
            x, y = X[rows].astype(np.float64), Y[rows].astype(np.float64)
            residual = x @ w + b - y
            w, b = (w - LR * 2 * x.T @ residual / residual.size,
                    b - LR * 2 * residual.sum(0, keepdims=True) / residual.size)
    return w, b


# --- a hand-built Model whose apply takes (params, x) only ----------------------------------

def test_a_model_without_key_or_train_trains_in_fit():
    params, _, history = train.fit(PLAIN, fresh_params(), user_mse, optim.sgd(LR), X, Y,
                                   epochs=4, batch_size=5, shuffle=False, progress=False)
    w, b = sgd_by_hand(4, [np.arange(0, 5), np.arange(5, 10), np.arange(10, 12)])
    np.testing.assert_allclose(params["w"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(params["b"], b, rtol=1e-5, atol=1e-6)
    assert len(history["loss"]) == 4


def test_a_model_without_key_or_train_in_evaluate_predict_and_make_train_step():
    params = fresh_params()
    pred = X.astype(np.float64) @ W0
    np.testing.assert_allclose(train.predict(PLAIN, params, X, batch_size=5), pred, rtol=1e-5)
    result = train.evaluate(PLAIN, params, user_mse, X, Y, batch_size=5)
    np.testing.assert_allclose(result["loss"], np.mean((pred - Y) ** 2), rtol=1e-5)
    step = train.make_train_step(PLAIN, user_mse, optim.sgd(LR))
    p, s = fresh_params(), optim.sgd(LR).init(params)
    for _ in range(3):
        p, s, loss = step(p, s, X, Y)
    w, b = sgd_by_hand(3, [np.arange(12)])
    np.testing.assert_allclose(p["w"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p["b"], b, rtol=1e-5, atol=1e-6)


# --- integer and bool leaves in params ------------------------------------------------------

def counting_params(dtype):
    return {"layer": {"w": jnp.asarray(W0), "count": jnp.zeros((), dtype)},
            "b": jnp.zeros((1, 1))}


def counting_apply(params, x):
    return x @ params["layer"]["w"] + params["b"]


@pytest.mark.parametrize("dtype, name", [(jnp.int32, "int32"), (jnp.bool_, "bool")])
def test_fit_refuses_an_integer_or_bool_leaf_naming_its_path_before_compiling(dtype, name):
    params = counting_params(dtype)
    with counting_compilations() as compiled, pytest.raises(
            TypeError, match=rf"fit: `params\['layer'\]\['count'\]` has dtype {name}"):
        train.fit(counting_apply, params, user_mse, optim.sgd(LR), X, Y,
                  epochs=1, progress=False)
    assert compiled == []


def test_make_train_step_refuses_an_integer_leaf_before_compiling():
    opt = optim.adam(1e-2)  # its state holds an integer step count: that is fine
    step = train.make_train_step(counting_apply, user_mse, opt)
    params = counting_params(jnp.int32)
    state = opt.init({"w": params["layer"]["w"]})
    with counting_compilations() as compiled, pytest.raises(
            TypeError, match=r"make_train_step: `params\['layer'\]\['count'\]` has dtype int32"):
        step(params, state, X, Y)
    assert compiled == []
    assert not params["layer"]["w"].is_deleted()  # nothing was consumed


# --- one array at two paths (tied weights) --------------------------------------------------

def tied_params():
    w = jnp.asarray(W0)
    return {"encoder": {"w": w}, "decoder": {"w": w}, "b": jnp.zeros((1, 1))}


def tied_apply(params, x):
    return x @ (params["encoder"]["w"] + params["decoder"]["w"]) + params["b"]


TIED = r"`params\['decoder'\]\['w'\]` and `params\['encoder'\]\['w'\]`.*ONE parameter"


def test_make_train_step_names_both_paths_of_a_repeated_array():
    step = train.make_train_step(tied_apply, user_mse, optim.sgd(LR))
    params = tied_params()
    with counting_compilations() as compiled, pytest.raises(ValueError, match=TIED):
        step(params, optim.sgd(LR).init(params), X, Y)
    assert compiled == []
    assert not params["encoder"]["w"].is_deleted()


def test_a_returned_pytree_tied_in_place_is_named_too():
    step = train.make_train_step(tied_apply, user_mse, optim.sgd(LR))
    params = tied_params()
    params["decoder"]["w"] = jnp.copy(params["decoder"]["w"])
    params, state, _ = step(params, optim.sgd(LR).init(params), X, Y)
    params["decoder"]["w"] = params["encoder"]["w"]  # the pytree the step returned, changed
    with pytest.raises(ValueError, match=TIED) as info:
        step(params, state, X, Y)
    assert "donate the same buffer" not in str(info.value)
    assert not params["encoder"]["w"].is_deleted()


def test_fit_refuses_a_repeated_array_too_and_a_copy_trains_two_leaves():
    with counting_compilations() as compiled, pytest.raises(ValueError, match=TIED):
        train.fit(tied_apply, tied_params(), user_mse, optim.sgd(LR), X, Y, epochs=1,
                  progress=False)
    assert compiled == []
    params = tied_params()
    params["decoder"]["w"] = jnp.copy(params["decoder"]["w"])  # two independent leaves
    fitted, _, _ = train.fit(tied_apply, params, user_mse, optim.sgd(LR), X, Y, epochs=1,
                             progress=False)
    # both leaves get the gradient of the sum w_e + w_d, which is the same for each
    np.testing.assert_allclose(fitted["encoder"]["w"], fitted["decoder"]["w"], rtol=1e-6)


# --- params used after the step donated them -----------------------------------------------

def test_using_donated_params_again_says_the_step_consumes_them():
    opt = optim.sgd(LR)
    step = train.make_train_step(PLAIN, user_mse, opt)
    params = fresh_params()
    state = opt.init(params)
    new_params, new_state, _ = step(params, state, X, Y)
    with pytest.raises(RuntimeError, match=r"`params\['b'\]`, `params\['w'\]` were deleted: "
                                           r"the step donates \(consumes\)"):
        step(params, new_state, X, Y)
    step(new_params, new_state, X, Y)  # the returned ones work
    copied = jax.tree_util.tree_map(jnp.copy, fresh_params())
    kept = jax.tree_util.tree_map(jnp.copy, copied)  # the documented way to keep originals
    step(copied, opt.init(copied), X, Y)
    assert not kept["w"].is_deleted()


def test_the_step_keeps_the_jitted_functions_lower_and_works_inside_a_trace():
    opt = optim.sgd(LR)
    step = train.make_train_step(PLAIN, user_mse, opt)
    params = fresh_params()
    compiled = step.lower(params, opt.init(params), X, Y).compile()
    assert compiled is not None

    @jax.jit
    def three_steps(p, s):
        for _ in range(3):
            p, s, _ = step(p, s, X, Y)
        return p

    w, b = sgd_by_hand(3, [np.arange(12)])
    np.testing.assert_allclose(three_steps(params, opt.init(params))["w"], w, rtol=1e-5)


# --- a loss whose prediction and target broadcast to another shape -------------------------

def broadcast_warnings(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w for w in caught if issubclass(w.category, UserWarning)
            and "broadcast" in str(w.message)]


def test_a_column_prediction_against_flat_targets_warns_once_per_fit_call(allow_rank_promotion):
    flat = Y[:, 0]  # (12,) against predictions (batch, 1): a (batch, batch) loss

    def run():
        train.fit(PLAIN, fresh_params(), user_mse, optim.sgd(LR), X, flat, epochs=3,
                  batch_size=4, validation=(X, flat), progress=False)

    for _ in range(2):  # the second call's program comes from the cache: it warns again
        caught = broadcast_warnings(run)
        assert len(caught) == 1
        message = str(caught[0].message)
        assert "(4, 1)" in message and "(4,)" in message and "(4, 4)" in message
        assert caught[0].filename == __file__  # points at the caller's line
    caught = broadcast_warnings(lambda: train.evaluate(PLAIN, fresh_params(), user_mse, X, flat))
    assert len(caught) == 1 and "(12, 12)" in str(caught[0].message)


@pytest.mark.slow  # ~7 s: the slow tier (`make test-slow`, run by CI)
def test_matching_shapes_and_class_targets_do_not_warn():
    assert broadcast_warnings(lambda: train.fit(PLAIN, fresh_params(), user_mse, optim.sgd(LR),
                                                X, Y, epochs=1, progress=False)) == []
    labels = (X[:, 0] > 0).astype(np.int32)  # (n,) integer classes against (n, 3) scores

    def cross_entropy(scores, target):
        picked = jnp.take_along_axis(jax.nn.log_softmax(scores), target[:, None], axis=1)
        return -jnp.mean(picked)

    scores = nn.Linear(3)
    params = scores.init(jax.random.key(0), X)
    for batch in (None, 5, 3):  # batch 3 has as many rows as classes: (3, 3) is the scores'
        assert broadcast_warnings(lambda: train.fit(
            scores, params, cross_entropy, optim.sgd(LR), X, labels, epochs=1,
            batch_size=batch, progress=False)) == []
    assert broadcast_warnings(lambda: train.evaluate(scores, params, cross_entropy, X,
                                                     labels)) == []
