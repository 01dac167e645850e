"""fit, evaluate, predict, make_train_step and checkpoints with a stateful model (BatchNorm):
against a hand-written loop that differentiates the params with `jax.grad` and threads the
state by hand (shuffle order and dropout keys as fit documents them), against PyTorch float64
SGD training (tests/golden/generate_train_stateful.py: weights, running statistics, eval
outputs), in both autodiffs; resume bitwise; the NaN guard on the state; the errors."""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fdl
from funcdl import checkpoint, losses, nn, optim, train

GOLDEN = json.loads((pathlib.Path(__file__).parent / "golden" /
                     "train_stateful.json").read_text())
RNG = np.random.RandomState(0)
X = RNG.randn(40, 3).astype(np.float32) * 2 + 0.5
Y = (X[:, :1] * X[:, 1:2] + np.sin(X[:, 2:])).astype(np.float32)
BATCH, LR = 16, 0.05  # two full batches and one of 8 rows
MODEL = nn.Sequential(nn.Linear(8), nn.BatchNorm1d(), nn.ReLU(), nn.Dropout(0.2), nn.Linear(1))
VARIABLES = MODEL.init(jax.random.key(1), X)
KEY = jax.random.key(3)


def hand_sgd_fit(variables, epochs, key, x=X, y=Y, backend="jax"):
    """The oracle: fit's documented schedule (per epoch e: `shuffle_key, step_key =
    split(fold_in(key, e))`, rows `permutation(shuffle_key, n)`, dropout key of step b
    `fold_in(step_key, b)`) with `jax.grad` over the params only, the state threaded by hand,
    and SGD written out (p - lr * g). Returns (variables, per-epoch losses)."""
    grad = jax.value_and_grad if backend == "jax" else fdl.autodiff.value_and_grad

    @jax.jit
    def step(params, state, xb, yb, dropout_key):
        def loss(p):
            pred, new_state = MODEL.apply(nn.Variables(p, state), xb, key=dropout_key,
                                          train=True)
            return losses.mse_loss(pred, yb), new_state

        (value, new_state), g = grad(loss, has_aux=True)(params)
        return jax.tree_util.tree_map(lambda p, d: p - LR * d, params, g), new_state, value

    params, state = variables
    history = []
    for epoch in range(epochs):
        shuffle_key, step_key = jax.random.split(jax.random.fold_in(key, epoch))
        order = np.asarray(jax.random.permutation(shuffle_key, len(x)))
        total = 0.0
        for b, start in enumerate(range(0, len(x), BATCH)):
            rows = order[start:start + BATCH]
            params, state, value = step(params, state, x[rows], y[rows],
                                        jax.random.fold_in(step_key, b))
            total += len(rows) * float(value)
        history.append(total / len(x))
    return nn.Variables(params, state), history


def close(actual, expected, rtol=2e-5, atol=2e-6):
    jax.tree_util.tree_map(
        lambda a, e: np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol, atol),
        actual, expected)


def bitwise(actual, expected):
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected)
    jax.tree_util.tree_map(
        lambda a, e: np.testing.assert_array_equal(np.asarray(a), np.asarray(e)),
        actual, expected)


@pytest.mark.parametrize("backend", ["jax", "funcdl"])
def test_fit_equals_a_hand_written_loop_that_threads_the_state(backend):
    expected, history = hand_sgd_fit(VARIABLES, 3, KEY, backend=backend)
    variables, opt_state, fitted = train.fit(
        MODEL, VARIABLES, losses.mse_loss, optim.sgd(LR), X, Y, epochs=3, batch_size=BATCH,
        key=KEY, grad_backend=backend, progress=False)
    assert isinstance(variables, nn.Variables)
    close(variables.params, expected.params)
    close(variables.state, expected.state)
    assert int(variables.state[1]["count"]) == 9  # 3 steps per epoch, one state update each
    np.testing.assert_allclose(fitted["loss"], history, rtol=2e-5)
    # the optimizer saw the params only
    sgd_state = optim.sgd(LR).init(VARIABLES.params)
    assert jax.tree_util.tree_structure(opt_state) == jax.tree_util.tree_structure(sgd_state)


