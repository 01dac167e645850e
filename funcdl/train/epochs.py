"""`run_epochs`: several training epochs as ONE compiled program (a loop over epochs with a
traced trip count, each a `lax.scan` over its minibatches), with the NaN guard and the
progress callback inside.

Per epoch e (counted from 0 over the whole run, also across resumed calls)::

    shuffle_key, step_key = jax.random.split(jax.random.fold_in(key, e))
    order = jax.random.permutation(shuffle_key, n_rows)      # when shuffling
    batch b = rows order[b*B : (b+1)*B]                      # gathered inside the scan
                                        # (on a mesh: built so by feed.py, fed as `data`)
    dropout key of step b = jax.random.fold_in(step_key, b)

so the order depends only on `key` and `e`: a resumed run shuffles as an uninterrupted one.
The last `n_rows % B` rows form one more step with their own shape.
A streamed epoch (`stream_run.py`) is several calls, one per chunk of its batches (`Fed`
leaves, already in order), each passing `step0`, the epoch's index of its first batch.

NaN guard, in two programs compiled from this one function (`plan.guarded`):
- The fast program (`run_epochs`, `guarded=False`) trains without a per-step flag and does
  not donate its inputs. Every step sets a param to NaN where its gradient is not finite
  (`step.mark_non_finite_grads`: an elementwise select fused into the update; a NaN
  gradient whose update is zeroed, a `set_to_zero` leaf's, would leave nothing behind
  otherwise). At its end it computes ONE flag: every step's loss was finite (their
  row-weighted sum is: a NaN or inf loss makes it non-finite) and every floating leaf of the
  final params and optimizer state is finite (a non-finite gradient or update leaves a
  non-finite param or moment behind: NaN and inf do not leave the arithmetic of SGD, Adam
  and the rest). So it checks the gradients, the updates, the params and the state of every
  step, with no reduction per step. A leaf frozen by `fdl.optim.freeze` has no gradient
  (`step.loss_grad_state`: zeros, computed by nobody), so a would-be NaN there is none in
  either program.
- Only when that flag is False does `fit` run the call again from the same inputs with the
  guarded program (`run_epochs_guarded`, `guarded=True`, no progress callback): `guard.ok`
  turns False at the first step that is not finite (`step.apply_step`: its loss, gradients,
  update, new params or new optimizer state; a finite loss can have a NaN gradient, e.g. an
  inf input behind a saturated tanh), and from then on every update is
  discarded by a select (`where(ok, new, old)`), so the params and optimizer state that come
  back are the last finite ones, and `guard.epoch`, `guard.step`, `guard.loss` say where it
  happened and with which loss. Both
  programs run the same steps in the same order, so the replay reaches the same state.
No host sync per step in either.

Totals (`accumulate.Totals`: the loss's and plain metrics' row-weighted sums and the
`fdl.metrics` states) are carried through the epochs: each epoch starts from zeros, except the
first epoch of a call, which starts from `totals` (zeros, or the partial sums of an epoch that a
NaN stop interrupted: a resumed call then starts at step `plan.first_step`, so each step is
applied once and the epoch's history is the uninterrupted run's). In the guarded program the
totals freeze at the first non-finite step with everything else, so the totals that come back
are those of the steps before it.

Gradient accumulation (`plan.accumulate` > 1) replaces the epoch's steps with micro-batches
and an update per group (`micro_batches.py`; a streamed epoch's groups carry on from one
chunk's call to the next); with row weights (`plan.weighted`) the training
`y` is the pair `(y, w)` and the step's loss is Keras's weighted one (`weights.py`). Neither
changes the program of a plan without them.

Cache: `run_epochs` and `run_epochs_guarded` are module-level `jax.jit`s; `plan` (hashable,
holding the user's functions) is their static argument, so equal plans and shapes reuse the
compiled programs (the guarded one is compiled only when a run goes non-finite).
"""
import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from funcdl.train import progress, weights
from funcdl.train.accumulate import (Totals, accumulation_dtype, add_batch, keep_if,
                                     result_row, zero_totals)
from funcdl.train.batches import fold_batches, take_rows
from funcdl.train.hyperdata import bind_plan, bound
from funcdl.train.micro_batches import accumulated_steps
from funcdl.train.stateful import trainable
from funcdl.train.step import StepSpec, all_finite, apply_step, forward


