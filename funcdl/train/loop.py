"""`fit`'s host loop: the compiled calls one after another, and what happens between them.

Each call runs `n_run` epochs of one compiled program (`epochs.run_epochs`; `n_run` is traced,
so calls of any length up to the program's capacity share it). Between calls, on the host:
the history grows by the call's rows, a failed call is replayed with the per-step guard (a NaN
stop), the checkpoint is written every `checkpoint_every` epochs, and Ctrl-C is honoured.

Call lengths. A minibatch run makes one call per epoch. A full-batch run (one step per epoch,
never shuffled) runs many epochs per call, but Python sees Ctrl-C only between calls, so a
call is about `CALL_SECONDS` of work: the first call of a program runs one epoch (unless an
earlier `fit` measured the same program), and every call sets the next one's length from its
own time per epoch (`next_call_length`): only a call during which nothing compiled is timed
(`jax.monitoring`'s compile events; wall time minus compile time can come out near zero and
size the next call at the program's whole capacity), and a call is at most GROWTH times the
one before it in the same `fit`, so one bad measurement cannot make a call much longer than
CALL_SECONDS.

With callbacks (`hooks.py`), every call runs one epoch and the callbacks run after it; one
returning True stops training there (the checkpoint is then written, as at the end).
`history["lr"]` (`lr_history.py`) grows with the other names after each call.

The state between calls is one `Position` value, replaced whole after each call, so a Ctrl-C
at any moment hands back a consistent state: `Interrupted(.params, .opt_state, .history,
.epoch)`, written to the checkpoint first when there is one.
"""
import time
from typing import Any, NamedTuple, Optional

import numpy as np

from funcdl.train import resume as resume_state
from funcdl.train.ctrl_c import CtrlC
from funcdl.train.epochs import EpochPlan, run_epochs, run_epochs_guarded
from funcdl.train.progress import choose_every, first_every, remember
from funcdl.train.sharding import to_host
from funcdl.train.stops import Interrupted, diverged

CALL_SECONDS = 0.5  # the work of one full-batch call, so Ctrl-C is honoured within ~a second
GROWTH = 8  # a call runs at most GROWTH times the epochs of the call before it


class Position(NamedTuple):
    """Where training stands between two compiled calls."""
    params: Any
    opt_state: Any
    guard: Any  # epochs.Guard
    history: dict  # name -> tuple of floats, one per whole epoch done
    done: int  # whole epochs done (counted from epoch 0 of the run)
    step: int = 0  # steps of epoch `done` already applied (after a resumed NaN stop)
    totals: Any = None  # their accumulate.Totals (None: step 0)


class Run(NamedTuple):
    """What stays fixed during one `fit` call."""
    plan: EpochPlan  # the program; its n_epochs is the capacity of one call
    names: list  # history names, in the order of a means row
    feed: Any  # feed.Feed
    key: Any
    epochs: int  # the epoch to stop at
    every: Optional[int]  # checkpoint_every (None: no checkpoint)
    checkpoint: Any
    mesh: Any
    steps_per_epoch: int
    progress: bool
    settings: dict  # the run's settings, stored in the checkpoint and checked on resume
    rates: Any = None  # lr_history.LearningRateLog (None: no "lr" names)
    hooks: Any = None  # hooks.Hooks (None or empty: no callbacks)
    numbers: Any = None  # the optimizer's Numbers, traced (hyperdata.py); None: hand-made
    stream: Any = None  # stream_run.StreamRun: streamed data, one epoch per call (feed: None)


_compile_seconds = [0.0]
_listening = [False]


def _on_duration(event: str, duration: float, **_):
    if event.startswith("/jax/core/compile/"):
        _compile_seconds[0] += duration


def compile_seconds() -> float:
    """Seconds jax has spent compiling in this process (since the first `fit`)."""
    if not _listening[0]:
        import jax.monitoring
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        _listening[0] = True
    return _compile_seconds[0]


_seconds_per_epoch = {}  # EpochPlan -> seconds per epoch measured on its last timed call


def next_call_length(seconds_per_epoch: Optional[float], limit: int,
                     previous: Optional[int]) -> int:
    """Epochs of the next full-batch call: about CALL_SECONDS of work at `seconds_per_epoch`
    (None: unmeasured, one epoch), at most `limit` and GROWTH times `previous` (the last
    call's epochs in this run; None before the first)."""
    if seconds_per_epoch is None:
        return 1
    n = min(limit, int(CALL_SECONDS / max(seconds_per_epoch, 1e-9)))
    if previous is not None:
        n = min(n, GROWTH * previous)
    return max(1, n)


def timed_epoch_seconds(wall: float, compiled: float, n_run: int) -> Optional[float]:
    """Seconds per epoch of a call of `n_run` epochs that took `wall` seconds, `compiled` of
    them compiling; None when anything compiled (the difference says nothing reliable)."""
    return wall / n_run if compiled == 0 and wall > 0 else None


def _next_length(run: Run, pos: Position, previous: Optional[int]) -> int:
    """Epochs of the next call: up to the next checkpoint and the end, and about CALL_SECONDS."""
    if pos.step or run.plan.n_epochs == 1 or run.hooks:
        return 1
    left = run.epochs - pos.done
    if run.every is not None:
        left = min(left, run.every - pos.done % run.every)
    return next_call_length(_seconds_per_epoch.get(run.plan), min(left, run.plan.n_epochs),
                            previous)


