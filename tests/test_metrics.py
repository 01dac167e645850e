"""fdl.metrics against scikit-learn's definitions written out in NumPy (float64), and the
properties that make a Metric exact: any batching, merging, jit and lax.scan give the value
over all rows; bfloat16 predictions give the float32 computation; bad input is refused."""
import pathlib
import re

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import funcdl as fdl
from funcdl.metrics import initial_state

M = fdl.metrics
ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---- scikit-learn's definitions, written out -------------------------------------------------
def as_columns(a):
    """sklearn's `_check_reg_targets`: a 1-d target is one output, `(n, 1)`."""
    a = np.asarray(a, np.float64)
    return a.reshape(len(a), -1)


def sk_mean_squared_error(target, pred):
    return np.mean(np.mean((as_columns(target) - as_columns(pred)) ** 2, axis=0))


def sk_root_mean_squared_error(target, pred):
    return np.mean(np.sqrt(np.mean((as_columns(target) - as_columns(pred)) ** 2, axis=0)))


def sk_mean_absolute_error(target, pred):
    return np.mean(np.mean(np.abs(as_columns(target) - as_columns(pred)), axis=0))


def sk_r2_score(target, pred):
    """sklearn.metrics.r2_score with its defaults (multioutput="uniform_average",
    force_finite=True): per output 1 - SS_res / SS_tot, 1.0 where SS_res = 0, 0.0 where only
    SS_tot = 0; nan for fewer than two samples."""
    target, pred = as_columns(target), as_columns(pred)
    if len(target) < 2:
        return np.nan
    numerator = ((target - pred) ** 2).sum(axis=0)
    denominator = ((target - np.average(target, axis=0)) ** 2).sum(axis=0)
    nonzero_numerator, nonzero_denominator = numerator != 0, denominator != 0
    scores = np.ones(target.shape[1])
    valid = nonzero_numerator & nonzero_denominator
    scores[valid] = 1 - numerator[valid] / denominator[valid]
    scores[nonzero_numerator & ~nonzero_denominator] = 0.0
    return np.average(scores)


def sk_max_error(target, pred):
    return np.max(np.abs(np.ravel(target) - np.ravel(pred)))


def predicted_classes(pred):
    """argmax of class scores `(n, C)`, or `pred > 0.5` for one output."""
    pred = np.asarray(pred, np.float64)
    if pred.ndim == 2 and pred.shape[1] > 1:
        return np.argmax(pred, axis=1)
    return (pred.ravel() > 0.5).astype(np.int64)


def sk_accuracy(target, pred):
    return np.mean(np.ravel(target) == predicted_classes(pred))


def sk_top_k_accuracy(target, score, k):
    """sklearn.metrics.top_k_accuracy_score(target, score, k=k, labels=range(C))."""
    sorted_pred = np.argsort(score, axis=1, kind="mergesort")[:, ::-1]
    hits = (np.ravel(target) == sorted_pred[:, :k].T).any(axis=0)
    return np.average(hits)


def sk_confusion_matrix(target, predicted, num_classes):
    """sklearn.metrics.confusion_matrix(target, predicted, labels=range(num_classes))."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for t, p in zip(np.ravel(target), predicted):
        if 0 <= t < num_classes:
            matrix[t, p] += 1
    return matrix


def sk_precision_recall_f1(target, predicted, average):
    """sklearn's precision_recall_fscore_support(labels=None, zero_division="warn" -> 0.0)."""
    target = np.ravel(target)
    labels = np.union1d(target, predicted)
    tp = np.array([np.sum((target == c) & (predicted == c)) for c in labels], np.float64)
    pred_sum = np.array([np.sum(predicted == c) for c in labels], np.float64)
    true_sum = np.array([np.sum(target == c) for c in labels], np.float64)
    if average == "micro":
        tp, pred_sum, true_sum = tp.sum(keepdims=True), pred_sum.sum(keepdims=True), true_sum.sum(keepdims=True)

    def prf_divide(numerator, denominator):
        out = np.zeros_like(numerator)
        mask = denominator != 0
        out[mask] = numerator[mask] / denominator[mask]
        return out

    precision, recall = prf_divide(tp, pred_sum), prf_divide(tp, true_sum)
    f_score = prf_divide(2 * tp, true_sum + pred_sum)
    weights = true_sum if average == "weighted" else None
    if weights is not None and weights.sum() == 0:
        weights = None
    return tuple(float(np.average(v, weights=weights)) for v in (precision, recall, f_score))


