"""`run_epochs`: several training epochs as ONE compiled program (a `lax.scan` over epochs,
each a `lax.scan` over its minibatches), with the NaN guard and the progress callback inside.

Per epoch e (counted from 0 over the whole run, also across resumed calls)::

    shuffle_key, step_key = jax.random.split(jax.random.fold_in(key, e))
    order = jax.random.permutation(shuffle_key, n_rows)      # when shuffling
    batch b = rows order[b*B : (b+1)*B]                      # gathered inside the scan
                                        # (on a mesh: built so by feed.py, fed as `data`)
    dropout key of step b = jax.random.fold_in(step_key, b)

so the order depends only on `key` and `e`: a resumed run shuffles as an uninterrupted one.
The last `n_rows % B` rows form one more step with their own shape.

NaN guard, in two programs compiled from this one function (`plan.guarded`):
- The fast program (`run_epochs`, `guarded=False`) trains without any per-step check and does
  not donate its inputs. At its end it computes ONE flag: every step's loss was finite (their
  row-weighted sum is: a NaN or inf loss makes it non-finite) and every floating leaf of the
  final params and optimizer state is finite (a non-finite gradient that reaches an update
  leaves a non-finite param or moment behind: NaN and inf do not leave the arithmetic of
  SGD, Adam and the rest). Success costs nothing per step.
- Only when that flag is False does `fit` run the call again from the same inputs with the
  guarded program (`run_epochs_guarded`, `guarded=True`, no progress callback): `guard.ok`
  turns False at the first step whose loss or gradient is not finite (a finite loss can have a
  NaN gradient, e.g. an inf input behind a saturated tanh), and from then on every update is
  discarded by a select (`where(ok, new, old)`), so the params and optimizer state that come
  back are the last finite ones, and `guard.epoch`, `guard.step` say where it happened. Both
  programs run the same steps in the same order, so the replay reaches the same state.
No host sync per step in either.

Cache: `run_epochs` and `run_epochs_guarded` are module-level `jax.jit`s; `plan` (hashable,
holding the user's functions) is their static argument, so equal plans and shapes reuse the
compiled programs (the guarded one is compiled only when a run goes non-finite).
"""
import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from funcdl.train import progress
from funcdl.train.batches import row_weighted_mean, take_rows
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


class Guard(NamedTuple):
    ok: jax.Array  # bool (): every loss so far was finite
    epoch: jax.Array  # int32 (): epoch of the first non-finite loss (-1: none)
    step: jax.Array  # int32 (): its step within that epoch


def new_guard() -> Guard:
    return Guard(jnp.array(True), jnp.array(-1, jnp.int32), jnp.array(-1, jnp.int32))


@functools.partial(jax.jit, static_argnames=("optimizer",))
def initial_state(params, opt_state, *, optimizer):
    """Fresh copies of `params` and `opt_state` (`optimizer.init(params)` when None) and a new
    guard, in one dispatch: the guarded replay donates the state it starts from, which must
    never be the caller's arrays."""
    params = jax.tree_util.tree_map(jnp.copy, params)
    opt_state = (optimizer.init(params) if opt_state is None
                 else jax.tree_util.tree_map(jnp.copy, opt_state))
    return params, opt_state, new_guard()


def _keep_if(ok, new, old):
    return jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, old)


def _when(condition, callback, *args):
    """`jax.debug.callback(callback, *args)` only where `condition` (a traced bool) holds."""
    lax.cond(condition, lambda: jax.debug.callback(callback, *args), lambda: None)


def evaluation_row(spec: StepSpec, params, x, y):
    """`[loss, *metrics]` of a batch with `train=False`, as a 1-d vector in the accumulation
    dtype (float32 at least, float64 with x64): a metric is never cast to the loss's dtype."""
    pred = forward(spec, params, x, None, False)
    return batch_values(spec, pred, y, spec.loss_fn(pred, y))