class EpochPlan(NamedTuple):
    """The static shape of a compiled multi-epoch call."""
    spec: StepSpec
    n_rows: int
    batch: int  # rows per full batch
    n_full: int  # full batches per epoch
    remainder: int  # rows of the last partial batch (0: none)
    shuffle: bool
    n_epochs: int  # epochs run by one call
    val_batch: Optional[int]  # rows per validation batch; None: no validation
    n_val_rows: int
    progress: Optional[str]  # None (no callback compiled in), "epoch" or "step"
    mesh: object = None  # a jax.sharding.Mesh with a "data" axis, or None
    guarded: bool = False  # per-step NaN guard (the replay after a failed fast call)
    first_step: int = 0  # the step the (single) epoch of the call starts at (resume)
    accumulate: int = 1  # micro-batches per update (micro_batches.py); 1: a step per batch
    weighted: bool = False  # the training `y` is the pair (y, row weights) (weights.py)


class Guard(NamedTuple):
    ok: jax.Array  # bool (): every step so far was finite
    epoch: jax.Array  # int32 (): epoch of the first non-finite step (-1: none)
    step: jax.Array  # int32 (): its step within that epoch
    loss: jax.Array  # float (): its loss (NaN before one)


def new_guard() -> Guard:
    return Guard(jnp.array(True), jnp.array(-1, jnp.int32), jnp.array(-1, jnp.int32),
                 jnp.array(jnp.nan, accumulation_dtype()))


@functools.partial(jax.jit, static_argnames=("optimizer",))
def initial_state(params, opt_state, numbers=None, *, optimizer):
    """Fresh copies of `params` and `opt_state` (`optimizer.init(params)` when None; a stateful
    model's `Variables`: of `params.params`) and a new
    guard, in one dispatch: the state `fit` trains and hands back is never the caller's own
    arrays. With `numbers`, `optimizer` is their Skeleton (`hyperdata.split`)."""
    optimizer = bound(optimizer, numbers)
    params = jax.tree_util.tree_map(jnp.copy, params)
    opt_state = (optimizer.init(trainable(params)) if opt_state is None
                 else jax.tree_util.tree_map(jnp.copy, opt_state))
    return params, opt_state, new_guard()


def _when(condition, callback, *args):
    """`jax.debug.callback(callback, *args)` only where `condition` (a traced bool) holds."""
    lax.cond(condition, lambda: jax.debug.callback(callback, *args), lambda: None)


def _batch_zeros(spec: StepSpec, params, xb, yb, key, train: bool) -> Totals:
    """Zero totals shaped for batches like `(xb, yb)` (the metric states take their shapes from
    the predictions, found by tracing the model without running it)."""
    pred = jax.eval_shape(lambda p, xs: forward(spec, p, xs, key, train), params, xb)
    return zero_totals(spec.metrics, pred, yb)


def evaluation_totals(spec: StepSpec, params, arrays, n_rows: int, batch_size, mesh=None):
    """`Totals` of the loss and metrics over all rows of `arrays = (x, y)` with `train=False`,
    batch by batch (`batch_size` rows; None: all)."""
    def step(totals, batch, rows):
        xb, yb = batch
        pred = forward(spec, params, xb, None, False)
        return add_batch(spec.metrics, totals, pred, yb, spec.loss_fn(pred, yb), rows)

    first = batch_size if batch_size is not None and batch_size < n_rows else n_rows
    zeros = _batch_zeros(spec, params, *take_rows(arrays, 0, first), None, False)
    return fold_batches(step, zeros, arrays, n_rows, batch_size, mesh)


def zero_epoch_totals(plan: EpochPlan, params, data, key) -> Totals:
    """The totals at the start of an epoch of `plan` (the shapes of its training batches)."""
    xb, yb = take_rows(data[:2], 0, plan.batch, None, plan.mesh)
    yb, _ = weights.split_batch(yb, plan.weighted)
    return _batch_zeros(plan.spec, params, xb, yb, key, True)


