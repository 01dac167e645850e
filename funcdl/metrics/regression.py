"""Regression metrics with scikit-learn's definitions and defaults.

pred, target: the same shape `(n,)` or `(n, ...)`, or `(n,)` against `(n, 1)`; each position
after the row axis is an output (k of them, k = 1 for `(n,)`). Integer and bool targets are
cast. With e_ij = pred_ij - target_ij over rows i = 1..n and outputs j = 1..k, computed in
float32 (float64 with x64) whatever pred's dtype:

    mean_squared_error       (1/k) sum_j (1/n) sum_i e_ij²
    root_mean_squared_error  (1/k) sum_j sqrt((1/n) sum_i e_ij²)
    mean_absolute_error      (1/k) sum_j (1/n) sum_i |e_ij|
    r2_score                 (1/k) sum_j (1 - SS_res,j / SS_tot,j),
                             SS_res,j = sum_i e_ij², SS_tot,j = sum_i (target_ij - mean_i target_ij)²
    max_error                max_i |e_i|                      (one output only)

The mean over outputs is sklearn's `multioutput="uniform_average"`. A state holds per-output
sums and a row count (r2_score: Chan et al.'s pairwise update of the squared deviations;
max_error: a maximum), so every value is exact over any batching of the rows. With no rows the
means are nan.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcdl.construction import recorded
from funcdl.metrics.base import Metric
from funcdl.metrics.checks import accumulation_dtype, count_dtype, regression_pair, same_outputs


class RowSums(NamedTuple):
    """State of the mean errors: a per-row error summed over the rows seen."""
    total: jax.Array  # (k,) float: sum over rows of the per-row error, per output (() from init)
    count: jax.Array  # () int: rows seen


def summed_errors(name, error, finish) -> Metric:
    """The Metric `(1/k) sum_j finish((1/n) sum_i error(e_ij))` over a `RowSums` state."""

    def init():
        return RowSums(jnp.zeros((), accumulation_dtype()), jnp.zeros((), count_dtype()))

    def update(state, pred, target):
        pred, target = regression_pair(pred, target)
        return merge(state, RowSums(jnp.sum(error(pred - target), axis=0),
                                    jnp.asarray(pred.shape[0], count_dtype())))

    def merge(a, b):
        same_outputs(a.total, b.total, name)
        return RowSums(a.total + b.total, a.count + b.count)

    def compute(state):
        return jnp.mean(finish(state.total / state.count.astype(state.total.dtype)))

    return Metric(init, update, compute, merge)


@recorded
def mean_squared_error() -> Metric:
    """Mean squared error, `(1/k) sum_j (1/n) sum_i (pred_ij - target_ij)²` (module docstring).

    sklearn: sklearn.metrics.mean_squared_error(target, pred).

    Examples:
      >>> import jax.numpy as jnp
      >>> import funcdl as fdl
      >>> fdl.metrics.compute(fdl.metrics.mean_squared_error(), jnp.array([1.0, 2.0, 4.0]),
      ...                     jnp.array([1.0, 1.0, 1.0]))          # (0 + 1 + 9) / 3
      Array(3.3333333, dtype=float32)
    """
    return summed_errors("mean_squared_error", jnp.square, lambda mean: mean)


@recorded
def root_mean_squared_error() -> Metric:
    """Root mean squared error per output, averaged: `(1/k) sum_j sqrt((1/n) sum_i e_ij²)`.

    Not the root of the mean over all outputs, and not a mean of per-batch roots: the state
    holds the squared errors' sums. sklearn: sklearn.metrics.root_mean_squared_error.

    Examples:
      >>> import jax.numpy as jnp
      >>> import funcdl as fdl
      >>> pred, target = jnp.array([[1.0, 0.0], [3.0, 0.0]]), jnp.array([[1.0, 2.0], [1.0, 2.0]])
      >>> fdl.metrics.compute(fdl.metrics.root_mean_squared_error(), pred, target)  # (√2 + 2) / 2
      Array(1.7071068, dtype=float32)
    """
    return summed_errors("root_mean_squared_error", jnp.square, jnp.sqrt)


@recorded
def mean_absolute_error() -> Metric:
    """Mean absolute error, `(1/k) sum_j (1/n) sum_i |pred_ij - target_ij|`.

    sklearn: sklearn.metrics.mean_absolute_error(target, pred).

    Examples:
      >>> import jax.numpy as jnp
      >>> import funcdl as fdl
      >>> fdl.metrics.compute(fdl.metrics.mean_absolute_error(), jnp.array([1.0, 2.0, 4.0]),
      ...                     jnp.array([1.0, 1.0, 1.0]))          # (0 + 1 + 3) / 3
      Array(1.3333334, dtype=float32)
    """
    return summed_errors("mean_absolute_error", jnp.abs, lambda mean: mean)


class R2State(NamedTuple):
    """State of r2_score; every array but `count` is `(k,)` per output (() from init)."""
    count: jax.Array                # () int: rows seen
    target_sum: jax.Array           # sum_i target_ij
    target_deviations: jax.Array    # SS_tot: sum_i (target_ij - mean_i target_ij)²
    residual_squares: jax.Array     # SS_res: sum_i (pred_ij - target_ij)²
    target_min: jax.Array           # min_i target_ij (+inf from init)
    target_max: jax.Array           # max_i target_ij (-inf from init)


@recorded
def r2_score() -> Metric:
    """Coefficient of determination per output, averaged: `(1/k) sum_j (1 - SS_res,j / SS_tot,j)`.

    SS_res,j = sum_i (pred_ij - target_ij)², SS_tot,j = sum_i (target_ij - mean_i target_ij)².
    sklearn's `force_finite=True`: an output with SS_res = 0 scores 1.0, one with a constant
    target (SS_tot = 0, all its values equal; told exactly by its minimum and maximum) and
    SS_res > 0 scores 0.0. Fewer than two rows give nan, as sklearn does.

    SS_tot is merged by Chan et al.'s pairwise update, with n = n_a + n_b and δ the difference
    of the two parts' means: SS_tot = SS_tot,a + SS_tot,b + δ² n_a n_b / n; each batch's part
    is its own sum of squared deviations (no cancellation of sum y² - (sum y)² / n).
    sklearn: sklearn.metrics.r2_score(target, pred).

    Examples:
      >>> import jax.numpy as jnp
      >>> import funcdl as fdl
      >>> target = jnp.array([1.0, 2.0, 3.0, 4.0])              # SS_tot = 5
      >>> fdl.metrics.compute(fdl.metrics.r2_score(), jnp.array([1.0, 2.0, 3.0, 3.0]), target)
      Array(0.8, dtype=float32)
    """

    def init():
        zero = jnp.zeros((), accumulation_dtype())
        return R2State(jnp.zeros((), count_dtype()), zero, zero, zero, zero + jnp.inf, zero - jnp.inf)

    def update(state, pred, target):
        pred, target = regression_pair(pred, target)
        rows = pred.shape[0]
        target_sum = jnp.sum(target, axis=0, keepdims=True)  # (1, k): no rank promotion
        deviations = target - target_sum / max(rows, 1)
        batch = R2State(jnp.asarray(rows, count_dtype()), target_sum[0],
                        jnp.sum(jnp.square(deviations), axis=0),
                        jnp.sum(jnp.square(pred - target), axis=0),
                        jnp.min(target, axis=0, initial=jnp.inf), jnp.max(target, axis=0, initial=-jnp.inf))
        return merge(state, batch)

    def merge(a, b):
        same_outputs(a.target_sum, b.target_sum, "r2_score")
        dtype = a.target_sum.dtype
        n_a, n_b = a.count.astype(dtype), b.count.astype(dtype)
        n = n_a + n_b
        delta = b.target_sum / jnp.maximum(n_b, 1) - a.target_sum / jnp.maximum(n_a, 1)
        return R2State(a.count + b.count, a.target_sum + b.target_sum,
                       a.target_deviations + b.target_deviations
                       + jnp.square(delta) * (n_a * n_b / jnp.maximum(n, 1)),
                       a.residual_squares + b.residual_squares,
                       jnp.minimum(a.target_min, b.target_min), jnp.maximum(a.target_max, b.target_max))

    def compute(state):
        residual = state.residual_squares
        total = jnp.where(state.target_min == state.target_max, 0, state.target_deviations)
        score = jnp.where(residual == 0, 1.0,
                          jnp.where(total == 0, 0.0, 1 - residual / jnp.where(total == 0, 1, total)))
        return jnp.where(state.count < 2, jnp.nan, jnp.mean(score))

    return Metric(init, update, compute, merge)


@recorded
def max_error() -> Metric:
    """Largest absolute error, `max_i |pred_i - target_i|`, for one output.

    pred, target: `(n,)` or `(n, 1)`. sklearn's max_error refuses several outputs (the max over
    all of them and the mean of per-output maxima would both be fair readings), so more than
    one output is a ValueError; flatten both arrays for the max over every entry. The state is
    the maximum so far (0 before any row); merging takes the larger. nan errors propagate.
    sklearn: sklearn.metrics.max_error(target, pred).

    Examples:
      >>> import jax.numpy as jnp
      >>> import funcdl as fdl
      >>> fdl.metrics.compute(fdl.metrics.max_error(), jnp.array([1.0, 2.0, 4.0]),
      ...                     jnp.array([1.5, 1.0, 1.0]))
      Array(3., dtype=float32)
    """

    def init():
        return jnp.zeros((), accumulation_dtype())

    def update(state, pred, target):
        shape = jnp.shape(pred)
        pred, target = regression_pair(pred, target)
        if pred.shape[1] != 1:
            raise ValueError(f"max_error takes one output, `pred` of shape (n,) or (n, 1), got "
                             f"{shape} (as sklearn; flatten pred and target for the max over "
                             f"every entry)")
        return merge(state, jnp.max(jnp.abs(pred - target), initial=0.0))

    def merge(a, b):
        return jnp.maximum(a, b)

    def compute(state):
        return state

    return Metric(init, update, compute, merge)
