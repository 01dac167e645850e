"""How fit stops and goes on: a NaN stop's checkpoint holds its position and the partial
epoch's totals, so a resume after the data are fixed equals the clean run bitwise (each step
applied once); Ctrl-C raises `fdl.train.Interrupted` with the last state within about a second;
full-batch runs are split into short calls that give the same numbers as one call."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from funcdl import checkpoint, losses, metrics, nn, optim, train
from funcdl.train import loop

RNG = np.random.RandomState(1)
X = RNG.randn(44, 3).astype(np.float32)
Y = (np.sin(X[:, :1]) + X[:, 1:2]).astype(np.float32)
MODEL = nn.Sequential(nn.Linear(8), nn.Dropout(0.2), nn.Tanh(), nn.Linear(1))
PARAMS = MODEL.init(jax.random.key(0), X)
KWARGS = dict(batch_size=6, key=jax.random.key(5), progress=False,
              metrics={"r2": metrics.r2_score(), "mae": losses.l1_loss},
              validation=(X[:10], Y[:10]))


def _bad_data():
    bad = X.copy()
    bad[17, 1] = np.inf
    return bad


def _leaves_equal(a, b):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.slow  # ~15 s: the slow tier (`make test-slow`, run by CI)
def test_a_nan_stop_resumed_after_the_fix_equals_the_clean_run_bitwise(tmp_path):
    path = tmp_path / "run.safetensors"
    opt = optim.adam(1e-2)
    clean = train.fit(MODEL, PARAMS, losses.mse_loss, opt, X, Y, epochs=5, **KWARGS)
    train.fit(MODEL, PARAMS, losses.mse_loss, opt, X, Y, epochs=2, checkpoint=path, **KWARGS)
    with pytest.raises(FloatingPointError) as stop:
        train.fit(MODEL, PARAMS, losses.mse_loss, opt, _bad_data(), Y, epochs=5,
                  checkpoint=path, resume=True, **KWARGS)
    epoch, step = stop.value.epoch, stop.value.step
    assert epoch == 2 and step > 0  # row 17 sits in the middle of epoch 2's shuffled order
    meta = checkpoint.metadata(path)
    assert (meta["epochs_done"], meta["step"]) == ("2", str(step))
    # the stop's state: the clean run's after `step` steps of epoch 2 (Adam's count says so)
    assert int(stop.value.opt_state[1].count) == 2 * 8 + step
    resumed = train.fit(MODEL, PARAMS, losses.mse_loss, opt, X, Y, epochs=5, checkpoint=path,
                        resume=True, **KWARGS)
    assert int(resumed[1][1].count) == int(clean[1][1].count) == 5 * 8
    _leaves_equal(resumed[:2], clean[:2])
    assert resumed[2] == clean[2]


@pytest.mark.slow  # ~18 s: the slow tier (`make test-slow`, run by CI)
def test_a_nan_stop_in_the_resumed_partial_epoch_stops_again_at_its_step(tmp_path):
    path = tmp_path / "run.safetensors"
    opt = optim.sgd(0.05)
    kwargs = {**KWARGS, "metrics": None, "validation": None}
    with pytest.raises(FloatingPointError) as first:
        train.fit(MODEL, PARAMS, losses.mse_loss, opt, _bad_data(), Y, epochs=3,
                  checkpoint=path, **kwargs)
    with pytest.raises(FloatingPointError) as again:  # not fixed: the same step again
        train.fit(MODEL, PARAMS, losses.mse_loss, opt, _bad_data(), Y, epochs=3,
                  checkpoint=path, resume=True, **kwargs)
    assert (again.value.epoch, again.value.step) == (first.value.epoch, first.value.step)
    _leaves_equal(again.value.params, first.value.params)
    clean = train.fit(MODEL, PARAMS, losses.mse_loss, opt, X, Y, epochs=3, **kwargs)
    resumed = train.fit(MODEL, PARAMS, losses.mse_loss, opt, X, Y, epochs=3, checkpoint=path,
                        resume=True, **kwargs)
    _leaves_equal(resumed[:2], clean[:2])
    assert resumed[2] == clean[2]


def test_full_batch_calls_of_any_length_give_the_numbers_of_one_call(monkeypatch):
    calls = []
    real = loop.run_epochs

    def counting(*args, **kwargs):
        calls.append(int(args[7]))
        return real(*args, **kwargs)

    kwargs = dict(progress=False, metrics={"r2": metrics.r2_score()}, validation=(X[:9], Y[:9]))
    one = train.fit(MODEL, PARAMS, losses.mse_loss, optim.adam(1e-2), X, Y, epochs=37, **kwargs)
    monkeypatch.setattr(loop, "run_epochs", counting)
    monkeypatch.setattr(loop, "CALL_SECONDS", 1e-9)  # one epoch per call
    split = train.fit(MODEL, PARAMS, losses.mse_loss, optim.adam(1e-2), X, Y, epochs=37,
                      **kwargs)
    assert calls == [1] * 37
    _leaves_equal(one[:2], split[:2])
    assert one[2] == split[2]


def test_a_call_grows_at_most_growth_times_and_only_timed_calls_set_its_length():
    assert loop.next_call_length(None, 10**8, None) == 1  # unmeasured: one epoch
    assert loop.next_call_length(1e-12, 10**9, None) == int(loop.CALL_SECONDS / 1e-9)
    assert loop.next_call_length(1e-12, 10**8, 3) == 3 * loop.GROWTH
    assert loop.next_call_length(1e-12, 5, 3) == 5  # the run's end and the program's capacity
    assert loop.next_call_length(10.0, 10**8, 3) == 1  # slower than CALL_SECONDS: one epoch
    assert loop.timed_epoch_seconds(2.0, 0.0, 4) == 0.5
    assert loop.timed_epoch_seconds(2.0, 1.999999, 4) is None  # compiled: not a measurement


def test_a_call_that_compiled_does_not_size_the_next_one(monkeypatch):
    """Wall time minus compile time near zero (the compile events add up to nearly the call's
    wall time) once sized the second call at thousands of epochs, up to the program's
    capacity. Now such a call is not timed, and calls grow GROWTH-fold at most."""
    calls, real, clock = [], loop.run_epochs, [0.0]

    def counting(*args, **kwargs):
        calls.append(int(args[7]))
        if len(calls) == 6:
            raise KeyboardInterrupt
        started = time.perf_counter()
        out = jax.block_until_ready(real(*args, **kwargs))
        if len(calls) == 1:  # its compile events add up to nearly its whole wall time
            clock[0] += time.perf_counter() - started
        return out

    monkeypatch.setattr(loop, "run_epochs", counting)
    monkeypatch.setattr(loop, "compile_seconds", lambda: clock[0])
    loop._seconds_per_epoch.clear()
    with pytest.raises(train.Interrupted):
        train.fit(MODEL, PARAMS, losses.mse_loss, optim.adam(1e-2), X, Y, epochs=10**8,
                  progress=False)
    assert calls[:2] == [1, 1], calls  # the first call compiled: the second is not sized by it
    assert all(b <= loop.GROWTH * a for a, b in zip(calls, calls[1:])), calls


def test_a_ctrl_c_that_something_swallowed_still_stops_fit_at_the_next_call(monkeypatch):
    """SIGINT during the third call whose KeyboardInterrupt a careless library catches: fit
    still stops (Interrupted) before the fourth call, and gives Python's handler back."""
    calls, real = [], loop.run_epochs

    def swallowing(*args, **kwargs):
        calls.append(int(args[7]))
        if len(calls) == 3:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the KeyboardInterrupt arrives here...
            except KeyboardInterrupt:
                pass  # ... and is swallowed
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "run_epochs", swallowing)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with pytest.raises(train.Interrupted) as stop:
            train.fit(MODEL, PARAMS, losses.mse_loss, optim.adam(1e-2), X, Y, epochs=500,
                      progress=False)
    finally:
        restored = signal.signal(signal.SIGINT, previous)
    assert len(calls) == 3 and stop.value.epoch == sum(calls), (calls, stop.value.epoch)
    assert restored is signal.default_int_handler  # fit gave Python's handler back