def _with_rows(history: dict, names, rows) -> dict:
    """A new history with one more value per name for each row of `rows`."""
    return {**history, **{name: history[name] + tuple(float(v) for v in rows[:, i])
                          for i, name in enumerate(names)}}


def _grown(run: Run, history: dict, rows, opt_state, later_steps: int = 0) -> dict:
    """`history` with the rows of `len(rows)` epochs and their learning rates, which end
    `later_steps` updates before `opt_state`."""
    history = _with_rows(history, run.names, rows)
    if run.rates is not None:
        for name, values in run.rates.rows(opt_state, len(rows), run.steps_per_epoch,
                                           later_steps).items():
            history[name] = history[name] + values
    return history


def as_lists(history: dict) -> dict:
    return {name: list(values) for name, values in history.items()}


def _save(run: Run, pos: Position):
    resume_state.save_state(run.checkpoint, pos.params, pos.opt_state, as_lists(pos.history),
                            pos.done, run.key, run.mesh, step=pos.step, totals=pos.totals,
                            run=run.settings)


def train(run: Run, pos: Position, bar) -> Position:
    """Run compiled calls from `pos` until `run.epochs` epochs are done; returns the final
    `Position`. Raises the NaN stop's FloatingPointError and `Interrupted` (stops.py)."""
    data = None if run.stream is not None else run.feed.data(pos.done)
    progress_every = n_run = None
    unit_scale = run.steps_per_epoch if run.plan.n_full + bool(run.plan.remainder) > 1 else 1
    with CtrlC() as ctrl_c:  # a Ctrl-C that something swallowed is raised again here
        try:
            while pos.done < run.epochs:
                ctrl_c.check()
                n_run = _next_length(run, pos, n_run)
                plan = run.plan if not pos.step else run.plan._replace(n_epochs=1,
                                                                      first_step=pos.step)
                if not (run.progress and bar.terminal):  # the in-program callback moves a bar only
                    plan = plan._replace(progress=None)
                if progress_every is None:
                    default = run.steps_per_epoch if unit_scale > 1 else run.epochs - pos.done
                    progress_every = first_every(plan, max(1, default // 8))
                compiling, started = compile_seconds(), time.perf_counter()
                after = pos.done + n_run
                if run.stream is not None:  # one epoch of chunks, each guarded (stream_run.py)
                    out, means, guard = run.stream.epoch(pos, bar, unit_scale)
                    upcoming = None
                else:
                    args = (data, run.key, np.int32(pos.done), np.int32(n_run),
                            np.int32(progress_every), np.int32(bar.token), run.numbers)
                    out = run_epochs(pos.params, pos.opt_state, pos.guard, pos.totals, *args,
                                     plan=plan)
                    # the next call's batches are built on the host while the device runs this one
                    upcoming = run.feed.data(after) if after < run.epochs else None
                    means, guard = to_host((out[4], out[2]))
                    if not bool(guard.ok):  # replay the call with the per-step guard (epochs.py)
                        out = run_epochs_guarded(pos.params, pos.opt_state, pos.guard, pos.totals,
                                                 *args, plan=plan._replace(guarded=True,
                                                                           progress=None))
                        means, guard = to_host((out[4], out[2]))
                if not bool(guard.ok):
                    _stop(run, pos, out, means, guard)
                wall = time.perf_counter() - started
                compiled = compile_seconds() - compiling
                elapsed = wall - compiled
                pos = Position(out[0], out[1], out[2],
                               _grown(run, pos.history, means[:n_run], out[1]), after)
                data = upcoming
                shown = list(pos.history)  # the history's names, the learning rates included
                bar.finish_call(after * unit_scale,
                                np.array([pos.history[name][-n_run:] for name in shown]).T, shown,
                                after - n_run, wall)
                units = n_run * unit_scale
                progress_every = choose_every(elapsed, units, progress_every)
                timed = timed_epoch_seconds(wall, compiled, n_run)
                if timed is not None:
                    _seconds_per_epoch[run.plan] = timed
                if elapsed > 0 and run.progress:
                    remember(plan, elapsed, units)
                stop = False
                if run.hooks:
                    save = None if run.checkpoint is None else (lambda pos=pos: _save(run, pos))
                    pos, stop = run.hooks.epoch_end(pos, save)
                if run.checkpoint is not None and (after % run.every == 0 or after == run.epochs
                                                   or stop):
                    _save(run, pos)
                if stop:
                    break
        except KeyboardInterrupt:
            if run.checkpoint is not None:
                _save(run, pos)
            raise Interrupted(pos.params, pos.opt_state, as_lists(pos.history), pos.done,
                              run.checkpoint) from None
    return pos


def _stop(run: Run, pos: Position, out, means, guard):
    """A NaN stop: the state before the bad step (and, with a checkpoint, its position and the
    partial epoch's totals, so that a resume applies every step once)."""
    bad_epoch, bad_step = int(guard.epoch), int(guard.step)
    history = _grown(run, pos.history, means[:bad_epoch - pos.done], out[1],
                     bad_step if bad_epoch > pos.done else 0)
    stopped = Position(out[0], out[1], pos.guard, history, bad_epoch,
                       bad_step, out[3] if bad_step else None)
    at_epoch = run.stream is not None and not run.stream.resumes_mid_epoch
    if run.checkpoint is not None:  # a stream that cannot restart mid-epoch: its epoch's start
        _save(run, pos if at_epoch else stopped)
    raise diverged(stopped.params, stopped.opt_state, as_lists(history), bad_epoch, bad_step,
                   float(guard.loss), run.checkpoint, resumes_at_epoch=at_epoch)
