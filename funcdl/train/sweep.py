"""`sweep`: k configurations of an optimizer's hyperparameters trained at once, in ONE compiled
program: `fit`'s compiled epochs (`epochs.run_epochs`) vmapped over the optimizer's numbers
and a leading axis k of the params and optimizer state (the data, the key and the batches are
shared, not batched).

    params_k, opt_state_k, history = fdl.train.sweep(
        model, params, fdl.losses.mse_loss, lambda lr: fdl.optim.adam(lr),
        {"lr": np.array([1e-3, 3e-3, 1e-2])}, x, y, epochs=10, batch_size=64)
    history["loss"].shape  # (3, 10)

Configuration i trains as `fit(model, params, loss_fn, make_optimizer(lr=lr[i]), x, y,
**fit_kwargs)` does: the same batches, shuffle order and dropout keys (one `key`), within
float32 rounding (the batched matrix products of a vmapped program may round differently).

A configuration with a non-finite step stops there alone: it keeps the params and optimizer
state before that step (as `fit`'s NaN stop does), its history is NaN from that epoch on, the
other configurations train to the end, and `sweep` warns (a RuntimeWarning) naming each stopped
configuration with its epoch, step and loss. Only a call in which a configuration first goes
non-finite is replayed with the per-step guard (`epochs.py`).
"""
import functools
import inspect
import time
import warnings
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from funcdl.train import checks, hyperdata, loss_scale
from funcdl.train.batches import batch_layout, validation_batch
from funcdl.train.broadcast import warn_if_broadcasting
from funcdl.train.epochs import EpochPlan, new_guard, run_epochs, run_epochs_guarded
from funcdl.train.feed import Feed
from funcdl.train.fit import MAX_EPOCHS_PER_CALL, default_key, fit as _fit
from funcdl.train.ctrl_c import CtrlC
from funcdl.train.loop import compile_seconds, next_call_length, timed_epoch_seconds
from funcdl.train.param_checks import check_trainable
from funcdl.train.progress import ProgressBar
from funcdl.train.stateful import trainable
from funcdl.train.stops import Interrupted
from funcdl.train.step import (ModelLike, PyTree, StepSpec, check_compute_dtype,
                               check_grad_backend, check_loss, check_model)
from funcdl.train.sweep_configs import configurations
from funcdl.train.sweep_rates import SweptRates

NOT_SWEPT = ("mesh", "callbacks", "checkpoint", "checkpoint_every", "resume", "opt_state",
             "steps_per_epoch", "prefetch")  # the last two: streamed data (arrays only here)
NOT_YET_SWEPT = ("accumulate", "sample_weight", "class_weight")  # fit's; not in sweep's program
_FIT_OPTIONS = {name: p.default for name, p in inspect.signature(_fit).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY
                and name not in NOT_SWEPT + NOT_YET_SWEPT}


def _options(fit_kwargs) -> dict:
    refused = [name for name in fit_kwargs if name in NOT_SWEPT]
    if refused:
        raise TypeError(f"sweep does not take {', '.join(f'`{n}`' for n in refused)} (fit's "
                        "options for a mesh, callbacks, checkpoints, a given optimizer "
                        "state and streamed data): every configuration starts from `params` "
                        "and a fresh state, on arrays `x`, `y`")
    later = [name for name in fit_kwargs if name in NOT_YET_SWEPT]
    if later:
        raise TypeError(f"sweep does not take {', '.join(f'`{n}`' for n in later)} yet "
                        "(gradient accumulation and row weights): train each configuration "
                        "with fit for those")
    unknown = [name for name in fit_kwargs if name not in _FIT_OPTIONS]
    if unknown:
        raise TypeError(f"sweep got unexpected keyword arguments {unknown}; it takes fit's "
                        f"options {sorted(_FIT_OPTIONS)}")
    if "epochs" not in fit_kwargs:
        raise TypeError("sweep needs `epochs` (fit's epochs: the epoch to stop at)")
    return {**_FIT_OPTIONS, **fit_kwargs}


