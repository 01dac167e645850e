"""`fit`: train a model on `(x, y)` for some epochs with scan-fused compiled epochs.

The data go to the device once per call (on a mesh: each epoch's batches, fed by the host
process by process; see `feed.py`). Minibatch runs make one compiled call per epoch (a
`lax.scan` over its batches, the batches gathered inside it); full-batch runs, which are
never shuffled, run many epochs per compiled call (about half a second of work each, so that
Ctrl-C is honoured; a 400-epoch XOR run is one or two dispatches). `loop.py` runs the calls,
`epochs.py` is the compiled program (the order of the batches, the keys, the NaN guard).
Streamed data (an iterable of batches, or a memory-mapped `x`) go to the device chunk by
chunk instead, each chunk one call of the same program (`stream.py`, `stream_run.py`).
"""
import functools
import os
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

import jax
import numpy as np
from jax.sharding import Mesh

from funcdl.optim.base import Optimizer
from funcdl.train import agreement, checks, hyperdata, loss_scale, resume as resume_state
from funcdl.train import weights as row_weights
from funcdl.train.batches import batch_layout, validation_batch
from funcdl.train.broadcast import warn_if_broadcasting
from funcdl.train.epochs import EpochPlan, epoch_totals_like, initial_state, new_guard
from funcdl.train.callbacks import check_callbacks
from funcdl.train.feed import Feed
from funcdl.train.hooks import Hooks
from funcdl.train.loop import Position, Run, as_lists, train
from funcdl.train.lr_history import LearningRateLog
from funcdl.train.param_checks import check_trainable
from funcdl.train.progress import ProgressBar
from funcdl.train.sharding import check_mesh, is_main_process, place_copy
from funcdl.train.stateful import check_model_variables, trainable
from funcdl.train.step import (ModelLike, PyTree, StepSpec, check_callables,
                               check_compute_dtype, check_grad_backend)
from funcdl.train.stream import IterableSource, layout as stream_layout, open_source
from funcdl.train.stream_run import StreamRun


@functools.lru_cache(maxsize=None)
def default_key(impl_name):
    """`jax.random.PRNGKey(0)` as a NumPy array (made once per PRNG implementation)."""
    return np.asarray(jax.random.PRNGKey(0))


def _history_names(metrics, validation) -> list:
    names = ["loss"] + [name for name, _ in metrics]
    return names + [f"val_{name}" for name in names] if validation is not None else names


MAX_EPOCHS_PER_CALL = 4096  # a call's history rows are one (capacity, k) array on device


def _capacity(epochs_left: int, every) -> int:
    """Epochs one full-batch program can run per call: a power of two (so runs of similar
    lengths share one compiled program) covering the epochs up to the next checkpoint, at
    most MAX_EPOCHS_PER_CALL."""
    need = min(epochs_left if every is None else min(epochs_left, every), MAX_EPOCHS_PER_CALL)
    return 1 << max(0, need - 1).bit_length()


