"""`fit` gives the numbers a hand computation gives at its edges: a bfloat16 model's metrics,
a continuation with `initial_epoch`, the NaN guard's one definition of a finite step (an
infinite learning rate, an overflowing second moment), and checkpoint paths checked first.
Each reference is independent: NumPy over the same predictions, one uninterrupted `fit`, the
initial params."""
import os
import re
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import losses, nn, optim, train


def _mean_square(pred, y):
    """A loss in the predictions' own dtype (bfloat16 here), as a user's loss often is."""
    return jnp.mean(pred ** 2)


def _accuracy(pred, y):
    return jnp.mean(jnp.argmax(pred, axis=-1) == y)


def test_a_bfloat16_models_accuracy_is_the_float32_fraction_over_its_predictions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=512)
    model = nn.Linear(3)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16),
                                    model.init(jax.random.key(0), x))
    xb = jnp.asarray(x, jnp.bfloat16)
    pred = np.asarray(train.predict(model, params, xb).astype(jnp.float32))
    expected = np.mean(np.argmax(pred, axis=-1) == y)  # float64 over the same predictions
    result = train.evaluate(model, params, _mean_square, xb, jnp.asarray(y),
                            metrics={"acc": _accuracy})
    assert abs(result["acc"] - expected) < 1e-6  # bfloat16 rounds 419/512 to 0.8203
    _, _, history = train.fit(model, params, _mean_square, optim.sgd(0.0), xb,
                              jnp.asarray(y), epochs=1, progress=False,
                              metrics={"acc": _accuracy}, validation=(xb, jnp.asarray(y)))
    assert abs(history["val_acc"][0] - expected) < 1e-6
    assert abs(history["acc"][0] - expected) < 1e-6


def test_a_bfloat16_losss_history_and_evaluate_add_its_batches_in_float32():
    """64 batches of a bfloat16 loss: `evaluate`, the validation loss and the history are the
    row-weighted mean of the batches' values, added in float32. A sum kept in bfloat16 (8
    significant bits; the old evaluate and validation) is 0.8% low here. (The compiled
    program may keep a batch's loss unrounded where the eager reference rounds it to
    bfloat16: they differ by 4e-4, hence rtol 1e-3.)"""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(512, 8)), jnp.bfloat16)
    model = nn.Linear(3)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16),
                                    model.init(jax.random.key(0), x))
    y = jnp.zeros(512, jnp.int32)
    pred = train.predict(model, params, x)
    per_batch = [float(_mean_square(pred[i:i + 8], None)) for i in range(0, 512, 8)]
    expected = float(np.mean(np.asarray(per_batch, np.float64)))  # equal batches of 8 rows
    result = train.evaluate(model, params, _mean_square, x, y, batch_size=8)
    np.testing.assert_allclose(result["loss"], expected, rtol=1e-3)
    _, _, history = train.fit(model, params, _mean_square, optim.sgd(0.0), x, y, epochs=1,
                              batch_size=8, shuffle=False, progress=False, validation=(x, y))
    np.testing.assert_allclose(history["loss"][0], expected, rtol=1e-3)
    np.testing.assert_allclose(history["val_loss"][0], expected, rtol=1e-3)


