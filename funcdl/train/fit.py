"""`fit`: train a model on `(x, y)` for some epochs with scan-fused compiled epochs.

The data go to the device once per call (on a mesh: each epoch's batches, fed by the host
process by process; see `feed.py`). Minibatch runs make one compiled call per epoch (a
`lax.scan` over its batches, the batches gathered inside it); full-batch runs, which are
never shuffled, run all their epochs (or all up to the next checkpoint) in one compiled call:
a 400-epoch XOR run is one dispatch. See `epochs.py` for the order of the batches, the keys
and the NaN guard.
"""
import functools
import time

import jax
import numpy as np

from funcdl.train import checks, resume as resume_state
from funcdl.train.batches import batch_layout
from funcdl.train.epochs import (EpochPlan, initial_state, new_guard, run_epochs,
                                 run_epochs_guarded)
from funcdl.train.feed import Feed
from funcdl.train.progress import ProgressBar, choose_every, first_every, remember
from funcdl.train.sharding import check_mesh, is_main_process, place_copy, to_host
from funcdl.train.step import (StepSpec, check_callables, check_compute_dtype,
                               check_grad_backend)


@functools.lru_cache(maxsize=None)
def default_key(impl_name):
    """`jax.random.PRNGKey(0)` as a NumPy array (made once per PRNG implementation)."""
    return np.asarray(jax.random.PRNGKey(0))


def _history_names(metrics, validation) -> list:
    names = ["loss"] + [name for name, _ in metrics]
    return names + [f"val_{name}" for name in names] if validation is not None else names


def _diverged(params, opt_state, history, epoch: int, step: int, loss_value):
    error = FloatingPointError(
        f"fit: the loss or its gradient became non-finite (epoch loss {loss_value}) at epoch "
        f"{epoch}, step {step} "
        f"(both counted from 0); training stopped there. The error's `.params`, `.opt_state`, "
        f"`.history` hold the last finite state (before that step; {epoch} whole epochs in "
        "`.history`)")
    error.params, error.opt_state, error.history = params, opt_state, history
    error.epoch, error.step = epoch, step
    return error


