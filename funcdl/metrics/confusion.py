"""The confusion matrix and the metrics read from it: precision, recall, f1_score.

pred: class scores `(n, C)` (or `(..., C)`) with C = num_classes, predicted class ŷ = argmax
over the last axis; or one output `(n,)` / `(n, 1)` with num_classes = 2, ŷ = [pred > 0.5].
target: integer labels `(n,)` (or `(n, 1)`). All four share one state, the `(C, C)` integer
matrix M with M[t, p] = #{i : y_i = t, ŷ_i = p} (rows true, columns predicted, sklearn's
convention); a target outside 0..C-1 is not counted (sklearn with `labels=range(C)`). Merging
adds matrices, so every value is exact over any batching. Per class c, with
tp_c = M[c, c], predicted_c = sum_t M[t, c], true_c = sum_p M[c, p]:

    precision_c = tp_c / predicted_c     recall_c = tp_c / true_c
    f1_c = 2 tp_c / (true_c + predicted_c)      (= 2 P R / (P + R))

a zero denominator giving 0.0 (sklearn's zero_division="warn", without the warning). Averages:

    "macro"     the mean over the classes present (true_c + predicted_c > 0): sklearn's
                default `labels=None` leaves classes out that neither appear nor are predicted
    "weighted"  sum_c true_c v_c / sum_c true_c
    "micro"     from the summed counts: sum tp / sum predicted, sum tp / sum true, and
                2 sum tp / (sum true + sum predicted); all three equal the accuracy

With no rows counted the averages are nan.
"""
import jax.numpy as jnp

from funcdl.construction import recorded
from funcdl.metrics.base import Metric
from funcdl.metrics.checks import (
    accumulation_dtype,
    check_average,
    check_int_at_least,
    count_dtype,
    has_class_scores,
    labelled_rows,
    predicted_labels,
)


def counted_confusions(num_classes, finish) -> Metric:
    """The Metric `finish(M)` over the `(C, C)` confusion-matrix state M."""
    check_int_at_least(num_classes, "num_classes", 2)

    def init():
        return jnp.zeros((num_classes, num_classes), count_dtype())

    def update(state, pred, target):
        pred, labels = labelled_rows(pred, target)
        classes = pred.shape[-1] if has_class_scores(pred) else 2
        if classes != num_classes:
            raise ValueError(f"`pred` must hold scores of `num_classes` = {num_classes} classes, "
                             f"shape (n, {num_classes}) (or one output (n,) when num_classes = 2), "
                             f"got shape {pred.shape}")
        predicted = predicted_labels(pred)
        counted = (labels >= 0) & (labels < num_classes)
        cell = jnp.where(counted, labels * num_classes + predicted, 0)
        counts = jnp.zeros((num_classes * num_classes,), count_dtype()).at[cell].add(
            counted.astype(count_dtype()))
        return merge(state, jnp.reshape(counts, (num_classes, num_classes)))

    def merge(a, b):
        return a + b

    def compute(state):
        return finish(state)

    return Metric(init, update, compute, merge)


def divided(numerator, denominator):
    """numerator / denominator, 0.0 where the denominator is 0 (sklearn's zero_division)."""
    return jnp.where(denominator > 0, numerator / jnp.where(denominator > 0, denominator, 1), 0.0)


def per_class_counts(matrix):
    """`(tp, true, predicted)`, each `(C,)` in the accumulation dtype, of a confusion matrix."""
    matrix = matrix.astype(accumulation_dtype())
    return jnp.diagonal(matrix), jnp.sum(matrix, axis=1), jnp.sum(matrix, axis=0)


def averaged(average, ratio):
    """`finish(M)`: the per-class ratio `ratio(tp, true, predicted) -> (top, bottom)` of a
    confusion matrix M, averaged as `average`."""

    def finish(matrix):
        top, bottom = ratio(*per_class_counts(matrix))
        if average == "micro":
            return jnp.sum(top) / jnp.sum(bottom)
        _, true, predicted = per_class_counts(matrix)
        values = divided(top, bottom)
        if average == "weighted":
            return jnp.sum(values * true) / jnp.sum(true)
        present = (true + predicted > 0).astype(values.dtype)
        return jnp.sum(values * present) / jnp.sum(present)

    return finish


@recorded
def confusion_matrix(num_classes: int) -> Metric:
    """The `(C, C)` matrix of counts M[t, p] = #{i : y_i = t, ŷ_i = p}, C = num_classes.

    Rows are true classes, columns predicted ones (sklearn's convention); its value is the
    integer matrix itself (int32, int64 with x64), not a scalar, so `fit` refuses it while
    `compute` and `evaluate` return it. sklearn:
    sklearn.metrics.confusion_matrix(target, predicted, labels=range(num_classes)).

    Examples:
      >>> import jax.numpy as jnp
      >>> import funcdl as fdl
      >>> scores = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
      >>> fdl.metrics.compute(fdl.metrics.confusion_matrix(2), scores, jnp.array([0, 1, 1])).tolist()
      [[1, 0], [1, 1]]
    """
    return counted_confusions(num_classes, lambda matrix: matrix)


@recorded
def precision(num_classes: int, average: str = "macro") -> Metric:
    """Precision tp_c / predicted_c, averaged as `average` ("macro", "micro", "weighted").

    Definitions, shapes and zero division in the module docstring. sklearn:
    sklearn.metrics.precision_score(target, predicted, average=average).

    Examples:
      >>> import jax.numpy as jnp
      >>> import funcdl as fdl
      >>> scores = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])  # predicted 0, 1, 0
      >>> fdl.metrics.compute(fdl.metrics.precision(2), scores, jnp.array([0, 1, 1]))  # (1/2 + 1) / 2
      Array(0.75, dtype=float32)
    """
    return counted_confusions(num_classes, averaged(check_average(average),
                                                    lambda tp, true, predicted: (tp, predicted)))


@recorded
def recall(num_classes: int, average: str = "macro") -> Metric:
    """Recall tp_c / true_c, averaged as `average` ("macro", "micro", "weighted").

    Definitions, shapes and zero division in the module docstring. sklearn:
    sklearn.metrics.recall_score(target, predicted, average=average).

    Examples:
      >>> import jax.numpy as jnp
      >>> import funcdl as fdl
      >>> scores = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])  # predicted 0, 1, 0
      >>> fdl.metrics.compute(fdl.metrics.recall(2), scores, jnp.array([0, 1, 1]))  # (1 + 1/2) / 2
      Array(0.75, dtype=float32)
    """
    return counted_confusions(num_classes, averaged(check_average(average),
                                                    lambda tp, true, predicted: (tp, true)))


@recorded
def f1_score(num_classes: int, average: str = "macro") -> Metric:
    """F1 2 tp_c / (true_c + predicted_c), averaged as `average` ("macro", "micro", "weighted").

    Per class the harmonic mean of precision and recall, 0.0 where both are 0/0. Definitions,
    shapes and zero division in the module docstring. sklearn:
    sklearn.metrics.f1_score(target, predicted, average=average).

    Examples:
      >>> import jax.numpy as jnp
      >>> import funcdl as fdl
      >>> scores = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])  # predicted 0, 1, 0
      >>> fdl.metrics.compute(fdl.metrics.f1_score(2), scores, jnp.array([0, 1, 1]))  # (2/3 + 2/3) / 2
      Array(0.6666667, dtype=float32)
    """
    return counted_confusions(num_classes, averaged(check_average(average),
                                                    lambda tp, true, predicted: (2 * tp, true + predicted)))