@functools.partial(jax.jit, static_argnames=("skeleton", "compute_dtype"))
def initial_states(params, numbers, *, skeleton, compute_dtype):
    """`(params_k, opt_state_k)`: k copies of `params` and each configuration's fresh state
    (`numbers` (k, n) fields)."""
    def one(numbers_i):
        copy = jax.tree_util.tree_map(jnp.copy, params)
        optimizer = hyperdata.bound(skeleton, numbers_i)
        weights = trainable(copy)  # a stateful model's Variables: the optimizer sees params
        state = loss_scale.prepare(optimizer, weights, None, compute_dtype)  # float16: scaled
        return copy, optimizer.init(weights) if state is None else state
    return jax.vmap(one)(numbers)


def _swept(params, opt_state, data, key, epoch0, n_run, numbers, *, plan, program):
    guard = new_guard()  # unbatched: every configuration starts the call finite

    def one(p, s, n):
        return program(p, s, guard, None, data, key, epoch0, n_run, np.int32(1), np.int32(0), n,
                       plan=plan)
    return jax.vmap(one)(params, opt_state, numbers)


run_swept = jax.jit(functools.partial(_swept, program=run_epochs), static_argnames=("plan",))
run_swept.__doc__ = """`(params_k, opt_state_k, data, key, epoch0, n_run, numbers_k, *, plan)
-> (params_k, opt_state_k, guard_k, totals_k, means_k)`: `epochs.run_epochs` vmapped over the
leading axis k (means_k: (k, plan.n_epochs, width))."""
run_swept_guarded = jax.jit(functools.partial(_swept, program=run_epochs_guarded),
                            static_argnames=("plan",))


@jax.jit
def _select(keep, new, old):
    """Per configuration (`keep` bool (k,)): `new` where it holds, else `old`."""
    def pick(n, o):
        return jnp.where(keep.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)
    return jax.tree_util.tree_map(pick, new, old)


