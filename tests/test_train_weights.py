"""Tests for `funcdl/train/weights.py`: Keras's weighting rule written out in NumPy as the
reference (per-row loss, weighted, summed, divided by the number of rows)."""
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import losses
from funcdl.train import weights as w

RNG = np.random.default_rng(0)


def test_weighted_mse_is_keras_sum_over_batch_size():
    pred, target = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 3))
    sw = np.array([1.0, 0.0, 2.0, 0.5, 3.0])
    expected = np.sum(sw * np.mean((pred - target) ** 2, axis=1)) / 5
    got = w.weighted_loss(losses.mse_loss, jnp.asarray(pred, jnp.float32),
                          jnp.asarray(target, jnp.float32), jnp.asarray(sw, jnp.float32))
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_class_weight_gives_each_row_its_class_weight():
    logits = RNG.normal(size=(6, 3))
    y = np.array([0, 2, 1, 2, 0, 1])
    weights = w.row_weights(6, y, sample_weight=np.full(6, 0.5), class_weight={2: 3.0, 0: 0.0})
    np.testing.assert_array_equal(weights, 0.5 * np.array([0.0, 3.0, 1.0, 3.0, 0.0, 1.0]))
    log_p = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    expected = np.sum(weights * -log_p[np.arange(6), y]) / 6
    got = w.weighted_loss(losses.cross_entropy, jnp.asarray(logits, jnp.float32),
                          jnp.asarray(y), jnp.asarray(weights))
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert w.row_weights(6, y) is None


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(sample_weight=np.ones(5)), ValueError, r"`sample_weight` must have one weight per row"),
    (dict(sample_weight=-np.ones(6)), ValueError, r"`sample_weight` must hold finite numbers >= 0"),
    (dict(class_weight={"a": 1.0}), TypeError, r"`class_weight` must be a dict \{class index"),
    (dict(class_weight={1: -1.0}), ValueError, r"`class_weight` weights must be finite numbers >= 0"),
    (dict(class_weight={1: np.inf}), ValueError, r"class_weight\[1\] = inf"),
    (dict(sample_weight=np.array([1, 1, np.nan, 1, 1, 1])), ValueError,
     r"sample_weight\[2\] = nan"),
    (dict(class_weight={1: "2"}), TypeError,
     r"weights must be numbers, got class_weight\[1\] = '2'"),
    (dict(sample_weight=["a"] * 6), TypeError, r"`sample_weight` must be an array of real numbers"),
])
def test_bad_weights_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        w.row_weights(6, np.zeros(6, np.int32), **kwargs)


def test_class_weight_needs_integer_targets_and_a_loss_with_reduction():
    with pytest.raises(TypeError, match=r"`class_weight` needs integer class targets"):
        w.row_weights(3, np.zeros((3, 1)), class_weight={0: 1.0})
    with pytest.raises(TypeError, match=r"need a `loss_fn` that takes `reduction=`"):
        w.check_weighted_loss(lambda pred, target: jnp.mean(pred - target))
    w.check_weighted_loss(losses.mse_loss)


def test_class_weight_keys_and_targets_may_be_negative_or_missing():
    y = np.array([-100, 0, 1, 5])  # -100: a row without a class (ignore_index), 5: not listed
    np.testing.assert_array_equal(w.row_weights(4, y, class_weight={0: 2.0, -100: 0.0}),
                                  [0.0, 2.0, 1.0, 1.0])
    np.testing.assert_array_equal(w.row_weights(4, y.reshape(4, 1), class_weight={1: 3}),
                                  [1.0, 1.0, 3.0, 1.0])
    with pytest.raises(TypeError, match=r"shape \(n,\) or \(n, 1\), got ndarray of dtype int64 "
                                         r"and shape \(4, 2\)"):
        w.row_weights(4, np.zeros((4, 2), np.int64), class_weight={0: 1.0})


# ---- fit(sample_weight=, class_weight=) -----------------------------------------------------

import functools  # noqa: E402

import jax  # noqa: E402

from funcdl import nn, optim, train  # noqa: E402
from train_reference import (ADAM, MODEL, PARAMS, X, Y, assert_trees_close,  # noqa: E402
                             counting_compilations)

