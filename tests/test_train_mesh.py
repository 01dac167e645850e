"""fit on a 4-device mesh (forced host devices, in a subprocess since the device count is fixed
at jax's start) equals single-device fit within float32 rounding; progress, validation, the
NaN guard and checkpoints work there, and later epochs do not compile again."""
import textwrap

import pytest

from train_reference import run_on_four_host_devices

SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    from jax.sharding import Mesh
    from funcdl import checkpoint, nn, losses, optim, train
    from train_reference import counting_compilations
    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.RandomState(0)
    x = rng.randn(200, 5).astype(np.float32); y = (x[:, :2] ** 2).astype(np.float32)
    model = nn.Sequential(nn.Linear(16), nn.ReLU(), nn.Linear(2))
    params = model.init(jax.random.key(0), x)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    kwargs = dict(batch_size=32, key=jax.random.key(2), validation=(x[:50], y[:50]))
    opt = optim.adam(1e-2)
    one = train.fit(model, params, losses.mse_loss, opt, x, y, epochs=3, progress=False, **kwargs)
    train.fit(model, params, losses.mse_loss, opt, x, y, epochs=1, mesh=mesh, **kwargs)
    with counting_compilations() as compiled:
        four = train.fit(model, params, losses.mse_loss, opt, x, y, epochs=3, mesh=mesh,
                         checkpoint=PATH, **kwargs)
    assert compiled == [], len(compiled)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, 1e-5, 1e-6),
                           one[:2], four[:2])
    np.testing.assert_allclose(one[2]["val_loss"], four[2]["val_loss"], 1e-5)
    assert four[0][0]["w"].sharding.is_fully_replicated
    assert checkpoint.metadata(PATH)["epochs_done"] == "3"
    bad = x.copy(); bad[70, 0] = np.inf
    try:
        train.fit(model, params, losses.mse_loss, opt, bad, y, epochs=2, batch_size=32,
                  shuffle=False, mesh=mesh, progress=False)
        raise SystemExit("no FloatingPointError")
    except FloatingPointError as error:
        assert (error.epoch, error.step) == (0, 2), (error.epoch, error.step)
    from funcdl import metrics
    exact = {"r2": metrics.r2_score(), "mae": metrics.mean_absolute_error()}
    runs = [train.fit(model, params, losses.mse_loss, opt, x, y, epochs=2, batch_size=32,
                      validation=(x[:50], y[:50]), validation_batch_size=16, metrics=exact,
                      progress=False, mesh=m)[2] for m in (None, mesh)]
    for name in ("r2", "mae", "val_r2", "val_mae"):
        np.testing.assert_allclose(runs[0][name], runs[1][name], 1e-5, 1e-6)
    print("MESH OK")
''')


@pytest.mark.slow  # a fresh jax process that compiles everything again: ~25 s of CPU
def test_fit_on_four_forced_host_devices(tmp_path):
    result = run_on_four_host_devices(SCRIPT, tmp_path / "mesh.safetensors")
    # stderr is a pipe, not a terminal: one line per epoch, the last of the 3-epoch mesh fit
    assert "Epoch 3/3 - " in result.stderr, result.stderr[-2000:]
