"""Accuracy and top-k accuracy, with scikit-learn's definitions, over integer class labels.

pred: class scores `(n, C)` (or `(..., C)`), C > 1, or one output per row `(n,)` / `(n, 1)`
(a probability or any score thresholded at 0.5); target: integer labels `(n,)` (or `(n, 1)`;
for `(..., C)` scores, pred.shape[:-1]). Float targets are a TypeError: cast labels held as
floats with `target.astype(int)`. The state counts hits and rows, both integers, so the value
is exact over any batching:

    accuracy        (1/n) sum_i [ŷ_i = y_i],   ŷ_i = argmax_c pred_ic,  or [pred_i > 0.5]
    top_k_accuracy  (1/n) sum_i [rank_i < k],  rank_i = #{c : pred_ic > pred_iy}
                                                       + #{c > y : pred_ic = pred_iy},  y = y_i

(ties in top_k_accuracy rank the higher class index first, as sklearn's reversed stable sort.)
With no rows the value is nan.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcdl.construction import recorded
from funcdl.metrics.base import Metric
from funcdl.metrics.checks import (
    accumulation_dtype,
    check_int_at_least,
    count_dtype,
    has_class_scores,
    labelled_rows,
    predicted_labels,
)


class Hits(NamedTuple):
    """State of accuracy and top_k_accuracy."""
    hits: jax.Array   # () int: rows counted as correct
    count: jax.Array  # () int: rows seen


def counted_hits(hit) -> Metric:
    """The Metric `(1/n) sum_i hit(pred, labels)_i` over a `Hits` state."""

    def init():
        return Hits(jnp.zeros((), count_dtype()), jnp.zeros((), count_dtype()))

    def update(state, pred, target):
        pred, labels = labelled_rows(pred, target)
        hits = hit(pred, labels)
        return merge(state, Hits(jnp.sum(hits, dtype=count_dtype()),
                                 jnp.asarray(labels.shape[0], count_dtype())))

    def merge(a, b):
        return Hits(a.hits + b.hits, a.count + b.count)

    def compute(state):
        dtype = accumulation_dtype()
        return state.hits.astype(dtype) / state.count.astype(dtype)

    return Metric(init, update, compute, merge)


@recorded
def accuracy() -> Metric:
    """Fraction of rows whose predicted class is the target: `(1/n) sum_i [ŷ_i = y_i]`.

    ŷ = argmax over the last axis of class scores `(n, C)`, C > 1 (the first of equal maxima),
    or `pred > 0.5` for one output `(n,)` / `(n, 1)`; targets `(n,)` or `(n, 1)`, integers.
    A target outside the classes counts as wrong. sklearn: sklearn.metrics.accuracy_score
    (Keras's binary_accuracy for one output).

    Examples:
      >>> import jax.numpy as jnp
      >>> import funcdl as fdl
      >>> scores = jnp.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
      >>> fdl.metrics.compute(fdl.metrics.accuracy(), scores, jnp.array([1, 1, 1]))
      Array(0.6666667, dtype=float32)
      >>> fdl.metrics.compute(fdl.metrics.accuracy(), jnp.array([0.2, 0.6]), jnp.array([0, 0]))
      Array(0.5, dtype=float32)
    """
    return counted_hits(lambda pred, labels: predicted_labels(pred) == labels)


@recorded
def top_k_accuracy(k: int = 2) -> Metric:
    """Fraction of rows whose target is among the `k` highest scores (sklearn's default k = 2).

    pred: class scores `(n, C)`, C > 1; target: integer labels `(n,)` (or `(n, 1)`). The target
    class y ranks after every class with a higher score and after every class of higher index
    with an equal one (sklearn's tie order); a row is a hit when fewer than k classes rank before
    y. A target outside 0..C-1 is a miss; k >= C scores every in-range row a hit.
    sklearn: sklearn.metrics.top_k_accuracy_score(target, pred, k=k, labels=range(C)).

    Examples:
      >>> import jax.numpy as jnp
      >>> import funcdl as fdl
      >>> scores = jnp.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
      >>> fdl.metrics.compute(fdl.metrics.top_k_accuracy(2), scores, jnp.array([1, 0]))
      Array(0.5, dtype=float32)
    """
    check_int_at_least(k, "k", 1)

    def hit(pred, labels):
        if not has_class_scores(pred):
            raise ValueError(f"top_k_accuracy takes class scores, `pred` of shape (n, C) with C > 1, "
                             f"got {pred.shape}; use accuracy() for one output")
        classes = pred.shape[-1]
        scores = jnp.reshape(pred, (-1, classes))
        inside = (labels >= 0) & (labels < classes)
        label = jnp.clip(labels, 0, classes - 1)[:, None]                        # (N, 1)
        own = jnp.take_along_axis(scores, label, axis=1)                          # (N, 1)
        index = jnp.arange(classes, dtype=label.dtype)[None, :]                  # (1, C)
        before = (scores > own) | ((scores == own) & (index > label))             # (N, C)
        return inside & (jnp.sum(before, axis=1) < k)

    return counted_hits(hit)