def fit(model, params, loss_fn, optimizer, x, y, *, epochs, batch_size=None, shuffle=True,
        key=None, grad_backend="jax", progress=True, opt_state=None, validation=None,
        metrics=None, compute_dtype=None, mesh=None, checkpoint=None, checkpoint_every=1,
        resume=False, initial_epoch=0):
    """Train `params` of `model` on `(x, y)`; returns `(params, opt_state, history)`.

    model: a `fdl.nn.Model` (called as `apply(params, x, key=..., train=True)`) or a plain
    `apply(params, x)`. loss_fn: `(pred, target) -> scalar`. optimizer: an `fdl.optim`
    optimizer. x: `(n, ...)`, y: `(n, ...)` arrays (jax or NumPy).
    epochs: total number of epochs (with `resume`, including those already in the checkpoint).
    batch_size: rows per step; None or >= n is full batch (never shuffled). The last
    `n % batch_size` rows are one more step. key: the PRNG key for shuffling and dropout
    (None: `jax.random.PRNGKey(0)`). grad_backend: "jax" or "funcdl". progress: a tqdm bar on
    stderr. opt_state: continue from this optimizer state (None: `optimizer.init(params)`).
    validation: `(x_val, y_val)`, evaluated with `train=False` after every epoch.
    metrics: `{name: fn(pred, target) -> scalar}`. compute_dtype: e.g. `jnp.bfloat16` for the
    forward and backward passes (params and optimizer state stay in their own dtype).
    mesh: a `jax.sharding.Mesh` with a "data" axis (data-parallel). checkpoint: a path saved
    every `checkpoint_every` epochs and at the end; resume: continue from it if it exists
    (the file's position then replaces `initial_epoch`).
    initial_epoch: the epoch to start at (Keras's name): epochs are numbered from it for the
    shuffle order and the dropout keys, and `epochs` is the epoch to stop at, so `fit(epochs=3)`
    then `fit(params=p, opt_state=s, epochs=5, initial_epoch=3)` equals `fit(epochs=5)` bitwise
    (the continuation's history holds the 2 epochs it ran). A continuation with `opt_state=`
    but without `initial_epoch` starts at epoch 0 again: it replays epoch 0's shuffle and keys.

    history: `{"loss": [...], name: [...], "val_loss": [...], "val_<name>": [...]}`, one float
    per epoch; training values are means over the epoch's steps weighted by batch rows
    (exact for mean losses and metrics such as MSE or accuracy), accumulated in float32 at
    least (float64 with x64) whatever the model's dtype.
    A non-finite loss (or gradient) raises FloatingPointError with `.params .opt_state .history
    .epoch .step` of the last finite state. The caller's arrays are never donated or invalidated.

    >>> import jax, jax.numpy as jnp
    >>> from funcdl import nn, losses, optim, train
    >>> model = nn.Linear(1)
    >>> x = jnp.linspace(-1, 1, 32).reshape(32, 1); y = 3 * x + 1
    >>> params = model.init(jax.random.key(0), x)
    >>> params, state, history = train.fit(model, params, losses.mse_loss, optim.sgd(0.5),
    ...                                    x, y, epochs=50, batch_size=8, progress=False)
    >>> len(history["loss"]), round(float(params["w"][0, 0]), 2), round(float(params["b"][0]), 2)
    (50, 3.0, 1.0)
    """
    check_callables(model, loss_fn, optimizer)
    check_grad_backend(grad_backend)
    compute_dtype = check_compute_dtype(compute_dtype)
    epochs = checks.check_int(epochs, "epochs", 0)
    batch_size = checks.check_batch_size(batch_size)
    n_rows = checks.check_pair(x, y, "x", "y")
    validation, n_val = checks.check_validation(validation)
    metrics = checks.check_metrics(metrics)
    checks.check_fit_key(key)
    every = checks.check_checkpoint(checkpoint, checkpoint_every, resume)
    initial_epoch = checks.check_int(initial_epoch, "initial_epoch", 0)
    if initial_epoch > epochs:
        raise ValueError(f"`initial_epoch` must be <= `epochs` (the epoch to stop at), got "
                         f"initial_epoch={initial_epoch} and epochs={epochs}")
    if not isinstance(shuffle, bool) or not isinstance(progress, bool):
        name, value = ("shuffle", shuffle) if not isinstance(shuffle, bool) else ("progress",
                                                                               progress)
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__}")
    batch, n_full, remainder = batch_layout(n_rows, batch_size)
    check_mesh(mesh, batch)
    key = default_key(jax.config.jax_default_prng_impl) if key is None else key

    spec = StepSpec(model, loss_fn, optimizer, grad_backend, compute_dtype, metrics)
    names = _history_names(metrics, validation)
    history = {name: [] for name in names}
    if mesh is None:
        params, opt_state, guard = initial_state(params, opt_state, optimizer=optimizer)
    else:  # on a mesh, init's fresh scalars must be replicated like the program's outputs
        params = place_copy(params, mesh)
        opt_state = place_copy(optimizer.init(params) if opt_state is None else opt_state, mesh)
        guard = place_copy(new_guard(), mesh)
    done = initial_epoch
    if resume:
        loaded = resume_state.load_state(checkpoint, params, opt_state, names, key)
        if loaded is not None:
            params, opt_state, history, done, key = loaded
            params, opt_state = place_copy(params, mesh), place_copy(opt_state, mesh)
    if done >= epochs:
        return params, opt_state, history

    steps_per_epoch = n_full + (1 if remainder else 0)
    full_batch = steps_per_epoch == 1
    unit = "epoch" if full_batch else "step"
    per_call = (epochs - done if checkpoint is None else every) if full_batch else 1
    feed = Feed(x, y, validation, mesh, batch_size, shuffle and not full_batch, key)
    data = feed.data(done)
    unit_scale = 1 if full_batch else steps_per_epoch
    progress_every = None  # chosen at the first call (progress.first_every)

    with ProgressBar(epochs * unit_scale, done * unit_scale, unit,
                     progress and is_main_process()) as bar:
        while done < epochs:
            n_epochs = min(per_call, epochs - done)
            plan = EpochPlan(spec, n_rows, batch, n_full, remainder, shuffle and not full_batch,
                             n_epochs, None if validation is None else min(batch, n_val), n_val,
                             unit if progress else None, mesh)
            if progress_every is None:
                progress_every = first_every(
                    plan, max(1, (per_call if full_batch else steps_per_epoch) // 8))
            started = time.perf_counter()
            args = (data, key, np.int32(done), np.int32(progress_every), np.int32(bar.token))
            new_params, new_state, new_guard_state, means = run_epochs(
                params, opt_state, guard, *args, plan=plan)
            # the next call's batches are built on the host while the device runs this one
            upcoming = feed.data(done + n_epochs) if done + n_epochs < epochs else None
            means, host_guard = to_host((means, new_guard_state))
            if not bool(host_guard.ok):  # replay the call with the per-step guard (epochs.py)
                new_params, new_state, new_guard_state, means = run_epochs_guarded(
                    params, opt_state, guard, *args,
                    plan=plan._replace(guarded=True, progress=None))
                means, host_guard = to_host((means, new_guard_state))
            if not bool(host_guard.ok):
                bad_epoch, bad_step = int(host_guard.epoch), int(host_guard.step)
                for row in means[:bad_epoch - done]:
                    for name, value in zip(names, row):
                        history[name].append(float(value))
                if checkpoint is not None:
                    resume_state.save_state(checkpoint, new_params, new_state, history,
                                            bad_epoch, key, mesh)
                raise _diverged(new_params, new_state, history, bad_epoch, bad_step,
                                float(means[bad_epoch - done, 0]))
            params, opt_state, guard = new_params, new_state, new_guard_state
            data = upcoming
            for row in means:
                for name, value in zip(names, row):
                    history[name].append(float(value))
            done += n_epochs
            elapsed = time.perf_counter() - started
            bar.finish_call(done * unit_scale, means, names, done - n_epochs, elapsed)
            progress_every = choose_every(elapsed, n_epochs * unit_scale, progress_every)
            if progress:
                remember(plan, elapsed, n_epochs * unit_scale)
            if checkpoint is not None and (done % every == 0 or done == epochs):
                resume_state.save_state(checkpoint, params, opt_state, history, done, key, mesh)
    return params, opt_state, history