def accumulation_dtype():
    """float32 at least (float64 with x64), whatever the params', predictions' or loss's dtype."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def batch_values(spec: StepSpec, pred, y, loss):
    """`[loss, *metrics]` of one batch as a 1-d vector in `accumulation_dtype()`; each value is
    computed in its own dtype and only then widened (a bfloat16 model's accuracy is the
    float32 fraction of correct rows, not a bfloat16 one)."""
    dtype = accumulation_dtype()
    values = [jnp.asarray(loss)] + [jnp.asarray(fn(pred, y)) for _, fn in spec.metrics]
    for (name, _), value in zip([("loss", None)] + list(spec.metrics), values):
        if value.shape != ():
            raise TypeError(f"`metrics[{name!r}]` must return a scalar, got shape {value.shape}"
                            if name != "loss" else
                            f"`loss_fn` must return a scalar, got shape {value.shape}")
    return jnp.stack([value.astype(dtype) for value in values])


def _one_epoch(plan: EpochPlan, data, key, progress_every, token, carry, epoch, first):
    spec, mesh = plan.spec, plan.mesh
    x, y, x_val, y_val = data
    shuffle_key, step_key = jax.random.split(jax.random.fold_in(key, epoch))
    fed = plan.mesh is not None  # data: batches.Fed leaves, already in the epoch's order
    shuffled = plan.shuffle and not fed
    order = jax.random.permutation(shuffle_key, plan.n_rows) if shuffled else None
    steps_per_epoch = plan.n_full + (1 if plan.remainder else 0)

    def train_on(state, step, start, size):
        params, opt_state, guard, sums = state
        xb, yb = take_rows((x, y), start, size, order, mesh)
        new_params, new_state, loss, pred, finite = apply_step(
            spec, params, opt_state, xb, yb, jax.random.fold_in(step_key, step))
        loss = jnp.asarray(loss)
        if plan.guarded:
            good = guard.ok & finite
            first_bad = guard.ok & ~good
            guard = Guard(good, jnp.where(first_bad, epoch, guard.epoch),
                          jnp.where(first_bad, step, guard.step))
            new_params = _keep_if(good, new_params, params)
            new_state = _keep_if(good, new_state, opt_state)
        sums = sums + size * batch_values(spec, pred, yb, loss)
        if plan.progress == "step":
            rows_done = jnp.asarray(start + size).astype(sums.dtype)
            _when(((step + 1) % progress_every == 0) | (first & (step == 0)), progress.report,
                  token, epoch * steps_per_epoch + step + 1, sums[0] / rows_done)
        return new_params, new_state, guard, sums

    def full_batch(state, step):
        return train_on(state, step, step * plan.batch, plan.batch), None

    params, opt_state, guard = carry
    sums = jnp.zeros((1 + len(spec.metrics),), accumulation_dtype())
    state = (params, opt_state, guard, sums)
    if plan.n_full == 1:  # full batch: no loop of one trip inside the loop over epochs
        state, _ = full_batch(state, jnp.int32(0))
    else:
        state, _ = lax.scan(full_batch, state, jnp.arange(plan.n_full, dtype=jnp.int32))
    if plan.remainder:
        state = train_on(state, jnp.int32(plan.n_full), plan.n_full * plan.batch, plan.remainder)
    params, opt_state, guard, sums = state
    means = sums / plan.n_rows
    if plan.val_batch is not None:
        val = row_weighted_mean(lambda xv, yv: evaluation_row(spec, params, xv, yv),
                                (x_val, y_val), plan.n_val_rows, plan.val_batch, mesh)
        means = jnp.concatenate([means, val.astype(means.dtype)])
    if plan.progress == "epoch":
        _when(((epoch + 1) % progress_every == 0) | first, progress.report, token, epoch + 1,
              means[0])
    return (params, opt_state, guard), means


def _run_epochs(params, opt_state, guard, data, key, epoch0, progress_every, token, *, plan):
    def body(carry, i):  # the call's first unit always reports: the bar's end of compile
        return _one_epoch(plan, data, key, progress_every, token, carry, epoch0 + i, i == 0)

    (params, opt_state, guard), means = lax.scan(
        body, (params, opt_state, guard), jnp.arange(plan.n_epochs, dtype=jnp.int32))
    if not plan.guarded:  # the fast program's one check, at the end (module docstring)
        ok = guard.ok & jnp.all(jnp.isfinite(means[:, 0])) & all_finite((params, opt_state))
        guard = guard._replace(ok=ok)
    return params, opt_state, guard, means


run_epochs = jax.jit(_run_epochs, static_argnames=("plan",))
run_epochs.__doc__ = """`(params, opt_state, guard, data, key, epoch0, progress_every, token,
*, plan) -> (params, opt_state, guard, means)`: epochs `epoch0 .. epoch0 + plan.n_epochs - 1`.
data: `(x, y, x_val, y_val)` on device; means: `(n_epochs, 1 + n_metrics [+ 1 + n_metrics])`
float, per epoch [loss, *metrics] row-weighted over the training steps, then the same over
the validation rows. The fast program (`plan.guarded` False): keeps its inputs (they are the
start of a replay) and `guard.ok` says whether every loss and the final state are finite."""

run_epochs_guarded = jax.jit(_run_epochs, static_argnames=("plan",), donate_argnums=(0, 1))
run_epochs_guarded.__doc__ = """`run_epochs` with `plan.guarded` True: the per-step NaN guard
(module docstring); params and opt_state are donated."""
