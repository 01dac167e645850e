"""What `fit` and `evaluate` accumulate over the batches of an epoch: the loss and the metrics.

A metric is either a plain function `fn(pred, target) -> scalar` or an `fdl.metrics.Metric`.
Over the batches b of n rows (rows_b each)::

    loss, plain metric:   sum_b rows_b * fn(pred_b, target_b) / n     (a row-weighted mean:
                          exact for means such as MSE or accuracy, batch-dependent otherwise)
    Metric m:             m.compute(m.update(... m.update(s0, pred_1, target_1) ..., pred_B, ...))
                          (its state holds sums, counts or maxima: exact over all rows, whatever
                          the batch size; inside a mesh program the batch is the global batch,
                          so the state is the whole batch's, as on one device)

`Totals(sums, states)` is that running state, a pytree carried through the compiled scans:
`sums` the row-weighted sums of the loss and the plain metrics (1-d, in the accumulation
dtype), `states` one state per `Metric`. Every value is computed in its own dtype and only
then widened to the accumulation dtype (float32 at least, float64 with x64): a bfloat16
model's accuracy is the float32 fraction of correct rows.
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcdl.metrics.base import Metric, initial_state
from funcdl.metrics.checks import accumulation_dtype


class Totals(NamedTuple):
    sums: jax.Array  # (1 + number of plain metrics,): row-weighted sums, loss first
    states: tuple  # one fdl.metrics state per Metric, in the order of `metrics`


def _plain(metrics):
    return [(name, fn) for name, fn in metrics if not isinstance(fn, Metric)]


def _stateful(metrics):
    return [(name, m) for name, m in metrics if isinstance(m, Metric)]


def zero_totals(metrics, pred, target) -> Totals:
    """The totals before any batch; `pred`, `target` (arrays or ShapeDtypeStructs) are batches
    like those that follow (they give the metric states their shapes)."""
    sums = jnp.zeros((1 + len(_plain(metrics)),), accumulation_dtype())
    return Totals(sums, tuple(initial_state(m, pred, target) for _, m in _stateful(metrics)))


def _scalar(name: str, value):
    value = jnp.asarray(value)
    if value.shape != ():
        what = "`loss_fn`" if name == "loss" else f"`metrics[{name!r}]`"
        raise TypeError(f"{what} must return a scalar, got shape {value.shape}")
    return value.astype(accumulation_dtype())


def add_batch(metrics, totals: Totals, pred, target, loss, rows) -> Totals:
    """`totals` after one batch of `rows` rows with predictions `pred` and loss `loss`."""
    values = [_scalar("loss", loss)] + [_scalar(name, fn(pred, target))
                                        for name, fn in _plain(metrics)]
    sums = totals.sums + jnp.asarray(rows).astype(totals.sums.dtype) * jnp.stack(values)
    states = tuple(m.update(state, pred, target)
                   for (_, m), state in zip(_stateful(metrics), totals.states))
    return Totals(sums, states)


def results(metrics, totals: Totals, n_rows: int) -> list:
    """`[loss, *metrics]` over all `n_rows` rows, in the order of `metrics`: plain values are
    row-weighted means, a Metric's is its `compute` (an array of any shape: `evaluate`
    returns it as it is)."""
    means = totals.sums / n_rows
    plain = iter(range(1, means.shape[0]))
    states = iter(totals.states)
    out = [means[0]]
    for _, fn in metrics:
        if isinstance(fn, Metric):
            out.append(jnp.asarray(fn.compute(next(states))).astype(accumulation_dtype()))
        else:
            out.append(means[next(plain)])
    return out


def result_row(metrics, totals: Totals, n_rows: int):
    """`results` as one 1-d vector (fit's history row); a Metric whose value is not a scalar is
    a TypeError naming it (`evaluate` returns such values; the history holds one number per
    epoch)."""
    values = results(metrics, totals, n_rows)
    for (name, _), value in zip([("loss", None)] + list(metrics), values):
        if value.shape != ():
            raise TypeError(f"`metrics[{name!r}]` computes an array of shape {value.shape}; "
                            "fit's history holds one number per epoch, so fit takes scalar "
                            "metrics only (use evaluate for this one)")
    return jnp.stack(values)


def keep_if(ok, new: Any, old: Any):
    """`new` where the traced bool `ok` holds, else `old`, leaf by leaf (a select, no branch)."""
    return jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, old)