@pytest.mark.slow  # ~6 s: the slow tier (`make test-slow`, run by CI)
def test_the_optimizer_state_is_that_of_the_params_alone():
    adam = optim.adam(1e-2)
    variables, opt_state, _ = train.fit(MODEL, VARIABLES, losses.mse_loss, adam, X, Y,
                                        epochs=1, batch_size=BATCH, progress=False)
    expected = adam.init(VARIABLES.params)
    assert jax.tree_util.tree_structure(opt_state) == jax.tree_util.tree_structure(expected)
    # a given opt_state is the params' one, and continuing with it is the uninterrupted run
    again = train.fit(MODEL, variables, losses.mse_loss, adam, X, Y, epochs=2, batch_size=BATCH,
                      opt_state=opt_state, initial_epoch=1, progress=False)
    whole = train.fit(MODEL, VARIABLES, losses.mse_loss, adam, X, Y, epochs=2, batch_size=BATCH,
                      progress=False)
    bitwise(again[:2], whole[:2])


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("backend", ["jax", "funcdl"])
def test_fit_equals_pytorch_sgd_training_with_batchnorm(x64, backend):
    g = GOLDEN
    model = nn.Sequential(nn.Linear(6), nn.BatchNorm1d(), nn.ReLU(), nn.Linear(1))
    x, y = np.asarray(g["x"]), np.asarray(g["y"])
    made = model.init(jax.random.key(0), x)
    w = {k: np.asarray(v) for k, v in g["initial"].items()}
    params = [{"w": w["0.weight"].T, "b": w["0.bias"]}, {"w": w["1.weight"], "b": w["1.bias"]},
              {}, {"w": w["3.weight"].T, "b": w["3.bias"]}]
    variables = nn.Variables(jax.tree_util.tree_map(jnp.asarray, params), made.state)
    out, _, history = train.fit(model, variables, losses.mse_loss, optim.sgd(g["lr"]), x, y,
                                epochs=g["epochs"], batch_size=g["batch"], shuffle=False,
                                grad_backend=backend, progress=False)
    f = {k: np.asarray(v) for k, v in g["final"].items()}
    tight = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.params[0]["w"], f["0.weight"].T, **tight)
    np.testing.assert_allclose(out.params[1]["w"], f["1.weight"], **tight)
    np.testing.assert_allclose(out.params[3]["b"], f["3.bias"], **tight)
    np.testing.assert_allclose(out.state[1]["mean"], g["running_mean"], **tight)
    np.testing.assert_allclose(out.state[1]["var"], g["running_var"], **tight)
    assert int(out.state[1]["count"]) == g["count"]
    np.testing.assert_allclose(history["loss"], g["losses"], **tight)
    x_eval = np.asarray(g["x_eval"])
    np.testing.assert_allclose(train.predict(model, out, x_eval), g["eval_output"], **tight)


@pytest.mark.slow  # ~10 s: the slow tier (`make test-slow`, run by CI)
def test_evaluate_predict_and_validation_use_the_running_statistics_and_keep_them():
    variables, _, history = train.fit(MODEL, VARIABLES, losses.mse_loss, optim.adam(1e-2), X, Y,
                                      epochs=2, batch_size=BATCH, validation=(X[:24], Y[:24]),
                                      progress=False)
    by_hand, same = MODEL.apply(variables, X, train=False)  # eval: running statistics
    bitwise(same, variables.state)
    batch_stats, _ = MODEL.apply(variables, X, train=True, key=KEY)
    assert not np.allclose(by_hand, batch_stats, atol=1e-3)  # the two modes differ here
    np.testing.assert_allclose(train.predict(MODEL, variables, X, batch_size=16), by_hand,
                               rtol=1e-5, atol=1e-6)
    loss = float(jnp.mean((by_hand - Y) ** 2))
    result = train.evaluate(MODEL, variables, losses.mse_loss, X, Y, batch_size=7)
    np.testing.assert_allclose(result["loss"], loss, rtol=1e-5)
    val = float(jnp.mean((MODEL.apply(variables, X[:24])[0] - Y[:24]) ** 2))
    np.testing.assert_allclose(history["val_loss"][-1], val, rtol=1e-5)
    # the batch statistics of a batch of 16 rows would give another validation loss
    assert int(variables.state[1]["count"]) == 6


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_resume_of_a_batchnorm_dropout_run_is_bitwise_the_uninterrupted_run(tmp_path):
    kwargs = dict(batch_size=BATCH, key=KEY, progress=False)
    adam = optim.adam(1e-2)
    path = tmp_path / "bn.safetensors"
    whole = train.fit(MODEL, VARIABLES, losses.mse_loss, adam, X, Y, epochs=4, **kwargs)
    train.fit(MODEL, VARIABLES, losses.mse_loss, adam, X, Y, epochs=2, checkpoint=path,
              **kwargs)
    stored = checkpoint.load(path)
    np.testing.assert_array_equal(stored["['params'].state[1]['count']"], 6)
    resumed = train.fit(MODEL, VARIABLES, losses.mse_loss, adam, X, Y, epochs=4,
                        checkpoint=path, resume=True, **kwargs)
    bitwise(resumed[:2], whole[:2])
    assert resumed[2] == whole[2]


