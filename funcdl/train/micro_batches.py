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

Streamed data (`stream_run.py`): an epoch is several calls, one per chunk of its batches, and
a group may span chunks: each call takes the running `Group` of the call before it (None for
the epoch's first chunk: a fresh group) and returns its own, with `step0` (the epoch's index
of the chunk's first micro-batch) and `epoch_last` (the epoch's index of its last
micro-batch when this chunk holds it, else -1), both traced. Micro-batch j of the chunk is
the epoch's s = step0 + j: its key `fold_in(step_key, s)`, and a group ends at
`(s + 1) % k == 0` or `s == epoch_last`, so the groups, their updates and the leftover group
are in-memory `fit`'s. A carried group keeps its `start` in every program (a chunk may be
replayed guarded with the group that the fast program of the chunk before it left), and the
guarded program of a chunk that ends inside a group checks the unfinished group's sums (and
the model's state): a non-finite one is a non-finite group, discarded whole as above (its
update would have been non-finite). The fast program's flag includes every update's
averaged gradients (`step.mark_non_finite_grads`) and an open group's sums.
"""
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from funcdl.nn.state import Variables
from funcdl.train import loss_scale
from funcdl.train.accumulate import add_batch, keep_if
from funcdl.train.stateful import trainable, with_params
from funcdl.train.step import all_finite, apply_grads, loss_grad_state


class Group(NamedTuple):
    """The running sums of the group being accumulated."""
    grads: Any  # Σ rows_s g_s, the structure of the trainable params, float32 at least
    rows: jax.Array  # Σ rows_s, float32
    loss: jax.Array  # Σ rows_s loss_s, float32 at least
    first_step: jax.Array  # int32: the group's first micro-batch
    start: Any  # (params, totals) at the group's start (guarded program), else None


def _wide(dtype):
    return jnp.promote_types(dtype, jnp.float32)


def new_group(params, totals, first_step, keep_start: bool) -> Group:
    """An empty group starting at micro-batch `first_step`; `keep_start`: it holds the
    `(params, totals)` it starts from (the guarded program, and streamed chunks)."""
    zeros = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, _wide(p.dtype)),
                                   trainable(params))
    return Group(zeros, jnp.zeros((), jnp.float32), jnp.zeros((), _wide(totals.sums.dtype)),
                 jnp.asarray(first_step, jnp.int32), (params, totals) if keep_start else None)


def _model_state(params):
    return params.state if isinstance(params, Variables) else None


def _update(spec, guarded: bool, epoch, step, state, keep_start: bool):
    """The group's update after its last micro-batch `step`; a fresh group follows."""
    params, opt_state, guard, totals, group = state
    mean = jax.tree_util.tree_map(
        lambda s, p: (s / group.rows.astype(s.dtype)).astype(p.dtype), group.grads,
        trainable(params))
    loss = group.loss / group.rows.astype(group.loss.dtype)
    new_params, new_opt_state, finite = apply_grads(spec, params, opt_state, mean,
                                                    _model_state(params), loss,
                                                    mark_grads=not guarded)
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
            new_group(new_params, totals, step + 1, keep_start))


def _check_unfinished(epoch, state):
    """The guarded program's check of a group still open at the end of a streamed chunk: a
    non-finite sum (or model state) fails the guard at the group's first micro-batch and
    puts the params and totals back to the group's start (its update is never applied)."""
    params, opt_state, guard, totals, group = state
    good = guard.ok & all_finite((group.grads, group.loss, params))
    first_bad = guard.ok & ~good
    loss = group.loss / group.rows.astype(group.loss.dtype)
    guard = guard._replace(
        ok=good, epoch=jnp.where(first_bad, epoch, guard.epoch),
        step=jnp.where(first_bad, group.first_step, guard.step),
        loss=jnp.where(first_bad, loss.astype(guard.loss.dtype), guard.loss))
    params, totals = keep_if(good, (params, totals), group.start)
    return params, opt_state, guard, totals, group


def accumulated_steps(plan, spec, rows: Callable, report: Callable, step_key, epoch, carry,
                      stream=None):
    """The epoch's micro-batches from `plan.first_step` on, with an update per group of
    `plan.accumulate`; returns `(params, opt_state, guard, totals)`.

    spec: the training step's `StepSpec` (weighted loss included); rows(start, size) ->
    `(xb, yb, target)` (the batch, the metrics' targets, the loss's targets); report(step,
    start, size, totals): the progress callback (a no-op without one). stream: None, or
    `(step0, group, epoch_last)` for a streamed chunk (the module docstring; `group` None:
    a fresh one at `step0`): then returns `((params, opt_state, guard, totals), group)`."""
    k, last = plan.accumulate, plan.n_full + (1 if plan.remainder else 0) - 1
    scaled = loss_scale.uses_loss_scaling(spec.compute_dtype)
    params, opt_state, guard, totals = carry
    step0, group, epoch_last = stream if stream is not None else (0, None, None)
    keep_start = plan.guarded or stream is not None

    def micro(state, step, start, size, ends):
        params, opt_state, guard, totals, group = state
        xb, yb, target = rows(start, size)
        if stream is not None:  # the chunk's micro-batch `step` is the epoch's `step0 + step`
            step = step0 + step
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
        update = lambda s: _update(spec, plan.guarded, epoch, step, s, keep_start)  # noqa: E731
        if ends is True:  # the epoch's last micro-batch
            state = update(state)
        else:
            state = lax.cond(ends, update, lambda s: s, state)
        report(step, start, size, state[3])
        return state

    def full_batch(state, step):
        if stream is None:
            ends = ((step + 1) % k == 0) | (step == last)
        else:  # the epoch's index of the micro-batch, and of its last one (-1: not here)
            ends = ((step0 + step + 1) % k == 0) | (step0 + step == epoch_last)
        return micro(state, step, step * plan.batch, plan.batch, ends), None

    if group is None:
        group = new_group(params, totals, step0 + plan.first_step, keep_start)
    state = (params, opt_state, guard, totals, group)
    if plan.first_step < plan.n_full:
        state, _ = lax.scan(full_batch, state,
                            jnp.arange(plan.first_step, plan.n_full, dtype=jnp.int32))
    if plan.remainder:  # in-memory fit's last batch (a stream's is a chunk of its own)
        state = micro(state, jnp.int32(plan.n_full), plan.n_full * plan.batch, plan.remainder,
                      True)
    if stream is None:
        return state[:4]
    if plan.guarded:
        state = _check_unfinished(epoch, state)
    return state[:4], state[4]