def sweep(model: ModelLike, params: PyTree, loss_fn: Callable, make_optimizer: Callable,
          hyperparams: Mapping[str, Any], x: PyTree, y: PyTree, **fit_kwargs: Any
          ) -> tuple[PyTree, PyTree, dict[str, np.ndarray]]:
    """Train k configurations at once; returns `(params_k, opt_state_k, history)`.

    make_optimizer: a function of keywords returning an `fdl.optim` optimizer (built by its
    constructors, schedules and chains included). hyperparams: `{keyword: array (k,)}`, one
    or several keywords of `make_optimizer`, all of length k; configuration i is
    `make_optimizer(**{name: float(values[i])})`, built once with concrete numbers (so the
    constructors' range checks apply: a negative `lr[i]` is a ValueError naming
    `hyperparams['lr'][i]`). All k optimizers must have one structure (only non-zero floats
    vary: a zero changes the optimizer state). fit_kwargs: `fit`'s keyword options (`epochs`
    required; `batch_size`, `shuffle`, `key`, `validation`, `metrics`, `compute_dtype`,
    `grad_backend`, `initial_epoch`, `validation_batch_size`, `progress`), except `mesh`,
    `callbacks`, `checkpoint`, `checkpoint_every`, `resume` and `opt_state` (TypeError).

    Returns params_k and opt_state_k with a leading axis k on every leaf, and history
    `{name: np.ndarray (k, epochs - initial_epoch)}` with fit's names (`loss`, the metrics,
    `val_...`, and `lr`: each configuration's learning rate, as `fit` records it). Configuration i equals `fit` with `make_optimizer` of its values within
    float32 rounding. One compiled program trains all k (the epochs vmapped), and another
    sweep of the same length k with other values compiles nothing. A configuration with a
    non-finite step: the module docstring (it stops alone, NaN history, a RuntimeWarning).
    Ctrl-C raises `fdl.train.Interrupted` with the k-axis state of the last completed call.

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from funcdl import nn, losses, optim, train
    >>> x = jnp.linspace(-1, 1, 32).reshape(32, 1); y = 3 * x + 1
    >>> model = nn.Linear(1); params = model.init(jax.random.key(0), x)
    >>> params_k, _, history = train.sweep(model, params, losses.mse_loss, optim.sgd,
    ...                                    {"lr": np.array([0.01, 0.1, 0.5])}, x, y,
    ...                                    epochs=20, progress=False)
    >>> params_k["w"].shape, history["loss"].shape
    ((3, 1, 1), (3, 20))
    >>> [bool(v) for v in np.diff(history["loss"].T[-1]) < 0]  # larger lr, lower loss
    [True, True]
    """
    options = _options(fit_kwargs)
    check_model(model)
    check_loss(loss_fn)
    configs = configurations(make_optimizer, hyperparams)
    grad_backend, progress = options["grad_backend"], options["progress"]
    check_grad_backend(grad_backend)
    compute_dtype = check_compute_dtype(options["compute_dtype"])
    epochs = checks.check_int(options["epochs"], "epochs", 0)
    initial_epoch = checks.check_int(options["initial_epoch"], "initial_epoch", 0)
    if initial_epoch > epochs:
        raise ValueError(f"`initial_epoch` must be <= `epochs` (the epoch to stop at), got "
                         f"initial_epoch={initial_epoch} and epochs={epochs}")
    batch_size = checks.check_batch_size(options["batch_size"])
    n_rows = checks.check_pair(x, y, "x", "y")
    check_trainable(params, where="sweep")
    validation, n_val = checks.check_validation(options["validation"])
    metrics = checks.check_metrics(options["metrics"])
    key = options["key"]
    checks.check_fit_key(key)
    validation_batch_size = checks.check_batch_size(options["validation_batch_size"],
                                                    "validation_batch_size")
    shuffle = True if options["shuffle"] is None else options["shuffle"]  # fit's default
    if not isinstance(shuffle, bool) or not isinstance(progress, bool):
        name, value = ("shuffle", shuffle) if not isinstance(shuffle, bool) else ("progress",
                                                                               progress)
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__}")
    batch, n_full, remainder = batch_layout(n_rows, batch_size)
    key = default_key(jax.config.jax_default_prng_impl) if key is None else key
    full_batch = n_full + bool(remainder) == 1
    val_batch = validation_batch(None if validation is None else n_val, validation_batch_size,
                                 batch, full_batch)

    spec = StepSpec(model, loss_fn, configs.skeleton, grad_backend, compute_dtype, metrics)
    warn_if_broadcasting(spec, params, x, y, batch, key, train=True, where="sweep")
    names = ["loss"] + [name for name, _ in metrics]
    names = names + [f"val_{name}" for name in names] if validation is not None else names
    params_k, state_k = initial_states(params, configs.numbers, skeleton=configs.skeleton,
                                       compute_dtype=compute_dtype)
    rates = SweptRates(configs.optimizers, state_k)  # history["lr"], as fit's
    history = {name: np.zeros((configs.k, 0)) for name in names + rates.names}
    if epochs == initial_epoch:
        return params_k, state_k, history
    need = min(epochs - initial_epoch, MAX_EPOCHS_PER_CALL)
    capacity = 1 << max(0, need - 1).bit_length()  # a power of two: lengths share programs
    shuffle = shuffle and not full_batch
    plan = EpochPlan(spec, n_rows, batch, n_full, remainder, shuffle, capacity, val_batch,
                     n_val, None)
    data = Feed(x, y, validation, None, batch_size, shuffle, key, val_batch=val_batch).data(0)
    trainer = _Trainer(plan, names, data, key, configs, epochs, rates, n_full + bool(remainder))
    with ProgressBar(epochs, initial_epoch, "epoch", progress) as bar:
        return trainer.run(params_k, state_k, initial_epoch, bar)