def test_variables_round_trip_through_fdl_checkpoint(tmp_path):
    variables = MODEL.init(jax.random.key(5), X)
    variables = nn.Variables(variables.params, MODEL.apply(variables, X, train=True,
                                                           key=KEY)[1])
    checkpoint.save(tmp_path / "v.safetensors", variables)
    loaded = checkpoint.load(tmp_path / "v.safetensors", variables)
    assert isinstance(loaded, nn.Variables)
    bitwise(loaded, variables)
    assert loaded.state[1]["count"].dtype == np.int32


@pytest.mark.slow  # ~8 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("backend", ["jax", "funcdl"])
def test_make_train_step_takes_and_returns_variables(backend):
    step = train.make_train_step(MODEL, losses.mse_loss, optim.sgd(LR), grad_backend=backend)
    expected, _ = hand_sgd_fit(VARIABLES, 1, KEY, x=X[:16], y=Y[:16], backend=backend)
    shuffle_key, step_key = jax.random.split(jax.random.fold_in(KEY, 0))
    rows = np.asarray(jax.random.permutation(shuffle_key, 16))
    variables = jax.tree_util.tree_map(jnp.copy, VARIABLES)
    opt_state = optim.sgd(LR).init(variables.params)
    variables, opt_state, loss = step(variables, opt_state, X[:16][rows], Y[:16][rows],
                                      jax.random.fold_in(step_key, 0))
    assert isinstance(variables, nn.Variables)
    close(variables, expected)
    pred, _ = MODEL.apply(VARIABLES, X[:16][rows], train=True,
                          key=jax.random.fold_in(step_key, 0))
    np.testing.assert_allclose(loss, jnp.mean((pred - Y[:16][rows]) ** 2), rtol=1e-6)


def test_make_train_step_with_bfloat16_keeps_the_state_in_float32():
    step = train.make_train_step(MODEL, losses.mse_loss, optim.sgd(LR),
                                 compute_dtype=jnp.bfloat16)
    variables = jax.tree_util.tree_map(jnp.copy, VARIABLES)
    variables, _, loss = step(variables, optim.sgd(LR).init(variables.params), X, Y, KEY)
    assert variables.state[1]["mean"].dtype == jnp.float32
    assert variables.params[0]["w"].dtype == jnp.float32
    _, by_hand = MODEL.apply(VARIABLES, X, train=True, key=KEY)  # float32 statistics
    np.testing.assert_allclose(variables.state[1]["mean"], by_hand[1]["mean"], atol=0.05)


def exploding_state_model():
    """A stateful model whose state is multiplied by 1e20 at every training step: finite loss
    and gradients, but the state overflows float32 at the second step."""
    def init(key, x):
        return nn.Variables({"w": jnp.ones((x.shape[1], 1))}, {"s": jnp.ones(())})

    def apply(variables, x, *, key=None, train=False):
        params, state = variables
        y = x @ params["w"]
        return y, ({"s": state["s"] * 1e20} if train else state)

    return nn.named_model("exploding_state", init, apply, stateful=True)


def test_a_non_finite_new_state_is_a_nan_stop_that_keeps_the_old_state():
    model = exploding_state_model()
    variables = model.init(None, X)
    with pytest.raises(FloatingPointError) as caught:
        train.fit(model, variables, losses.mse_loss, optim.sgd(1e-3), X, Y, epochs=2,
                  batch_size=BATCH, shuffle=False, progress=False)
    error = caught.value
    assert (error.epoch, error.step) == (0, 1)
    np.testing.assert_allclose(error.params.state["s"], 1e20, rtol=1e-6)  # after step 0 only
    expected_w = variables.params["w"] - 1e-3 * jax.grad(
        lambda w: losses.mse_loss(X[:16] @ w, Y[:16]))(variables.params["w"])
    np.testing.assert_allclose(error.params.params["w"], expected_w, rtol=1e-6)


