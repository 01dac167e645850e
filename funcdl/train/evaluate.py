"""`evaluate` and `predict`: jitted, in batches (so that large inputs fit in memory), over all
rows, with `train=False`. The last partial batch is one more call with its own shape, and
`evaluate` weights each batch's loss and metrics by its number of rows."""
import functools
from collections.abc import Mapping
from typing import Callable, Optional

import jax
import numpy as np

from funcdl.train import checks
from funcdl.train.accumulate import results
from funcdl.train.batches import batch_layout, stacked
from funcdl.train.broadcast import warn_if_broadcasting
from funcdl.train.stateful import check_model_variables
from funcdl.train.epochs import evaluation_totals
from funcdl.train.step import (ModelLike, PyTree, StepSpec, check_loss, check_model,
                               forward)


@functools.partial(jax.jit, static_argnames=("spec", "n_rows", "batch_size"))
def _evaluate(params, x, y, *, spec, n_rows, batch_size):
    totals = evaluation_totals(spec, params, (x, y), n_rows, batch_size)
    return results(spec.metrics, totals, n_rows)


@functools.partial(jax.jit, static_argnames=("model", "n_rows", "batch_size"))
def _predict(params, x, *, model, n_rows, batch_size):
    spec = StepSpec(model, None, None, "jax", None)
    return stacked(lambda xb: forward(spec, params, xb, None, False), (x,), n_rows, batch_size)


def evaluate(model: ModelLike, params: PyTree, loss_fn: Callable, x: PyTree, y: PyTree, *,
             batch_size: Optional[int] = None,
             metrics: Optional[Mapping[str, Callable]] = None) -> dict:
    """`{"loss": float, **{name: value}}`: `loss_fn` and each metric over all rows of `(x, y)`.

    model: a `fdl.nn.Model` (called with `train=False`, and only the keywords its apply
    accepts) or `apply(params, x)`; a stateful Model takes its `Variables` as `params` and
    normalises with their state (running statistics), which it leaves as it is. x, y: arrays
    `(n, ...)` or pytrees of them (dicts, tuples) with one number of rows; `model` and `loss_fn` receive batches of the same
    structure. A loss whose predictions and targets broadcast to another shape than the
    predictions' (`(n, 1)` against `(n,)`) gets a UserWarning. Nothing is donated.
    metrics: `{name: m}`, `m` a function `(pred, target) -> scalar` or an `fdl.metrics.Metric`.
    The loss and each metric function are averaged batch by batch, each batch weighted by its
    rows: with the mean losses of `fdl.losses` and mean metrics (accuracy, MSE) this is the
    mean over all rows whatever the batch size; for others (a sum-reduced loss, a function
    computing R² or RMSE) it depends on the batch size. An `fdl.metrics.Metric` is exact over
    all rows whatever the batch size (its state is summed across batches). Values are floats,
    accumulated in float32 at least (float64 with x64); a Metric whose value is an array
    (`confusion_matrix`) comes back as a NumPy array. batch_size: rows per batch (None: all).

    Examples:
      >>> import jax.numpy as jnp
      >>> from funcdl import losses
      >>> apply = lambda params, x: x * params["a"]
      >>> x = jnp.arange(5.0).reshape(5, 1)
      >>> evaluate(apply, {"a": jnp.float32(2.0)}, losses.mse_loss, x, x, batch_size=2)
      {'loss': 6.0}
    """
    check_model(model)
    check_model_variables(model, params, "evaluate")
    check_loss(loss_fn)
    n_rows = checks.check_pair(x, y, "x", "y")
    batch_size = checks.check_batch_size(batch_size)
    metrics = checks.check_metrics(metrics)
    spec = StepSpec(model, loss_fn, None, "jax", None, metrics)
    warn_if_broadcasting(spec, params, x, y, batch_layout(n_rows, batch_size)[0], None,
                         train=False, where="evaluate")
    values = _evaluate(params, x, y, spec=spec, n_rows=n_rows, batch_size=batch_size)
    names = ["loss"] + [name for name, _ in metrics]
    return {name: float(value) if np.ndim(value) == 0 else np.asarray(value)
            for name, value in zip(names, jax.device_get(values))}


def predict(model: ModelLike, params: PyTree, x: PyTree, *,
            batch_size: Optional[int] = None) -> PyTree:
    """The model's predictions for all rows of `x` (`train=False`) with `params` (trained
    values of what `init` returned), computed batch by batch:
    `x` `(n, ...)` -> `(n, ...)` as the model gives them. `x` may be a pytree of arrays (dicts,
    tuples) with one number of rows, and the predictions a pytree of `(n, ...)` arrays; a
    `fdl.nn.Model` gets only the keywords its apply accepts (a stateful one its `Variables`,
    whose state is used and not changed). Nothing is donated.

    Examples:
      >>> import jax.numpy as jnp
      >>> predict(lambda p, x: x + p, jnp.float32(1.0), jnp.zeros((5, 2)), batch_size=2).shape
      (5, 2)
    """
    check_model(model)
    check_model_variables(model, params, "predict")
    n_rows = checks.tree_rows(x, "x")
    if n_rows == 0:
        raise ValueError("`x` must have at least one row, got 0")
    batch_size = checks.check_batch_size(batch_size)
    return _predict(params, x, model=model, n_rows=n_rows, batch_size=batch_size)
