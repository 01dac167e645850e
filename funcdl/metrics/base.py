"""The metric protocol: `Metric(init, update, compute, merge)`, four pure functions.

    state = m.init()                         # a pytree of arrays (sums, counts, maxima)
    state = m.update(state, pred, target)    # one batch
    value = m.compute(state)                 # the metric over every row seen
    state = m.merge(state_a, state_b)        # associative: two partial states as one

A state holds sums and counts (or maxima), never a mean, so a metric computed over any
batching of the rows, on one device or many, equals the metric over all rows at once
(torchmetrics' and clu.metrics' design). States accumulate in float32 at least (float64 with
x64), whatever the dtype of the predictions.

`init()` takes no arguments, so it cannot know how many outputs the predictions have: it
returns a seed (e.g. 0-d zeros) that `update` broadcasts to the per-output shape of the first
batch. `initial_state` gives that shape up front, as a compiled loop's carry needs it.
"""
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from funcdl.construction import recorded_eq, recorded_hash, recorded_ne

State = Any  # a pytree of arrays


class Metric(NamedTuple):
    """A metric as four pure functions over a mergeable state (see the module docstring).

    A built-in metric equals and hashes as the same call made again (`accuracy() ==
    accuracy()`, `precision(3) != precision(4)`), so `jax.jit` caches keyed on it reuse their
    programs (see `funcdl.construction`); `Metric(init, update, compute, merge)` built by hand
    compares by its four functions.
    """

    init: Callable[[], State]
    update: Callable[[State, Any, Any], State]
    compute: Callable[[State], Any]
    merge: Callable[[State, State], State]

    # By the call that built the metric (funcdl.construction); by the functions otherwise.
    __eq__ = recorded_eq
    __ne__ = recorded_ne
    __hash__ = recorded_hash


def compute(metric: Metric, pred: jax.Array, target: jax.Array) -> Any:
    """`metric` over whole arrays: `metric.compute(metric.update(metric.init(), pred, target))`."""
    if not isinstance(metric, Metric):
        raise TypeError(f"`metric` must be a fdl.metrics.Metric, got {type(metric).__name__}")
    return metric.compute(metric.update(metric.init(), pred, target))


def initial_state(metric: Metric, pred: jax.Array | jax.ShapeDtypeStruct,
                  target: jax.Array | jax.ShapeDtypeStruct) -> State:
    """The state before any batch, with the shapes and dtypes `metric.update` gives it for
    batches like `pred`, `target` (arrays or `jax.ShapeDtypeStruct`s): `init()` broadcast to
    them. A compiled loop (`lax.scan`) starts its carry from this."""
    shaped = jax.eval_shape(metric.update, metric.init(), pred, target)
    return jax.tree_util.tree_map(
        lambda seed, struct: jnp.broadcast_to(jnp.asarray(seed, struct.dtype), struct.shape),
        metric.init(), shaped)