KEY = jax.random.key(4)
SW = np.random.default_rng(1).uniform(0, 2, size=len(X)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _keras_step(opt):
    """One step of the written-out rule: Σ_i w_i mean_j (pred - y)²_ij / rows."""
    @jax.jit
    def step(p, s, xb, yb, wb):
        def loss(q):
            per_row = jnp.mean((MODEL.apply(q, xb) - yb) ** 2, axis=1)
            return jnp.sum(wb * per_row) / xb.shape[0]
        value, grads = jax.value_and_grad(loss)(p)
        updates, s = opt.update(grads, s, p)
        return optim.apply_updates(p, updates), s, value
    return step


def keras_reference(opt, epochs, batch_size, sample_weight):
    step, params, state, history = _keras_step(opt), PARAMS, opt.init(PARAMS), []
    for epoch in range(epochs):
        shuffle_key, _ = jax.random.split(jax.random.fold_in(KEY, epoch))
        order = np.asarray(jax.random.permutation(shuffle_key, len(X)))
        total = 0.0
        for start in range(0, len(X), batch_size):
            rows = order[start:start + batch_size]  # the weights are shuffled with the rows
            params, state, value = step(params, state, X[rows], Y[rows], sample_weight[rows])
            total += len(rows) * float(value)
        history.append(total / len(X))
    return params, state, history


def _fit(opt=ADAM, x=X, y=Y, model=MODEL, params=PARAMS, loss=losses.mse_loss, **options):
    options = {"epochs": 2, "batch_size": 16, "key": KEY, "progress": False, **options}
    return train.fit(model, params, loss, opt, x, y, **options)


def test_sample_weight_follows_keras_rule_and_validation_is_unweighted():
    params, state, history = _fit(sample_weight=SW, validation=(X[:20], Y[:20]))
    ref_params, ref_state, ref_history = keras_reference(ADAM, 2, 16, SW)
    assert_trees_close(params, ref_params)
    np.testing.assert_allclose(history["loss"], ref_history, rtol=2e-5)  # the weighted loss
    unweighted = train.evaluate(MODEL, params, losses.mse_loss, X[:20], Y[:20])
    np.testing.assert_allclose(history["val_loss"][-1], unweighted["loss"], rtol=1e-5)
    own = _fit(sample_weight=SW, grad_backend="funcdl")
    assert_trees_close(own[0], params)


@pytest.mark.slow  # ~9 s: the slow tier (`make test-slow`, run by CI)
def test_sample_weight_with_accumulation_is_the_weighted_big_batch():
    micro = _fit(sample_weight=SW, batch_size=8, accumulate=3)
    big = _fit(sample_weight=SW, batch_size=24)
    assert_trees_close(micro[0], big[0])
    np.testing.assert_allclose(micro[2]["loss"], big[2]["loss"], rtol=2e-5)


def test_rows_of_weight_zero_are_dropped_and_the_rest_scaled_by_rows_over_n():
    # full batch, plain SGD: Σ_kept l_i / n = (m / n) mean_kept l, so the run equals one on
    # the kept rows alone at lr * m / n, and its loss is m / n of that run's
    keep = np.arange(len(X)) % 5 != 0
    m, n = int(keep.sum()), len(X)
    weighted = _fit(optim.sgd(0.3), sample_weight=keep.astype(np.float32), batch_size=None,
                    epochs=3)
    kept = _fit(optim.sgd(0.3 * m / n), x=X[keep], y=Y[keep], batch_size=None, epochs=3)
    assert_trees_close(weighted[0], kept[0])
    np.testing.assert_allclose(np.array(weighted[2]["loss"]),
                               m / n * np.array(kept[2]["loss"]), rtol=2e-5)


CLASSES_X = np.random.default_rng(2).normal(size=(40, 3)).astype(np.float32)
CLASSES_Y = (CLASSES_X[:, 0] > 0).astype(np.int32) + (CLASSES_X[:, 1] > 0.5)
CLASSIFIER = nn.Linear(3)
CLASSIFIER_PARAMS = CLASSIFIER.init(jax.random.key(0), CLASSES_X)


@pytest.mark.slow  # ~7 s: the slow tier (`make test-slow`, run by CI)
def test_class_weight_is_the_sample_weight_of_each_rows_class_and_both_multiply():
    classify = functools.partial(_fit, x=CLASSES_X, y=CLASSES_Y, model=CLASSIFIER,
                                 params=CLASSIFIER_PARAMS, loss=losses.cross_entropy,
                                 batch_size=8)
    cw = {0: 2.0, 2: 0.25}  # class 1 not listed: weight 1
    by_hand = np.array([cw.get(int(c), 1.0) for c in CLASSES_Y], np.float32)
    by_class = classify(class_weight=cw)
    by_rows = classify(sample_weight=by_hand)
    jax.tree_util.tree_map(np.testing.assert_array_equal, by_class[:2], by_rows[:2])
    assert by_class[2] == by_rows[2]
    both = classify(class_weight=cw, sample_weight=SW[:40])
    product = classify(sample_weight=SW[:40] * by_hand)
    jax.tree_util.tree_map(np.testing.assert_array_equal, both[:2], product[:2])
    plain = classify()
    assert not np.allclose(by_class[2]["loss"], plain[2]["loss"])


def _no_reduction(pred, target):
    return jnp.mean((pred - target) ** 2)


@pytest.mark.parametrize("options, error, match", [
    (dict(sample_weight=SW, loss=_no_reduction), TypeError,
     r"need a `loss_fn` that takes `reduction=`.*'_no_reduction' does not"),
    (dict(sample_weight=SW[:10]), ValueError,
     r"one weight per row, shape \(50,\), got shape \(10,\)"),
    (dict(sample_weight=-SW), ValueError, r"`sample_weight` must hold finite numbers >= 0"),
    (dict(class_weight={0: 1.0}), TypeError, r"`class_weight` needs integer class targets"),
    (dict(class_weight={0: 1.0}, y={"a": Y}), TypeError, r"needs integer class targets `y`.*dict"),
    (dict(class_weight=[1.0, 2.0]), TypeError, r"`class_weight` must be a dict"),
    (dict(class_weight={"cat": 1.0}), TypeError, r"`class_weight` must be a dict"),
    (dict(class_weight={0: -1.0}), ValueError, r"class_weight\[0\] = -1.0"),
])
def test_bad_weights_in_fit_are_refused_before_compiling(options, error, match):
    with counting_compilations() as compiled, pytest.raises(error, match=match):
        _fit(**options)
    assert compiled == []