def epoch_totals_like(spec: StepSpec, params, x, y, batch: int, key):
    """`jax.ShapeDtypeStruct`s of a training epoch's `Totals` (batches of `batch` rows of
    `x`, `y`, arrays or NumPy): what a checkpoint's partial totals are read back as."""
    def rows(a):
        return jax.ShapeDtypeStruct((batch,) + tuple(a.shape[1:]),
                                    jax.dtypes.canonicalize_dtype(a.dtype))
    xb, yb = jax.tree_util.tree_map(rows, (x, y))
    return jax.eval_shape(lambda p, xs, ys, k: _batch_zeros(spec, p, xs, ys, k, True),
                          params, xb, yb, key)


def _one_epoch(plan: EpochPlan, data, key, progress_every, token, carry, epoch, first,
               step0=None, stream_group=None):
    spec, mesh = plan.spec, plan.mesh
    x, y, x_val, y_val = data
    shuffle_key, step_key = jax.random.split(jax.random.fold_in(key, epoch))
    fed = plan.mesh is not None  # data: batches.Fed leaves, already in the epoch's order
    shuffled = plan.shuffle and not fed
    order = jax.random.permutation(shuffle_key, plan.n_rows) if shuffled else None
    steps_per_epoch = plan.n_full + (1 if plan.remainder else 0)
    train_spec = weights.training_spec(spec, plan.weighted)  # the weighted loss, if any

    def rows(start, size):  # (xb, the metrics' targets, the loss's targets)
        xb, yb = take_rows((x, y), start, size, order, mesh)
        return (xb, *weights.split_batch(yb, plan.weighted))

    def report(step, start, size, totals):
        if plan.progress == "step":
            rows_done = jnp.asarray(start + size).astype(totals.sums.dtype)
            _when(((step + 1) % progress_every == 0) | (first & (step == plan.first_step)),
                  progress.report, token, epoch * steps_per_epoch + step + 1,
                  totals.sums[0] / rows_done)

    def train_on(state, step, start, size):
        params, opt_state, guard, totals = state
        xb, yb, target = rows(start, size)
        if step0 is not None:  # a stream's chunk: its batch `step` is the epoch's `step0 + step`
            step = step0 + step
        new_params, new_state, loss, pred, finite = apply_step(
            train_spec, params, opt_state, xb, target, jax.random.fold_in(step_key, step),
            mark_grads=not plan.guarded)  # the fast program: a NaN gradient marks its param
        new_totals = add_batch(spec.metrics, totals, pred, yb, loss, size)
        if plan.guarded:
            good = guard.ok & finite
            first_bad = guard.ok & ~good
            guard = Guard(good, jnp.where(first_bad, epoch, guard.epoch),
                          jnp.where(first_bad, step, guard.step),
                          jnp.where(first_bad, jnp.asarray(loss).astype(guard.loss.dtype),
                                    guard.loss))
            new_params, new_state, new_totals = keep_if(
                good, (new_params, new_state, new_totals), (params, opt_state, totals))
        report(step, start, size, new_totals)
        return new_params, new_state, guard, new_totals

    def full_batch(state, step):
        return train_on(state, step, step * plan.batch, plan.batch), None

    state, group = carry, None
    if plan.accumulate > 1 and stream_group is not None:  # a streamed chunk: its group goes on
        state, group = accumulated_steps(plan, train_spec, rows, report, step_key, epoch, state,
                                         (step0, *stream_group))
    elif plan.accumulate > 1:  # an update per group of micro-batches (micro_batches.py)
        state = accumulated_steps(plan, train_spec, rows, report, step_key, epoch, state)
    elif plan.n_full == 1 and plan.first_step == 0:  # full batch: no loop of one trip
        state, _ = full_batch(state, jnp.int32(0))
    elif plan.first_step < plan.n_full:
        state, _ = lax.scan(full_batch, state,
                            jnp.arange(plan.first_step, plan.n_full, dtype=jnp.int32))
    if plan.remainder and plan.accumulate == 1:
        state = train_on(state, jnp.int32(plan.n_full), plan.n_full * plan.batch, plan.remainder)
    params, opt_state, guard, totals = state
    means = result_row(spec.metrics, totals, plan.n_rows)
    if plan.val_batch is not None:
        val = evaluation_totals(spec, params, (x_val, y_val), plan.n_val_rows, plan.val_batch,
                                mesh)
        means = jnp.concatenate([means, result_row(spec.metrics, val, plan.n_val_rows)])
    if plan.progress == "epoch":
        _when(((epoch + 1) % progress_every == 0) | first, progress.report, token, epoch + 1,
              means[0])
    return (state if group is None else (*state, group)), means


