"""Gradient accumulation (`fit(accumulate=k)`): the steps of one epoch as micro-batches whose
gradients are averaged over groups of k, one optimizer update per group, inside the epoch's
compiled scan.

The epoch's S batches of `batch_size` rows (the last one possibly smaller) are the
micro-batches s = 0 .. S-1; group g is the micro-batches `g*k .. min((g+1)*k, S) - 1`, so the
last group holds the `S % k` left over when k does not divide S (applied as one update, as
Lightning does). Every micro-batch's gradient is taken at the group's params, and the update
uses their average weighted by rows::

    g_group = Σ_s rows_s g_s / Σ_s rows_s       (s in the group)
    params, opt_state = update(g_group)          (once per group: the step count moves once)

For a mean loss, `rows_s g_s` is the gradient of the micro-batch's summed loss, so `g_group`
is the gradient of the mean loss over the group's rows: the update of one batch k times as
large, within float32 rounding. A sum-reduced loss gets the row-weighted mean of its
micro-batch gradients (for equal micro-batches, the big batch's gradient divided by k, which
is also what Lightning's division of each loss by k gives). The sums accumulate in float32 at
least, whatever the params' dtype.

One scan over the micro-batches carries the running sums (`Group`), and a `lax.cond` applies
the update at a group's last micro-batch (`(s + 1) % k == 0` or `s == S - 1`). A stateful
model's state (BatchNorm's running statistics) moves with every micro-batch, as in PyTorch;
the loss and metric totals of the history are added per micro-batch, row-weighted, as without
accumulation; the dropout key of micro-batch s is `fold_in(step_key, s)` as for step s.

NaN guard (`epochs.py`): a non-finite step is a non-finite group update (a loss of the group,
the averaged gradient, the update, the new params, state or model state). In the guarded
program such a group is discarded whole: the params, optimizer state, model state and totals
go back to those at the group's start, and `guard.step` is the group's first micro-batch. So
a NaN stop's position (epoch, step) is always the start of a group, and a resume from it runs
that group again from its first micro-batch.
"""
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from funcdl.nn.state import Variables
from funcdl.train import loss_scale
from funcdl.train.accumulate import add_batch, keep_if
from funcdl.train.stateful import trainable, with_params
from funcdl.train.step import apply_grads, loss_grad_state


class Group(NamedTuple):
    """The running sums of the group being accumulated."""
    grads: Any  # Σ rows_s g_s, the structure of the trainable params, float32 at least
    rows: jax.Array  # Σ rows_s, float32
    loss: jax.Array  # Σ rows_s loss_s, float32 at least
    first_step: jax.Array  # int32: the group's first micro-batch
    start: Any  # (params, totals) at the group's start (guarded program), else None


def _wide(dtype):
    return jnp.promote_types(dtype, jnp.float32)


def new_group(params, totals, first_step, guarded: bool) -> Group:
    """An empty group starting at micro-batch `first_step`."""
    zeros = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, _wide(p.dtype)),
                                   trainable(params))
    return Group(zeros, jnp.zeros((), jnp.float32), jnp.zeros((), _wide(totals.sums.dtype)),
                 jnp.asarray(first_step, jnp.int32), (params, totals) if guarded else None)


def _model_state(params):
    return params.state if isinstance(params, Variables) else None


def _update(spec, guarded: bool, epoch, step, state):
    """The group's update after its last micro-batch `step`; a fresh group follows."""
    params, opt_state, guard, totals, group = state
    mean = jax.tree_util.tree_map(
        lambda s, p: (s / group.rows.astype(s.dtype)).astype(p.dtype), group.grads,
        trainable(params))
    loss = group.loss / group.rows.astype(group.loss.dtype)
    new_params, new_opt_state, finite = apply_grads(spec, params, opt_state, mean,
                                                    _model_state(params), loss)
    if guarded:
        good = guard.ok & finite
        first_bad = guard.ok & ~good
        guard = guard._replace(
            ok=good, epoch=jnp.where(first_bad, epoch, guard.epoch),
            step=jnp.where(first_bad, group.first_step, guard.step),
            loss=jnp.where(first_bad, loss.astype(guard.loss.dtype), guard.loss))
        start_params, start_totals = group.start
        new_params, new_opt_state, totals = keep_if(
            good, (new_params, new_opt_state, totals), (start_params, opt_state, start_totals))
    return (new_params, new_opt_state, guard, totals,
            new_group(new_params, totals, step + 1, guarded))


def accumulated_steps(plan, spec, rows: Callable, report: Callable, step_key, epoch, carry):
    """The epoch's micro-batches from `plan.first_step` on, with an update per group of
    `plan.accumulate`; returns `(params, opt_state, guard, totals)`.

    spec: the training step's `StepSpec` (weighted loss included); rows(start, size) ->
    `(xb, yb, target)` (the batch, the metrics' targets, the loss's targets); report(step,
    start, size, totals): the progress callback (a no-op without one)."""
    k, last = plan.accumulate, plan.n_full + (1 if plan.remainder else 0) - 1
    scaled = loss_scale.uses_loss_scaling(spec.compute_dtype)
    params, opt_state, guard, totals = carry

    def micro(state, step, start, size, ends):
        params, opt_state, guard, totals, group = state
        xb, yb, target = rows(start, size)
        scale = loss_scale.scale_of(opt_state) if scaled else None
        loss, pred, grads, model_state = loss_grad_state(
            spec, params, xb, target, jax.random.fold_in(step_key, step), scale)
        totals = add_batch(spec.metrics, totals, pred, yb, loss, size)
        group = group._replace(
            grads=jax.tree_util.tree_map(lambda s, g: s + size * g.astype(s.dtype),
                                         group.grads, grads),
            rows=group.rows + size,
            loss=group.loss + size * jnp.asarray(loss).astype(group.loss.dtype))
        params = with_params(params, trainable(params), model_state)
        state = (params, opt_state, guard, totals, group)
        update = lambda s: _update(spec, plan.guarded, epoch, step, s)  # noqa: E731
        if ends is True:  # the epoch's last micro-batch
            state = update(state)
        else:
            state = lax.cond(ends, update, lambda s: s, state)
        report(step, start, size, state[3])
        return state

    def full_batch(state, step):
        ends = ((step + 1) % k == 0) | (step == last)
        return micro(state, step, step * plan.batch, plan.batch, ends), None

    state = (params, opt_state, guard, totals,
             new_group(params, totals, plan.first_step, plan.guarded))
    if plan.first_step < plan.n_full:
        state, _ = lax.scan(full_batch, state,
                            jnp.arange(plan.first_step, plan.n_full, dtype=jnp.int32))
    if plan.remainder:
        state = micro(state, jnp.int32(plan.n_full), plan.n_full * plan.batch, plan.remainder,
                      True)
    return state[:4]