def fit(model: ModelLike, params: PyTree, loss_fn: Callable, optimizer: Optimizer, x: PyTree,
        y: Optional[PyTree], *, epochs: int, batch_size: Optional[int] = None,
        shuffle: Optional[bool] = None, steps_per_epoch: Optional[int] = None, prefetch: int = 2,
        key: Optional[jax.Array] = None, grad_backend: str = "jax", progress: bool = True,
        opt_state: Optional[PyTree] = None, validation: Optional[tuple] = None,
        metrics: Optional[Mapping[str, Any]] = None, compute_dtype: Optional[Any] = None,
        mesh: Optional[Mesh] = None, checkpoint: Union[str, os.PathLike, None] = None,
        checkpoint_every: int = 1, resume: bool = False, initial_epoch: int = 0,
        validation_batch_size: Optional[int] = None, callbacks: Optional[list] = None,
        accumulate: int = 1, sample_weight: Optional[Any] = None,
        class_weight: Optional[Mapping] = None) -> tuple[PyTree, PyTree, dict[str, list[float]]]:
    """Train `params` of `model` on `(x, y)`; returns `(params, opt_state, history)`.

    model: a `fdl.nn.Model` (called as `apply(params, x, key=..., train=True)`, with only the
    keywords its apply accepts) or a plain `apply(params, x)`. loss_fn: `(pred, target) ->
    scalar`. optimizer: an `fdl.optim` optimizer; its numeric hyperparameters (lr, betas,
    momentum, weight decay, eps, a schedule's numbers) are arguments of the compiled program,
    so a second `fit` that changes only them compiles nothing (a value switched between zero
    and non-zero changes the optimizer state and compiles again). x: `(n, ...)`, y: `(n, ...)` arrays (jax or
    NumPy), or pytrees of them (dicts, tuples: `{"image": (n, 28, 28), "mask": (n,)}`) with
    one number of rows n over all leaves; `model` and `loss_fn` receive batches of the same
    structure (so does `validation`). params: floating-point leaves only (an integer or bool
    leaf is a TypeError naming its path); one array object at two paths is a ValueError
    naming both (PyTorch's tied weights are one parameter: keep one leaf and use it twice in
    `apply`; independent copies: `jnp.copy`). A loss whose predictions and targets broadcast
    to another shape than the predictions' (`(n, 1)` against `(n,)`) gets a UserWarning.
    epochs: total number of epochs (with `resume`, including those already in the checkpoint).
    batch_size: rows per step; None or >= n is full batch (never shuffled). The last
    `n % batch_size` rows are one more step. shuffle: shuffle the rows every epoch; None (the
    default) is True for arrays and False for streamed data.

    Streamed data, for data larger than memory: `fit(model, params, loss_fn, optimizer, data,
    None, epochs=..., steps_per_epoch=None, prefetch=2)`. `data` yields `(x_batch, y_batch)`
    pairs (arrays or pytrees of them: NumPy, jax or torch tensors), or `(x_batch, y_batch,
    sample_weight)` triples to weight its rows (Keras's way; `sample_weight` below), and is
    iterated once per
    epoch: a re-iterable (a `torch.utils.data.DataLoader`, a grain `DataLoader` or
    `MapDataset`, a list) or a callable returning a new iterator per epoch. An iterator or a
    generator object cannot be iterated again (a ValueError: pass a callable returning one).
    `batch_size` must be None (the loader batches) and `shuffle` unset or False (the loader
    shuffles; `shuffle=True` is a ValueError). Every batch must have the first batch's shapes
    and dtypes except the epoch's last, which may have fewer rows (a ValueError naming the
    batch otherwise). On a mesh spanning P processes (over `jax.devices()`, "data" split
    between them) each process's `data` yields its own part of every batch, as a loader
    sharded by process does (grain's `ShardByJaxProcess`): `B / P` rows of each global batch
    of B rows, which is the concatenation of the P parts in process order (as
    `jax.make_array_from_process_local_data` assembles it); only the parts of a last batch
    whose rows the "data" size does not divide are gathered (it is replicated). All processes
    must yield the same number of batches per epoch with the same shapes: they compare each
    chunk before it trains, and where they differ every process raises a ValueError (none
    waits for another). steps_per_epoch: an epoch is that many batches, read from one iterator
    that carries on into the next epoch, a new one started when it ends (Keras's rule; an
    epoch cut short by the end of the iterator gets a UserWarning); None: an epoch is a whole
    iterator. prefetch: chunks of batches (about 4 MB each) read and put on the device ahead
    by a background thread (0: none, read when needed); each chunk trains as one compiled
    scan, so the host holds a few chunks, never the data set. A NumPy memory map among the
    leaves of `x` or `y` (`np.load(path, mmap_mode="r")`, in minibatches) is streamed the
    same way, shuffled as arrays are: it is read chunk by chunk in the order of the epoch and
    never copied whole. The same batches give the params and history of in-memory `fit`,
    with `accumulate`, `sample_weight` and `class_weight` too.
    A checkpoint of a stream holds whole epochs: a NaN stop writes the start of its epoch and
    `resume` runs that epoch again with a new iterator (a memory map resumes at the step, as
    arrays). `validation` stays arrays, put on the device whole. key: the PRNG key for shuffling and dropout
    (None: `jax.random.PRNGKey(0)`). grad_backend: "jax" or "funcdl". progress: on a terminal
    a tqdm bar on stderr (compiling shown as its own phase, outside the rate and ETA); when
    stderr is not a terminal, one line per epoch (epoch, seconds, loss, metrics, validation).
    opt_state: continue from this optimizer state (None: `optimizer.init(params)`).
    validation: `(x_val, y_val)`, evaluated with `train=False` after every epoch, in batches
    of `validation_batch_size` rows (None: the training batch size; all rows for full batch).
    metrics: `{name: m}`, `m` a function `(pred, target) -> scalar` or an `fdl.metrics.Metric`
    (see history below); a function or Metric whose value is not a scalar is a TypeError
    naming it (raised when fit traces it; `evaluate` returns array-valued Metrics).
    compute_dtype: e.g. `jnp.bfloat16` for the forward and backward passes (params and
    optimizer state stay in their own dtype); `jnp.float16` adds dynamic loss scaling
    (`fdl.train.loss_scale`): `opt_state` is then a `LossScaleState` holding the scale, and a
    skipped step is not a non-finite one.
    mesh: a `jax.sharding.Mesh` with a "data" axis (data-parallel; streamed data: each
    chunk's batches split along "data"; a memory map: each process reads its own rows of
    every batch). checkpoint: a path saved
    every `checkpoint_every` epochs, at the end and at a NaN stop (with its epoch and step);
    resume: continue from it if it exists (the file's position then replaces `initial_epoch`).
    A file written with another number of rows of `x` or `validation`, `batch_size`, `shuffle`,
    `key` or `accumulate` is a ValueError naming each difference, and so are other `metrics`
    and an `epochs` before the file's position; another learning rate or optimizer
    hyperparameter is allowed. In a run of
    several processes, all must pass the same `key`, `epochs`, `initial_epoch`, `batch_size`,
    numbers of rows (streamed `data`: the first batch's shapes and `steps_per_epoch` or
    `len(data)`) and params structure (a ValueError in every process otherwise).
    initial_epoch: the epoch to start at (Keras's name): epochs are numbered from it for the
    shuffle order and the dropout keys, and `epochs` is the epoch to stop at, so `fit(epochs=3)`
    then `fit(params=p, opt_state=s, epochs=5, initial_epoch=3)` equals `fit(epochs=5)` bitwise
    (the continuation's history holds the 2 epochs it ran). A continuation with `opt_state=`
    but without `initial_epoch` starts at epoch 0 again: it replays epoch 0's shuffle and keys.
    callbacks: a list of objects with any of `on_train_begin(state)`, `on_epoch_end(epoch,
    state)` (True stops after that epoch) and `on_train_end(state)` (after the last epoch or
    an early stop; not after an exception), e.g. `fdl.train.callbacks.EarlyStopping`; `epoch`
    is the index of the epoch just finished (from `initial_epoch`), `state` has `.params
    .opt_state .history .epoch`, and `fit` returns the params and state as the callbacks leave
    them. With callbacks each compiled call runs one epoch. A callback that raises stops `fit`
    with the last state attached to its exception (`.params .opt_state .history .epoch`,
    written to `checkpoint` first); an object without any of the hooks is a TypeError naming
    `callbacks[i]`. The callbacks' own state is not in the checkpoint (docs/guides/callbacks.md).
    accumulate: micro-batches per optimizer update (gradient accumulation; 1, the default, is
    an update per batch and compiles the program without accumulation). `batch_size` is then
    the micro-batch: an epoch's S batches form groups of `accumulate` consecutive
    micro-batches, and when `accumulate` does not divide S the last group holds the `S %
    accumulate` left over and is applied as one update too (as Lightning does). A group's
    gradients, each taken at the group's params, are averaged weighted by rows, `g = Σ_s
    rows_s g_s / Σ_s rows_s`, and applied in one update, so the optimizer's step count (and a
    schedule's position, `history["lr"]`) advances once per group: `ceil(S / accumulate)`
    per epoch. For a mean loss that is one batch `accumulate` times as large, within float32
    rounding; a sum-reduced loss gets the row-weighted mean of its micro-batch gradients (for
    equal micro-batches, the big batch's gradient divided by `accumulate`). The history is
    still added micro-batch by micro-batch (row-weighted), the dropout key of micro-batch s is
    step s's, and a stateful model's state moves with every micro-batch. A full-batch run
    (one batch per epoch) is unchanged. The NaN guard takes a group as one step: a stop's
    `.step` (and a checkpoint's position, which counts micro-batches) is the first
    micro-batch of the non-finite group, whose update is discarded whole, and a resume runs
    that group again. Streamed data accumulate the same way: a group may span two chunks of
    the stream (its sums carried from one compiled call to the next), the leftover group ends
    at the epoch's last batch (a stream of unknown length is read one batch ahead to know
    it), and with `steps_per_epoch` the groups restart with every epoch; the same batches give
    in-memory `fit(accumulate=)`'s params and history.
    sample_weight: `(n,)` finite weights >= 0, one per row of `x` (shuffled with the rows; with
    a memory-mapped `x` an array or a memory map, held in host memory as one float32 per row).
    Streamed `data` carries its weights in its batches instead: it yields `(x_batch, y_batch,
    sample_weight_batch)` triples, `sample_weight_batch` of shape `(rows,)` (every batch a
    triple, as the first; each checked as it is read, the first before anything compiles), and
    `sample_weight=` with an iterable is a ValueError saying so (as Keras refuses it with a
    dataset). class_weight: `{class index: weight}` for integer targets `y` of shape `(n,)` or
    `(n, 1)` (a class not listed weighs 1.0), with arrays, memory maps and streams (looked up
    from each batch's `y_batch`); with both, a row's weight is their product. The
    training loss of a batch of `rows` rows is then Keras's "sum over batch size", `Σ_i w_i
    l_i / rows`, with `l_i` the mean over the other axes of `loss_fn(pred, target,
    reduction="none")[i]`: divided by the rows, not by Σ w (`fdl.losses.cross_entropy(
    weight=)` follows PyTorch and divides by the summed weights instead). `history["loss"]`
    is that weighted loss; validation and `evaluate` are unweighted. With `accumulate`, the
    group's update is that of the weighted loss over the group's rows.

    Raises (before anything compiles; each names the argument; a stream's weights: those of
    its first batch, the later batches' when they are read, naming `data` and the batch):
    TypeError for `accumulate` that is not an int, `sample_weight` that is not an array of
    real numbers, `class_weight` that is not a dict of int classes to numbers or is given
    with targets that are not integer class indices, and a `loss_fn` without a `reduction`
    keyword given weights; ValueError for
    `accumulate < 1`, a `sample_weight` of another shape than `(n,)` (a triple's: `(rows,)`) or
    with negative or non-finite entries, `sample_weight=` with streamed `data`, and a
    negative or non-finite `class_weight` weight.

    history: `{"loss": [...], name: [...], "val_loss": [...], "val_<name>": [...]}`, one float
    per epoch. The loss and metric functions are averaged batch by batch, each batch weighted
    by its rows: exact for mean losses and mean metrics (MSE, accuracy), batch-size dependent
    for others (a sum-reduced loss, R² or RMSE written as a function). An `fdl.metrics.Metric`
    (e.g. `fdl.metrics.r2_score()`) is exact over all the epoch's rows whatever the batch
    size: its state is updated inside the compiled scan and summed across batches and
    devices. Everything accumulates in float32 at least (float64 with x64) whatever the
    model's dtype. `"lr"` (or `"lr/<label>"` per label of a `multi_transform`): the learning
    rate of each epoch's last update, a schedule evaluated at the number of updates applied
    before it (read from `opt_state`); absent for an optimizer made by hand.
    A stateful model (`fdl.nn.is_stateful`, e.g. with BatchNorm): pass the Model and, as
    `params`, the `Variables(params, state)` from its `init`; fit then returns `(variables,
    opt_state, history)`. The optimizer sees `variables.params` only (`opt_state` is that of
    `variables.params`), the state moves with each training step inside the compiled scan
    (on a mesh with the statistics of the whole batch), validation uses the current state
    with `train=False` and leaves it as it is, and the checkpoint holds the state with the
    params (`fdl.train.stateful`).
    NaN guard: a step is finite when its loss, gradients, update and the new params and
    optimizer state are all finite (so an infinite learning rate or Adam's second moment
    overflowing stops at that step). The first step that is not raises FloatingPointError with
    `.params .opt_state` of the state before it, `.history`, `.epoch` and `.step` (within that
    epoch, from 0). The compiled program marks a param NaN where its gradient is not finite
    and checks, at its end, the losses and the final params and optimizer state; only a call
    that finds something non-finite is run again with the whole check per step to find the
    step: both use this one definition, so a NaN gradient of a `set_to_zero` leaf (computed, its update zeroed) stops
    at its step. A leaf frozen by `fdl.optim.freeze` has no gradient (PyTorch's
    `requires_grad=False`: it is not differentiated, its gradient is zeros and XLA computes
    nothing for it), so a NaN that would only reach it is no stop. The caller's arrays are
    never donated or invalidated.

    Examples:
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
    hooks = Hooks(check_callbacks(callbacks))
    check_grad_backend(grad_backend)
    compute_dtype = check_compute_dtype(compute_dtype)
    epochs = checks.check_int(epochs, "epochs", 0)
    batch_size = checks.check_batch_size(batch_size)
    prefetch = checks.check_int(prefetch, "prefetch", 0)
    accumulate = checks.check_int(accumulate, "accumulate", 1)
    source, shuffle = open_source(x, y, batch_size=batch_size, shuffle=shuffle, mesh=mesh,
                                  steps_per_epoch=steps_per_epoch, sample_weight=sample_weight,
                                  class_weight=class_weight)  # None: arrays in memory
    n_rows = checks.check_pair(x, y, "x", "y") if source is None else None
    weights = None if source is not None else row_weights.row_weights(
        n_rows, y, sample_weight, class_weight)
    weighted = weights is not None or (source is not None and source.weighted)
    if weighted:
        row_weights.check_weighted_loss(loss_fn)
    check_model_variables(model, params, "fit")
    check_trainable(params, where="fit")
    validation, n_val = checks.check_validation(validation)
    metrics = checks.check_metrics(metrics)
    checks.check_fit_key(key)
    every = checks.check_checkpoint(checkpoint, checkpoint_every, resume)
    validation_batch_size = checks.check_batch_size(validation_batch_size,
                                                    "validation_batch_size")
    initial_epoch = checks.check_int(initial_epoch, "initial_epoch", 0)
    if initial_epoch > epochs:
        raise ValueError(f"`initial_epoch` must be <= `epochs` (the epoch to stop at), got "
                         f"initial_epoch={initial_epoch} and epochs={epochs}")
    if not isinstance(shuffle, bool) or not isinstance(progress, bool):
        name, value = ("shuffle", shuffle) if not isinstance(shuffle, bool) else ("progress",
                                                                               progress)
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__}")
    if source is None:
        batch, n_full, remainder = batch_layout(n_rows, batch_size)
        unit = None
    else:  # a stream: the epoch as laid out ahead, `x`, `y` one batch's shapes (stream.py)
        n_rows, batch, n_full, remainder, unit = stream_layout(source)
        x, y = source.first
    check_mesh(mesh, batch)
    key = default_key(jax.config.jax_default_prng_impl) if key is None else key
    data = {"x": n_rows}
    if isinstance(source, IterableSource):  # each process's part of a batch, and its batches
        data = {"data": agreement.structure(source.first_batch),
                "len(data)" if steps_per_epoch is None else "steps_per_epoch": source.steps}
    agreement.check_processes({"key": key, "epochs": epochs, "initial_epoch": initial_epoch,
                               "batch_size": batch_size, **data, "validation": n_val,
                               "params": agreement.structure(params)})

    static_optimizer, numbers = hyperdata.split(optimizer)  # numbers traced: no recompile
    spec = StepSpec(model, loss_fn, static_optimizer, grad_backend, compute_dtype, metrics)
    warn_if_broadcasting(spec, params, x, y, batch, key, train=True, where="fit")
    names = _history_names(metrics, validation)
    opt_state = loss_scale.prepare(optimizer, trainable(params), opt_state, compute_dtype)
    if mesh is None:
        params, opt_state, guard = initial_state(params, opt_state, numbers,
                                                  optimizer=static_optimizer)
    else:  # on a mesh, init's fresh scalars must be replicated like the program's outputs
        params = place_copy(params, mesh)
        opt_state = place_copy(optimizer.init(trainable(params)) if opt_state is None
                               else opt_state, mesh)
        guard = place_copy(new_guard(), mesh)
    epoch_steps = n_full + (1 if remainder else 0)
    full_batch = epoch_steps == 1 and source is None
    val_batch = validation_batch(None if validation is None else n_val, validation_batch_size,
                                 batch, full_batch)
    settings = resume_state.run_settings(n_rows, batch_size, shuffle, n_val, key,
                                         accumulate)
    rates = LearningRateLog(optimizer, opt_state)
    pos = Position(params, opt_state, guard, {name: () for name in names + rates.names},
                   initial_epoch)
    if resume:
        loaded = resume_state.load_state(
            checkpoint, params, opt_state, names, key, run=settings, epochs=epochs,
            totals_like=epoch_totals_like(spec, params, x, y, batch, key),
            optional_names=rates.names)
        if loaded is not None:
            pos = Position(place_copy(loaded.params, mesh), place_copy(loaded.opt_state, mesh),
                           guard, {name: tuple(v) for name, v in loaded.history.items()},
                           loaded.epochs_done, loaded.step,
                           None if not loaded.step else place_copy(loaded.totals, mesh))
            key = loaded.key
    if hooks:
        hooks.begin(pos)
    if pos.done >= epochs:
        return (*hooks.end(pos), as_lists(pos.history)) if hooks else (
            pos.params, pos.opt_state, as_lists(pos.history))

    unit = unit or ("epoch" if full_batch else "step")
    capacity = _capacity(epochs - pos.done, None if checkpoint is None else every) \
        if full_batch else 1
    plan = EpochPlan(spec, n_rows, batch, n_full, remainder, shuffle and not full_batch,
                     capacity, val_batch, n_val, unit if progress else None, mesh,
                     accumulate=accumulate if source is not None and source.steps is None
                     else min(accumulate, epoch_steps), weighted=weighted)
    numbers = hyperdata.place(numbers, mesh)
    feed = None if source is not None else Feed(
        x, y if weights is None else (y, weights), validation, mesh, batch_size,
        shuffle and not full_batch, key, val_batch=val_batch)
    streamed = None if source is None else StreamRun(source, plan, validation, key, numbers,
                                                     prefetch)
    run = Run(plan, names, feed, key, epochs, None if checkpoint is None else every, checkpoint,
              mesh, epoch_steps, progress, settings, rates, hooks, numbers, streamed)
    unit_scale = 1 if unit == "epoch" else epoch_steps
    with ProgressBar(epochs * unit_scale, pos.done * unit_scale + pos.step, unit,
                     progress and is_main_process()) as bar:
        pos = train(run, pos, bar)
    params, opt_state = hooks.end(pos) if hooks else (pos.params, pos.opt_state)
    return params, opt_state, as_lists(pos.history)