def row_width(plan: EpochPlan) -> int:
    """The number of values per epoch: [loss, *metrics], twice with validation."""
    width = 1 + len(plan.spec.metrics)
    return 2 * width if plan.val_batch is not None else width


def _run_epochs(params, opt_state, guard, totals, data, key, epoch0, n_run, progress_every,
                token, numbers=None, step0=None, group=None, epoch_last=None, *, plan):
    plan = bind_plan(plan, numbers)  # the optimizer rebuilt from its traced numbers
    zeros = zero_epoch_totals(plan, params, data, key)
    totals = zeros if totals is None else totals
    means = jnp.full((plan.n_epochs, row_width(plan)), jnp.nan, accumulation_dtype())
    # a streamed chunk with accumulation: the group carried from the chunk before, and back
    stream_group = None if epoch_last is None or plan.accumulate == 1 else (group, epoch_last)

    def body(i, carry):
        (params, opt_state, guard, totals), means = carry
        # a new epoch starts from zeros; the call's first starts from `totals`, and after a
        # non-finite step (guarded replay) they stay frozen
        totals = keep_if((i == 0) | ~guard.ok, totals, zeros)
        state, row = _one_epoch(plan, data, key, progress_every, token,
                                (params, opt_state, guard, totals), epoch0 + i, i == 0, step0,
                                stream_group)
        return state, lax.dynamic_update_index_in_dim(means, row, i, axis=0)

    if plan.n_epochs == 1:  # no loop of one trip (a minibatch run makes one epoch per call)
        state, means = body(jnp.int32(0), ((params, opt_state, guard, totals), means))
    else:
        trips = jnp.minimum(n_run, jnp.int32(plan.n_epochs))
        state, means = lax.fori_loop(jnp.int32(0), trips, body,
                                     ((params, opt_state, guard, totals), means))
    params, opt_state, guard, totals = state[:4]
    carried = () if stream_group is None else (state[4],)  # the streamed chunk's open group
    if not plan.guarded:  # the fast program's one check, at the end (module docstring)
        ran = jnp.arange(plan.n_epochs, dtype=jnp.int32) < n_run
        ok = (guard.ok & jnp.all(jnp.isfinite(means[:, 0]) | ~ran)
              & all_finite((params, opt_state, [(g.grads, g.loss) for g in carried])))
        guard = guard._replace(ok=ok)
    return (params, opt_state, guard, totals, means, *carried)


run_epochs = jax.jit(_run_epochs, static_argnames=("plan",))
run_epochs.__doc__ = """`(params, opt_state, guard, totals, data, key, epoch0, n_run,
progress_every, token, numbers=None, step0=None, *, plan) -> (params, opt_state, guard, totals,
means)`: epochs `epoch0 .. epoch0 + n_run - 1` (`n_run` traced, at most `plan.n_epochs`, the
program's capacity: so calls of different lengths share one compiled program). data: `(x, y,
x_val, y_val)` on device; totals: the first epoch's starting `Totals` (None: zeros); means:
`(plan.n_epochs, row_width(plan))` float, row i for epoch `epoch0 + i` (NaN past `n_run`):
[loss, *metrics] over the training rows (row-weighted means, `Metric`s exact), then the same
over the validation rows; totals: the last epoch's. numbers: the optimizer's `Numbers` when
`plan.spec.optimizer` is their Skeleton (`hyperdata.py`: other numbers, no new compile).
step0: a streamed epoch's chunk (`stream_run.py`; traced int32): the call's batch j is step
`step0 + j` of epoch `epoch0` (its dropout key, the guard's step). group, epoch_last: a
streamed chunk with accumulation (`plan.accumulate` > 1; `micro_batches.py`): the open
`Group` of the chunk before (None: a fresh one) and the epoch's index of its last batch when
this chunk holds it (traced int32; -1: not here); the call then returns the chunk's open
group as a sixth value. The
fast program (`plan.guarded` False) ends with `guard.ok`: every step's gradients, every loss
and the final state are finite. Nothing is donated: the
inputs are the start of a replay, and the state `fit` hands back on Ctrl-C."""

run_epochs_guarded = jax.jit(_run_epochs, static_argnames=("plan",))
run_epochs_guarded.__doc__ = """`run_epochs` with `plan.guarded` True: the per-step NaN guard
(module docstring)."""