class _Trainer:
    """The host loop of a sweep: compiled calls of up to `plan.n_epochs` epochs each (about
    `CALL_SECONDS` of work, so Ctrl-C is honoured), the stopped configurations frozen."""

    def __init__(self, plan, names, data, key, configs, epochs, rates, steps_per_epoch):
        self.plan, self.names, self.data, self.key = plan, names, data, key
        self.configs, self.epochs = configs, epochs
        self.rates, self.steps_per_epoch = rates, steps_per_epoch

    def run(self, params, state, done, bar):
        k, width = self.configs.k, len(self.names) + len(self.rates.names)
        alive = np.ones(k, bool)
        stops = {}  # config -> (epoch, step, loss) of its first non-finite step
        rows = []  # (k, n, width) per call
        seconds_per_epoch = n_run = None
        with CtrlC() as ctrl_c:  # a Ctrl-C that something swallowed is raised again here
            try:
                while done < self.epochs:
                    ctrl_c.check()
                    n_run = next_call_length(seconds_per_epoch,
                                             min(self.epochs - done, self.plan.n_epochs), n_run)
                    compiling, started = compile_seconds(), time.perf_counter()
                    args = (self.data, self.key, np.int32(done), np.int32(n_run),
                            self.configs.numbers)
                    out = run_swept(params, state, *args, plan=self.plan)
                    means, ok = jax.device_get((out[4], out[2].ok))
                    new_bad = alive & ~ok
                    if new_bad.any():  # replay with the per-step guard (epochs.py)
                        out = run_swept_guarded(params, state, *args,
                                                plan=self.plan._replace(guarded=True))
                        means, guard = jax.device_get((out[4], out[2]))
                        for i in np.flatnonzero(new_bad):
                            stops[int(i)] = (int(guard.epoch[i]), int(guard.step[i]),
                                             float(guard.loss[i]))
                    means = np.array(means[:, :n_run], dtype=np.float64)
                    lrs = self.rates.rows(out[1], n_run, self.steps_per_epoch)
                    if lrs:
                        means = np.concatenate([means] + [v[:, :, None] for v in lrs.values()], 2)
                    for i, (epoch, _, _) in stops.items():  # stopped: NaN from the stop's epoch
                        means[i, max(0, epoch - done):] = np.nan
                    if alive.all():
                        params, state = out[0], out[1]
                    else:  # the configurations stopped before this call keep their state
                        params, state = _select(jnp.asarray(alive), (out[0], out[1]),
                                                (params, state))
                    alive &= ~new_bad
                    rows.append(means)
                    wall = time.perf_counter() - started
                    timed = timed_epoch_seconds(wall, compile_seconds() - compiling, n_run)
                    if timed is not None:
                        seconds_per_epoch = timed
                    done += n_run
                    best = np.fmin.reduce(means[..., 0], axis=0)[:, None]  # NaN ignored
                    bar.finish_call(done, best, ["best loss"], done - n_run, wall)
            except KeyboardInterrupt:
                raise Interrupted(params, state, self._history(rows, k, width), done) from None
        if stops:
            shown = "; ".join(f"{i} ({', '.join(f'{n}={v[i]!r}' for n, v in self.configs.values.items())})"
                              f" at epoch {e}, step {s}, loss {loss}"
                              for i, (e, s, loss) in sorted(stops.items()))
            warnings.warn(f"sweep: configurations with a non-finite training step: {shown}. "
                          "Each keeps its params and optimizer state from before that step "
                          "and its history is NaN from that epoch on; the other "
                          "configurations trained to the end", RuntimeWarning, stacklevel=3)
        return params, state, self._history(rows, k, width)

    def _history(self, rows, k, width):
        table = np.concatenate(rows, axis=1) if rows else np.zeros((k, 0, width))
        return {name: table[:, :, j] for j, name in enumerate(self.names + self.rates.names)}