def test_stateful_errors_name_the_argument_and_say_what_to_pass():
    sgd = optim.sgd(LR)
    with pytest.raises(TypeError, match=r"fit: `params` must be the `Variables\(params, state\)"
                                        r".*got list.*not `variables.params`"):
        train.fit(MODEL, VARIABLES.params, losses.mse_loss, sgd, X, Y, epochs=1)
    with pytest.raises(TypeError, match=r"fit: `model` is the apply function of a stateful "
                                        r"model.*pass the Model itself"):
        train.fit(MODEL.apply, VARIABLES, losses.mse_loss, sgd, X, Y, epochs=1)
    with pytest.raises(TypeError, match=r"make_train_step: `apply` is the apply function"):
        train.make_train_step(MODEL.apply, losses.mse_loss, sgd)
    step = train.make_train_step(MODEL, losses.mse_loss, sgd)
    with pytest.raises(TypeError, match=r"make_train_step: `params` must be the `Variables"):
        step(VARIABLES.params, sgd.init(VARIABLES.params), X, Y)
    for call, where in ((lambda: train.evaluate(MODEL, VARIABLES.params, losses.mse_loss, X, Y),
                         "evaluate"),
                        (lambda: train.predict(MODEL, VARIABLES.params, X), "predict")):
        with pytest.raises(TypeError, match=rf"{where}: `params` must be the `Variables"):
            call()
    with pytest.raises(TypeError, match=r"predict: `model` is the apply function"):
        train.predict(MODEL.apply, VARIABLES, X)
    stateless = nn.Linear(1)
    with pytest.raises(TypeError, match=r"fit: `params` is a `Variables\(params, state\)`, "
                                        r"which only a stateful"):
        train.fit(stateless, nn.Variables(stateless.init(KEY, X), {}), losses.mse_loss, sgd,
                  X, Y, epochs=1)


MESH_SCRIPT = '''
import jax, numpy as np
from jax.sharding import Mesh
from funcdl import nn, losses, optim, train
assert len(jax.devices()) == 4, jax.devices()
rng = np.random.RandomState(0)
x = (rng.randn(96, 5) * 2 + 1).astype(np.float32); y = (x[:, :2] ** 2).astype(np.float32)
x[:24] += 3  # the first device's quarter of a batch has other statistics than the whole
model = nn.Sequential(nn.Linear(16), nn.BatchNorm1d(), nn.ReLU(), nn.Linear(2))
variables = model.init(jax.random.key(0), x)
mesh = Mesh(np.array(jax.devices()), ("data",))
kwargs = dict(batch_size=32, key=jax.random.key(2), validation=(x[:40], y[:40]), progress=False)
# SGD, not Adam: the gradient of the bias before a BatchNorm is 0 up to rounding, which Adam
# would scale up to whole steps of another sign on each side
sgd = optim.sgd(1e-2, momentum=0.9)
one = train.fit(model, variables, losses.mse_loss, sgd, x, y, epochs=3, **kwargs)
four = train.fit(model, variables, losses.mse_loss, sgd, x, y, epochs=3, mesh=mesh, **kwargs)
assert isinstance(four[0], nn.Variables)
jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, 1e-5, 1e-5), one[:2],
                       four[:2])
np.testing.assert_allclose(one[2]["val_loss"], four[2]["val_loss"], 1e-5)
assert int(four[0].state[1]["count"]) == 9
print("MESH OK")
'''


@pytest.mark.slow  # a fresh jax process on 4 forced host devices: ~15 s of CPU
def test_batchnorm_on_a_mesh_uses_the_whole_batchs_statistics():
    import os
    import subprocess
    import sys
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=os.getcwd())
    result = subprocess.run([sys.executable, "-c", MESH_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and "MESH OK" in result.stdout, result.stderr[-3000:]


@pytest.mark.slow  # ~15 s: the slow tier (`make test-slow`, run by CI)
def test_every_python_block_of_the_stateful_models_guide_runs_alone(capsys):
    import re
    guide = pathlib.Path(__file__).resolve().parent.parent / "docs" / "guides" / \
        "stateful-models.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(), re.S)
    assert len(blocks) >= 5
    for code in blocks:
        exec(compile(code, str(guide), "exec"), {"__name__": "__guide__"})
    printed = capsys.readouterr().out
    assert "Variables 160" in printed and printed.count("True") >= 4, printed
    assert "Variables 12" in printed, printed