def sk_precision(target, pred, average="macro"):
    return sk_precision_recall_f1(target, predicted_classes(pred), average)[0]


def sk_recall(target, pred, average="macro"):
    return sk_precision_recall_f1(target, predicted_classes(pred), average)[1]


def sk_f1(target, pred, average="macro"):
    return sk_precision_recall_f1(target, predicted_classes(pred), average)[2]


# ---- data ----------------------------------------------------------------------------------
C = 4


def regression(shape_pred, shape_target):
    def make(rng, n):
        target = rng.normal(3.0, 2.0, (n,) + shape_target[1:])
        pred = np.reshape(target, (n,) + shape_pred[1:]) + rng.normal(0.0, 1.0, (n,) + shape_pred[1:])
        return pred, target
    return make


def class_scores(rng, n):
    """Scores `(n, 4)` where class 3 is never predicted nor a target (absent: left out of a
    macro average), labels 0..2."""
    scores = rng.normal(size=(n, C))
    scores[:, 3] -= 100.0
    return scores, rng.integers(0, C - 1, n)


def one_output(rng, n):
    return rng.uniform(size=(n,)), rng.integers(0, 2, (n, 1))


REGRESSION_DATA = [("(n, 3)", regression((0, 3), (0, 3))), ("(n,)", regression((0,), (0,))),
                   ("(n, 1) vs (n,)", regression((0, 1), (0,)))]
# (name, metric, reference(target, pred), data): every built-in with scalar value
CASES = [(f"{name} {shape}", factory(), reference, data)
         for name, factory, reference in [("mse", M.mean_squared_error, sk_mean_squared_error),
                                          ("rmse", M.root_mean_squared_error, sk_root_mean_squared_error),
                                          ("mae", M.mean_absolute_error, sk_mean_absolute_error),
                                          ("r2", M.r2_score, sk_r2_score)]
         for shape, data in REGRESSION_DATA]
CASES += [("max_error (n,)", M.max_error(), sk_max_error, regression((0,), (0,))),
          ("max_error (n, 1)", M.max_error(), sk_max_error, regression((0, 1), (0, 1))),
          ("accuracy scores", M.accuracy(), sk_accuracy, class_scores),
          ("accuracy one output", M.accuracy(), sk_accuracy, one_output),
          ("top_2", M.top_k_accuracy(), lambda t, p: sk_top_k_accuracy(t, p, 2), class_scores),
          ("top_3", M.top_k_accuracy(3), lambda t, p: sk_top_k_accuracy(t, p, 3), class_scores)]
CASES += [(f"{name} {average} {kind}", factory(classes, average),
           lambda t, p, reference=reference, average=average: reference(t, p, average), data)
          for name, factory, reference in [("precision", M.precision, sk_precision),
                                           ("recall", M.recall, sk_recall), ("f1", M.f1_score, sk_f1)]
          for average in ("macro", "micro", "weighted")
          for kind, classes, data in [("scores", C, class_scores), ("one output", 2, one_output)]]
IDS = [case[0] for case in CASES]
# One case per kind of state (precision, recall and f1 share the confusion matrix), each
# shape of regression state once: the slower property tests run these.
BATCHING = ["mse (n, 3)", "rmse (n, 3)", "mae (n,)", "r2 (n, 3)", "r2 (n, 1) vs (n,)", "max_error (n,)",
            "accuracy scores", "accuracy one output", "top_2", "precision macro scores",
            "recall weighted one output", "f1 micro scores"]
SOME = [CASES[IDS.index(name)] for name in BATCHING]
# One row count nearly everywhere, and few in the hypothesis tests: eager ops and jitted updates
# compile once per shape, and compiling dominates this file's time.
ROWS = 16
rows_and_splits = st.sampled_from([1, 2, ROWS // 2]).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(st.integers(1, n - 1), max_size=4) if n > 1 else st.just([]),
                        st.booleans(), st.integers(0, 2 ** 16)))


