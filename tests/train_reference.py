"""Shared by the tests/test_train*.py files: a small regression problem and the independent
reference for `fdl.train.fit`, a hand-written loop over a jitted `jax.value_and_grad` step that
visits the same batches in the same order (funcdl's documented shuffle:
`permutation(split(fold_in(key, epoch))[0], n)`)."""
import contextlib
import functools

import jax
import numpy as np

from funcdl import losses, nn, optim

N_ROWS, BATCH = 50, 16  # three full batches and a partial one of 2 rows
MODEL = nn.Sequential(nn.Linear(8), nn.Tanh(), nn.Linear(2))
RNG = np.random.RandomState(0)
X = RNG.randn(N_ROWS, 3).astype(np.float32)
Y = np.stack([X[:, 0] * X[:, 1], np.sin(X[:, 2])], axis=1).astype(np.float32)
PARAMS = MODEL.init(jax.random.key(1), X)
LOSS = losses.mse_loss
ADAM = optim.adam(1e-2)
SGD = optim.sgd(0.1, momentum=0.9)


@contextlib.contextmanager
def counting_compilations():
    """Yields a list that gets one entry per XLA compilation inside the block: the name of the
    function compiled."""
    compiled = []

    def listener(event, duration, fun_name="?", **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(fun_name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@functools.lru_cache(maxsize=None)
def reference_step(opt):
    """The hand-written jitted step (one per optimizer, so its compilations are reused)."""
    @jax.jit
    def step(p, s, xb, yb):
        loss, g = jax.value_and_grad(lambda q: LOSS(MODEL.apply(q, xb), yb))(p)
        updates, s = opt.update(g, s, p)
        return optim.apply_updates(p, updates), s, loss
    return step


def reference_fit(opt, epochs, batch_size, key, shuffle, params=PARAMS, opt_state=None,
                  first_epoch=0, x=X, y=Y, max_steps=None):
    """Plain Python loop over a jitted value_and_grad step: the oracle for fit.
    Returns (params, opt_state, per-epoch batch-weighted mean losses); stops after
    `max_steps` updates when given."""
    step = reference_step(opt)
    state = opt.init(params) if opt_state is None else opt_state
    history, steps, n_rows = [], 0, len(x)
    for epoch in range(first_epoch, first_epoch + epochs):
        order = np.arange(n_rows)
        if shuffle:
            shuffle_key, _ = jax.random.split(jax.random.fold_in(key, epoch))
            order = np.asarray(jax.random.permutation(shuffle_key, n_rows))
        total = 0.0
        for start in range(0, n_rows, batch_size):
            if steps == max_steps:
                return params, state, history
            rows = order[start:start + batch_size]
            params, state, loss = step(params, state, x[rows], y[rows])
            total += len(rows) * float(loss)
            steps += 1
        history.append(total / n_rows)
    return params, state, history


def assert_trees_close(actual, expected, rtol=2e-5, atol=2e-6):
    jax.tree_util.tree_map(
        lambda a, e: np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol, atol),
        actual, expected)


def run_on_four_host_devices(script, path):
    """Run the Python `script` (which prints "MESH OK" at its end) in a fresh process on 4
    forced host devices, with `PATH = path` defined first; the finished process (its stderr
    as text), after asserting that it succeeded."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=os.pathsep.join([os.getcwd(), os.path.dirname(__file__)]))
    result = subprocess.run([sys.executable, "-c", f"PATH = {str(path)!r}\n" + script],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "MESH OK" in result.stdout, result.stderr[-3000:]
    return result


def assert_bitwise_equal(actual, expected):
    """Every leaf of `actual` equals `expected`'s bit for bit (NaN equal to NaN)."""
    jax.tree_util.tree_map(
        lambda a, e: np.testing.assert_array_equal(np.asarray(a), np.asarray(e)),
        actual, expected)


def with_and_without_a_bad_row(folder, x, row=70):
    """`[(name, bad_x, good_x)]`: `x` with an inf at `[row, 0]` and as it is, both as memory
    maps of .npy files in `folder` ("map") and as arrays ("memory")."""
    bad = x.copy()
    bad[row, 0] = np.inf
    np.save(folder / "bad.npy", bad)
    np.save(folder / "x.npy", x)
    return [("map", np.load(folder / "bad.npy", mmap_mode="r"),
             np.load(folder / "x.npy", mmap_mode="r")), ("memory", bad, x)]