INTERRUPT = textwrap.dedent('''
    import faulthandler, os, signal, threading, time
    faulthandler.dump_traceback_later(100, exit=True)  # a hang shows every thread's stack
    import sys; print("SIGINT was", signal.getsignal(signal.SIGINT), file=sys.stderr)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's Python (a test
    # runner's process can hand SIGINT down ignored, and Python then installs no handler)
    import jax, numpy as np
    from funcdl import checkpoint, losses, nn, optim, train
    from funcdl.train import loop
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(64, 1); y = x ** 2
    model = nn.Sequential(nn.Linear(32), nn.Tanh(), nn.Linear(1))
    params = model.init(jax.random.key(0), x)
    sent = []
    def interrupt():
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)
    real, calls = loop.run_epochs, []
    def counting(*args, **kwargs):  # Ctrl-C some time after the third call (compiled by then)
        calls.append(1)
        if len(calls) == 3:
            threading.Timer(0.3, interrupt).start()
        return real(*args, **kwargs)
    loop.run_epochs = counting
    try:  # full batch: without splitting, 10**8 epochs would be one dispatch of minutes
        train.fit(model, params, losses.mse_loss, optim.adam(1e-3), x, y, epochs=10 ** 8,
                  progress=False, checkpoint=PATH, checkpoint_every=10 ** 8)
        raise SystemExit("fit finished")
    except train.Interrupted as stop:
        waited = time.perf_counter() - sent[0]
        assert isinstance(stop, KeyboardInterrupt)
        assert stop.epoch > 0 and len(stop.history["loss"]) == stop.epoch, stop.epoch
        saved = checkpoint.load(PATH, {"params": stop.params}, strict=False)["params"]
        for a, b in zip(jax.tree_util.tree_leaves(saved), jax.tree_util.tree_leaves(stop.params)):
            np.testing.assert_array_equal(a, np.asarray(b))
        assert checkpoint.metadata(PATH)["epochs_done"] == str(stop.epoch)
        print(f"INTERRUPTED {waited:.3f}")
''')


@pytest.mark.slow  # a fresh jax process (a minute on a loaded machine): the slow tier (`make test-slow`)
def test_ctrl_c_raises_interrupted_with_the_last_state_within_about_a_second(tmp_path):
    script = f"PATH = {str(tmp_path / 'run.safetensors')!r}\n" + INTERRUPT
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    waited = float(result.stdout.split("INTERRUPTED")[1])
    assert waited < 2.0, waited  # calls of ~0.5 s of work (loop.CALL_SECONDS)


@pytest.mark.slow  # ~34 s: the slow tier (`make test-slow`, run by CI)
def test_every_python_block_of_the_training_guide_runs_alone():
    import pathlib
    import re
    guide = pathlib.Path(__file__).resolve().parent.parent / "docs" / "guides" / "training.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(), re.S)
    assert len(blocks) >= 4
    for code in blocks:
        exec(compile(code, str(guide), "exec"), {"__name__": "__guide__"})