def batches_of(arrays, cuts):
    """Split each array along its rows at `cuts` (sorted, unique)."""
    return list(zip(*(np.split(a, cuts) for a in arrays)))


def value_over(metric, batches):
    state = metric.init()
    for pred, target in batches:
        state = metric.update(state, pred, target)
    return metric.compute(state)


# ---- against scikit-learn's definitions --------------------------------------------------------
@pytest.mark.parametrize("name, metric, reference, data", CASES, ids=IDS)
def test_matches_sklearn_definition_in_float64(name, metric, reference, data, x64):
    pred, target = data(np.random.default_rng(0), ROWS)
    value = jax.jit(M.compute, static_argnums=0)(metric, pred, target)  # one compile, not one per op
    assert value.dtype == jnp.float64 and value.shape == ()
    np.testing.assert_allclose(value, reference(target, pred), rtol=1e-12)


def test_confusion_matrix_rows_true_columns_predicted(x64):
    scores, labels = class_scores(np.random.default_rng(2), ROWS)
    labels[:3] = [-1, C, C + 5]                     # outside the classes: not counted
    matrix = M.compute(M.confusion_matrix(C), scores, labels)
    assert matrix.dtype == jnp.int64 and matrix.shape == (C, C)
    np.testing.assert_array_equal(matrix, sk_confusion_matrix(labels, predicted_classes(scores), C))
    assert int(matrix.sum()) == ROWS - 3
    probability, labels = one_output(np.random.default_rng(3), ROWS)
    np.testing.assert_array_equal(M.compute(M.confusion_matrix(2), probability, labels),
                                  sk_confusion_matrix(labels, predicted_classes(probability), 2))


def test_a_target_outside_the_classes_is_wrong_for_accuracy_and_not_counted_by_precision(x64):
    scores, labels = class_scores(np.random.default_rng(4), ROWS)
    labels[:5] = C + 1
    assert float(M.compute(M.accuracy(), scores, labels)) == sk_accuracy(labels, scores)
    counted = labels < C
    np.testing.assert_allclose(M.compute(M.precision(C), scores, labels),
                               sk_precision(labels[counted], scores[counted]), rtol=1e-12)
    assert float(M.compute(M.top_k_accuracy(C), scores, labels)) == (ROWS - 5) / ROWS


def test_macro_average_leaves_out_the_classes_neither_true_nor_predicted(x64):
    scores = np.eye(5)[[0, 1, 1, 2]]                     # predicted 0, 1, 1, 2; 3 and 4 absent
    labels = np.array([0, 1, 2, 2])
    # precision per class 1, 1/2, 1 over classes 0, 1, 2 (sklearn's labels=None)
    assert float(M.compute(M.precision(5), scores, labels)) == pytest.approx(2.5 / 3, rel=1e-15)
    assert float(M.compute(M.recall(5, "weighted"), scores, labels)) == 0.75  # = accuracy