def _dropout_problem():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]], np.float32)).astype(np.float32)
    model = nn.Sequential(nn.Linear(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(1))
    return model, model.init(jax.random.key(2), x), x, y


def test_fit_3_then_initial_epoch_3_to_5_is_bitwise_fit_5():
    model, params, x, y = _dropout_problem()
    opt = optim.adam(1e-2)
    kw = dict(batch_size=16, progress=False, key=jax.random.PRNGKey(7))
    p5, s5, h5 = train.fit(model, params, losses.mse_loss, opt, x, y, epochs=5, **kw)
    p3, s3, h3 = train.fit(model, params, losses.mse_loss, opt, x, y, epochs=3, **kw)
    pc, sc, hc = train.fit(model, p3, losses.mse_loss, opt, x, y, epochs=5, initial_epoch=3,
                           opt_state=s3, **kw)
    for a, b in zip(jax.tree_util.tree_leaves((p5, s5)), jax.tree_util.tree_leaves((pc, sc))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert hc["loss"] == h5["loss"][3:] and h3["loss"] == h5["loss"][:3]
    # without initial_epoch the continuation replays epoch 0's order and keys: not the same
    pr, _, _ = train.fit(model, p3, losses.mse_loss, opt, x, y, epochs=2, opt_state=s3, **kw)
    assert not np.array_equal(np.asarray(pr[0]["w"]), np.asarray(p5[0]["w"]))


def test_initial_epoch_past_epochs_is_a_value_error():
    model, params, x, y = _dropout_problem()
    with pytest.raises(ValueError, match="initial_epoch"):
        train.fit(model, params, losses.mse_loss, optim.sgd(0.1), x, y, epochs=2,
                  initial_epoch=3, progress=False)


def _linear():
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(16, 1)
    model = nn.Linear(1)
    return model, model.init(jax.random.key(0), x), x, 2 * x


def test_an_infinite_learning_rate_stops_at_step_0_with_the_initial_params():
    model, params, x, y = _linear()
    opt = optim.sgd(lambda step: 0.1 / jnp.sqrt(step.astype(jnp.float32)))  # inf at step 0
    with pytest.raises(FloatingPointError) as info:
        train.fit(model, params, losses.mse_loss, opt, x, y, epochs=3, batch_size=4,
                  progress=False)
    assert (info.value.epoch, info.value.step) == (0, 0)
    for a, b in zip(jax.tree_util.tree_leaves(info.value.params),
                    jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_adams_second_moment_overflowing_on_a_finite_gradient_stops_at_that_step():
    model, params, x, y = _linear()
    x, y = x.copy(), y.copy()
    x[9] = 1e22  # an outlier row of the third batch: a finite loss and gradient (~2.5e21),
    y[9] = 0.0  # whose square overflows Adam's second moment to inf in float32
    opt = optim.adam(1e-2)
    with pytest.raises(FloatingPointError) as info:
        train.fit(model, params, losses.l1_loss, opt, x, y, epochs=2, batch_size=4,
                  shuffle=False, progress=False)
    assert (info.value.epoch, info.value.step) == (0, 2)
    leaves = jax.tree_util.tree_leaves((info.value.params, info.value.opt_state))
    assert all(np.all(np.isfinite(np.asarray(a))) for a in leaves)
    # the state before the bad step is two clean steps from the start
    step = train.make_train_step(model, losses.l1_loss, opt)
    p, s = jax.tree_util.tree_map(jnp.copy, params), opt.init(params)
    for b in range(2):
        p, s, _ = step(p, s, x[4 * b:4 * b + 4], y[4 * b:4 * b + 4])
    for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(info.value.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_checkpoint_folder_that_does_not_exist_is_refused_before_training(tmp_path,
                                                                          monkeypatch):
    import importlib
    fit_module = importlib.import_module("funcdl.train.loop")
    model, params, x, y = _linear()

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the checkpoint's folder")
    monkeypatch.setattr(fit_module, "run_epochs", no_training)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train.fit(model, params, losses.mse_loss, optim.sgd(0.1), x, y, epochs=1,
                  progress=False, checkpoint=tmp_path / "nosuch" / "run.safetensors")


@pytest.mark.parametrize("refused", ["open", "stat"])
def test_a_checkpoint_that_cannot_be_read_is_never_no_checkpoint(tmp_path, monkeypatch, refused):
    """A PermissionError from the file reaches the caller: resuming must not start fresh and
    overwrite a checkpoint it could not read. As root a mode-000 file is readable, so the OS's
    refusal is played by `os.open` (a file without read permission) or `os.stat` (a folder
    without search permission, where `os.path.exists` says False: the old "no checkpoint")."""
    model, params, x, y = _linear()
    path = tmp_path / "run.safetensors"
    train.fit(model, params, losses.mse_loss, optim.sgd(0.1), x, y, epochs=1, progress=False,
              checkpoint=path)
    before = path.read_bytes()
    real = getattr(os, refused)

    def refusing(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and os.fspath(file) == str(path):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real(file, *args, **kwargs)
    monkeypatch.setattr(os, refused, refusing)
    with pytest.raises(PermissionError, match=re.escape(repr(str(path)))):
        train.fit(model, params, losses.mse_loss, optim.sgd(0.1), x, y, epochs=2,
                  progress=False, checkpoint=path, resume=True)
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_a_checkpoint_folder_that_cannot_be_written_is_refused_before_training(tmp_path,
                                                                             monkeypatch):
    """As root every folder is writable, so the OS's answer is played by `os.access`."""
    import importlib
    fit_module = importlib.import_module("funcdl.train.loop")
    model, params, x, y = _linear()
    real_access = os.access

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the checkpoint's folder")

    def read_only(path, mode, *args, **kwargs):
        if os.fspath(path) == str(tmp_path) and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)
    monkeypatch.setattr(fit_module, "run_epochs", no_training)
    monkeypatch.setattr(os, "access", read_only)
    with pytest.raises(PermissionError, match=r"its folder .* cannot be written"):
        train.fit(model, params, losses.mse_loss, optim.sgd(0.1), x, y, epochs=1,
                  progress=False, checkpoint=tmp_path / "run.safetensors")


def test_resuming_from_a_fifo_is_a_value_error_and_never_blocks(tmp_path):
    """`fit(resume=True)` reads its checkpoint as `load` and `metadata` do: a FIFO is refused
    before anything trains. The call runs in a thread: a regression that waits for the FIFO's
    writer fails here, and the stuck thread is released by opening the writing end."""
    import threading
    model, params, x, y = _linear()
    fifo = tmp_path / "run.safetensors"
    os.mkfifo(fifo)
    outcome = []

    def resume():
        try:
            train.fit(model, params, losses.mse_loss, optim.sgd(0.1), x, y, epochs=1,
                      progress=False, checkpoint=fifo, resume=True)
            outcome.append("returned")
        except Exception as error:  # noqa: BLE001 (the test reports whatever it is)
            outcome.append(error)

    thread = threading.Thread(target=resume, daemon=True)
    thread.start()
    thread.join(timeout=60)  # a hang guard, generous on a busy machine (fit traces first)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the blocked open returns
        thread.join(timeout=5)
        pytest.fail(f"fit(resume=True) blocked on the FIFO {str(fifo)!r}")
    [error] = outcome
    assert isinstance(error, ValueError), error
    assert str(error) == f"`path` {str(fifo)!r} must be a regular file, got a FIFO"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still the FIFO: nothing was written over it


def test_numpy_data_reach_the_device_with_device_put_not_jnp_asarray(monkeypatch):
    """Issue 17's item 13: `jnp.asarray` of a 188 MB NumPy `x` took twice `jax.device_put`'s
    time. Whatever else fit converts, the user's NumPy `x` and `y` go through `device_put`."""
    model, params, x, y = _linear()
    put, converted = [], []
    real_put, real_asarray = jax.device_put, jnp.asarray

    def device_put(tree, *args, **kwargs):
        put.extend(jax.tree_util.tree_leaves(tree))
        return real_put(tree, *args, **kwargs)

    def asarray(a, *args, **kwargs):
        converted.append(a)
        return real_asarray(a, *args, **kwargs)
    monkeypatch.setattr(jax, "device_put", device_put)
    monkeypatch.setattr(jnp, "asarray", asarray)
    train.fit(model, params, losses.mse_loss, optim.sgd(0.1), x, y, epochs=1, batch_size=4,
              progress=False)
    monkeypatch.undo()
    assert any(leaf is x for leaf in put) and any(leaf is y for leaf in put)
    assert not any(a is x or a is y for a in converted)