@pytest.mark.slow  # ~6 s: the slow tier (`make test-slow`, run by CI)
def test_r2_constant_targets_follow_force_finite(x64):
    # 0.1 is no binary fraction: the mean of a column of 0.1s need not be 0.1, and sklearn's own
    # SS_tot is then ~1e-33 rather than 0; the state knows the column is constant (min = max).
    target = np.stack([np.full(ROWS, 0.1), np.full(ROWS, 0.1), np.arange(float(ROWS))], axis=1)
    pred = target + np.array([0.0, 0.5, 0.0])            # outputs score 1.0, 0.0, 1.0
    for cuts in ([], [ROWS // 2], [1, 3, ROWS - 1]):
        value = value_over(M.r2_score(), batches_of((pred, target), cuts))
        assert float(value) == pytest.approx(2 / 3, rel=1e-15), cuts
    whole = np.stack([np.full(ROWS, 2.0), np.arange(float(ROWS))], axis=1)
    np.testing.assert_allclose(M.compute(M.r2_score(), whole + 1.0, whole),
                               sk_r2_score(whole, whole + 1.0), rtol=1e-12)


def test_r2_needs_two_rows_and_empty_means_are_nan(x64):
    assert np.isnan(M.compute(M.r2_score(), np.ones((1, 2)), np.zeros((1, 2))))
    for metric in (M.mean_squared_error(), M.accuracy(), M.precision(3), M.r2_score()):
        assert np.isnan(metric.compute(metric.init())), metric
    assert float(M.max_error().compute(M.max_error().init())) == 0.0


def test_top_k_ties_rank_the_higher_class_first_as_sklearn():
    scores = np.array([[1.0, 1.0, 1.0, 0.0]] * 4)
    labels = np.array([0, 1, 2, 3])
    for k in (1, 2, 3, 4):
        assert float(M.compute(M.top_k_accuracy(k), scores, labels)) == sk_top_k_accuracy(labels, scores, k)


def test_one_output_shapes_n_and_n1_give_one_value():
    rng = np.random.default_rng(5)
    pred, target = rng.normal(size=(9,)), rng.normal(size=(9,))
    for metric in (M.mean_squared_error(), M.r2_score(), M.max_error()):
        values = {float(M.compute(metric, p, t)) for p, t in
                  [(pred, target), (pred[:, None], target), (pred, target[:, None]),
                   (pred[:, None], target[:, None])]}
        assert len(values) == 1, metric
    labels = (target > 0).astype(int)
    assert len({float(M.compute(M.accuracy(), p, t)) for p, t in
                [(pred, labels), (pred[:, None], labels), (pred, labels[:, None])]}) == 1


# ---- exact over any batching ----------------------------------------------------------------
UPDATES = {}  # case name -> jax.jit(metric.update): one compile per batch shape, not per eager op


@pytest.mark.parametrize("name, metric, reference, data", SOME, ids=BATCHING)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=rows_and_splits)
def test_any_batching_and_merging_give_the_whole_value(name, metric, reference, data, drawn, x64):
    n, cuts, last_row_alone, seed = drawn
    pred, target = data(np.random.default_rng(seed), n)
    cuts = sorted(set(cuts) | ({n - 1} if last_row_alone and n > 1 else set()))
    whole = reference(target, pred)
    update = UPDATES.setdefault(name, jax.jit(metric.update))
    start = initial_state(metric, pred[:1], target[:1])
    state = start
    for batch in batches_of((pred, target), cuts):
        state = update(state, *batch)
    np.testing.assert_allclose(metric.compute(state), whole, rtol=1e-12, atol=1e-14)
    half = n // 2   # n = 1: an empty first part
    merged = metric.merge(update(start, pred[:half], target[:half]), update(start, pred[half:], target[half:]))
    np.testing.assert_allclose(metric.compute(merged), whole, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(metric.compute(metric.merge(metric.init(), merged)), whole, rtol=1e-12, atol=1e-14)


def test_merge_is_associative_and_matches_across_three_parts(x64):
    pred, target = regression((0, 3), (0, 3))(np.random.default_rng(6), ROWS)
    for metric in (M.r2_score(), M.root_mean_squared_error(), M.mean_absolute_error()):
        a, b, c = (metric.update(metric.init(), pred[i:j], target[i:j]) for i, j in ((0, 7), (7, 8), (8, ROWS)))
        left, right = metric.merge(metric.merge(a, b), c), metric.merge(a, metric.merge(b, c))
        np.testing.assert_allclose(metric.compute(left), metric.compute(right), rtol=1e-13)
        np.testing.assert_allclose(metric.compute(left), M.compute(metric, pred, target), rtol=1e-13)


def test_max_error_merges_by_the_maximum():
    metric = M.max_error()
    a = metric.update(metric.init(), np.array([1.0, 5.0]), np.array([0.0, 0.0]))
    b = metric.update(metric.init(), np.array([2.0]), np.array([4.0]))
    assert float(metric.merge(a, b)) == float(metric.merge(b, a)) == 5.0


# ---- dtypes, jit and lax.scan ------------------------------------------------------------------
@pytest.mark.parametrize("name, metric, reference, data", SOME, ids=BATCHING)
def test_bfloat16_predictions_give_the_float32_computation(name, metric, reference, data):
    pred, target = data(np.random.default_rng(7), ROWS)
    pred = jnp.asarray(pred, jnp.bfloat16)
    target = target.astype(np.float32) if target.dtype == np.float64 else target
    state = metric.update(metric.init(), pred, target)
    assert all(leaf.dtype in (jnp.float32, jnp.int32) for leaf in jax.tree_util.tree_leaves(state))
    value = metric.compute(state)
    assert value.dtype == jnp.float32
    np.testing.assert_array_equal(value, M.compute(metric, pred.astype(jnp.float32), target))
    # and float32 is the definition within float32 rounding
    np.testing.assert_allclose(value, reference(target, np.asarray(pred, np.float64)), rtol=2e-6)


def test_float64_states_under_x64_whatever_the_predictions_dtype(x64):
    pred = jnp.asarray(np.linspace(0.0, 1.0, 8), jnp.bfloat16)
    state = M.r2_score().update(M.r2_score().init(), pred, np.arange(8.0))
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(state)} == {jnp.dtype("float64"), jnp.dtype("int64")}


@pytest.mark.parametrize("name, metric, reference, data", SOME + [
    ("confusion_matrix", M.confusion_matrix(C), lambda t, p: sk_confusion_matrix(t, predicted_classes(p), C),
     class_scores)], ids=BATCHING + ["confusion_matrix"])
def test_jit_and_lax_scan_over_batches_give_the_whole_value(name, metric, reference, data, x64):
    pred, target = data(np.random.default_rng(8), ROWS)
    whole = reference(target, pred)
    stacked = [np.reshape(a, (4, ROWS // 4) + a.shape[1:]) for a in (pred, target)]

    @jax.jit
    def over_batches(preds, targets):
        def step(state, batch):
            return metric.update(state, *batch), None
        state, _ = jax.lax.scan(step, initial_state(metric, preds[0], targets[0]), (preds, targets))
        return metric.compute(state)

    np.testing.assert_allclose(over_batches(*stacked), whole, rtol=1e-12)


def test_initial_state_has_the_shapes_update_gives():
    pred, target = jax.ShapeDtypeStruct((5, 3), jnp.bfloat16), jax.ShapeDtypeStruct((5, 3), jnp.float32)
    state = initial_state(M.r2_score(), pred, target)
    assert state.target_sum.shape == (3,) and state.target_sum.dtype == jnp.float32
    assert float(state.target_min[0]) == np.inf and int(state.count) == 0
    assert initial_state(M.f1_score(3), jax.ShapeDtypeStruct((5, 3), jnp.float32),
                         jax.ShapeDtypeStruct((5,), jnp.int32)).shape == (3, 3)


def test_equal_calls_give_equal_metrics():
    assert M.accuracy() == M.accuracy() and hash(M.r2_score()) == hash(M.r2_score())
    assert M.precision(3) == M.precision(num_classes=3, average="macro")
    assert M.precision(3) != M.precision(4) and M.precision(3) != M.recall(3)
    assert M.top_k_accuracy() == M.top_k_accuracy(2) != M.top_k_accuracy(3)


# ---- bad input ----------------------------------------------------------------------------
ERRORS = [
    (lambda: M.top_k_accuracy(0), ValueError, r"`k` must be an int >= 1, got 0"),
    (lambda: M.top_k_accuracy(1.5), TypeError, r"`k` must be an int >= 1, got float 1.5"),
    (lambda: M.precision(0), ValueError, r"`num_classes` must be an int >= 2, got 0"),
    (lambda: M.confusion_matrix(1), ValueError, r"`num_classes` must be an int >= 2, got 1"),
    (lambda: M.recall(3.0), TypeError, r"`num_classes` must be an int >= 2, got float 3.0"),
    (lambda: M.f1_score(True), TypeError, r"`num_classes` must be an int >= 2, got bool True"),
    (lambda: M.precision(3, average="binary"), ValueError,
     r"`average` must be one of 'macro', 'micro', 'weighted', got 'binary'"),
    (lambda: M.compute(M.mean_squared_error(), np.zeros((5, 3)), np.zeros((5,))), ValueError,
     r"`target` must have the shape of `pred`, \(5, 3\) \(or \(n,\) against \(n, 1\)\), got \(5,\)"),
    (lambda: M.compute(M.r2_score(), np.zeros((1, 2)), np.zeros((2,))), ValueError,
     r"`target` must have the shape of `pred`, \(1, 2\)"),
    (lambda: M.compute(M.mean_absolute_error(), np.float32(1.0), np.float32(1.0)), ValueError,
     r"`pred` must have a row axis, shape \(n, \.\.\.\), got shape \(\)"),
    (lambda: M.compute(M.mean_absolute_error(), np.ones(3, np.complex64), np.ones(3)), TypeError,
     r"`pred` must hold real numbers \(bool, integer or floating\), got complex64"),
    (lambda: M.compute(M.max_error(), np.zeros((4, 2)), np.zeros((4, 2))), ValueError,
     r"max_error takes one output, `pred` of shape \(n,\) or \(n, 1\), got \(4, 2\)"),
    (lambda: M.compute(M.accuracy(), np.zeros((4, 3)), np.zeros(4)), TypeError,
     r"`target` of a classification metric must hold integer class labels .* got float32"),
    (lambda: M.compute(M.accuracy(), np.zeros((4, 3)), np.zeros((4, 3), int)), ValueError,
     r"`target` must have shape \(4,\) \(or \(4, 1\)\) for `pred` of shape \(4, 3\) \(class scores"),
    (lambda: M.compute(M.accuracy(), np.zeros(4), np.zeros(5, int)), ValueError,
     r"`target` must have shape \(4,\) \(or \(4, 1\)\) for `pred` of shape \(4,\) \(one output"),
    (lambda: M.compute(M.top_k_accuracy(), np.zeros(4), np.zeros(4, int)), ValueError,
     r"top_k_accuracy takes class scores, `pred` of shape \(n, C\) with C > 1, got \(4,\)"),
    (lambda: M.compute(M.precision(3), np.zeros((4, 5)), np.zeros(4, int)), ValueError,
     r"`pred` must hold scores of `num_classes` = 3 classes, shape \(n, 3\) .* got shape \(4, 5\)"),
    (lambda: M.compute(M.confusion_matrix(3), np.zeros(4), np.zeros(4, int)), ValueError,
     r"`num_classes` = 3 classes.* got shape \(4,\)"),
    (lambda: M.compute((lambda p, t: 0.0), np.zeros(3), np.zeros(3)), TypeError,
     r"`metric` must be a fdl.metrics.Metric, got function"),
]


@pytest.mark.parametrize("call, error, message", ERRORS, ids=[e[2][:40] for e in ERRORS])
def test_bad_input_is_refused_with_a_clear_message(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_states_over_different_outputs_do_not_merge():
    metric = M.mean_squared_error()
    one = metric.update(metric.init(), np.zeros((4, 1)), np.zeros((4, 1)))
    three = metric.update(metric.init(), np.zeros((4, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=re.escape("cannot merge mean_squared_error states over "
                                                   "different outputs: shapes (1,) and (3,)")):
        metric.update(one, np.zeros((4, 3)), np.zeros((4, 3)))
    r2 = M.r2_score()
    two, three_r2 = (r2.update(r2.init(), np.zeros((2, k)), np.zeros((2, k))) for k in (2, 3))
    with pytest.raises(ValueError, match="cannot merge r2_score states"):
        r2.merge(two, three_r2)
    assert metric.merge(one, metric.init()).total.shape == (1,) and three.total.shape == (3,)


# ---- the guide ---------------------------------------------------------------------------------
@pytest.mark.slow  # ~15 s: the slow tier (`make test-slow`, run by CI)
def test_every_python_block_of_the_metrics_guide_runs_alone():
    guide = ROOT / "docs" / "guides" / "metrics.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(), re.S)
    assert len(blocks) >= 3
    for code in blocks:
        exec(compile(code, str(guide), "exec"), {"__name__": "__guide__"})
