"""A stateful layer written by a user with the public API, `fdl.nn.named_model(..., stateful=
True)`: a running-mean layer inside `Sequential`, trained with `fit` (both autodiffs), then
`evaluate`, `predict` and a checkpoint round trip, each against a hand-written reference (the
layer's math written out with jax.numpy and a plain SGD loop); and the contract's errors.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fdl
from funcdl import nn

MOMENTUM, LR, BATCH, EPOCHS = 0.25, 0.05, 16, 3


def RunningMean(momentum):
    """Centres each feature: y = x - m + b, m the batch mean while training (and the running
    mean moves: mean <- (1 - momentum) mean + momentum m), the running mean in evaluation.
    params {"b": (C,)}, state {"mean": (C,)}."""
    def init(key, x):
        features = x.shape[-1]
        return nn.Variables({"b": jnp.zeros((features,), x.dtype)},
                            {"mean": jnp.zeros((features,), x.dtype)})

    def apply(variables, x, *, key=None, train=False):
        params, state = variables
        bias = fdl.ops.reshape(params["b"], (1, -1))
        if not train:
            return x - state["mean"][None, :] + bias, state
        batch_mean = fdl.ops.mean(x, axis=0)
        # the state is not differentiated: its new value from the batch mean's value only
        new_mean = (1 - momentum) * state["mean"] + momentum * fdl.ops.stop_gradient(batch_mean)
        return x - fdl.ops.reshape(batch_mean, (1, -1)) + bias, {"mean": new_mean}

    return nn.named_model(f"RunningMean({momentum})", init, apply, stateful=True)


MODEL = nn.Sequential(nn.Linear(4), RunningMean(MOMENTUM), nn.Tanh(), nn.Linear(1))
RNG = np.random.default_rng(0)
X = (RNG.normal(size=(64, 3)) * 2 + 1).astype(np.float32)
Y = np.sin(X[:, :1] * X[:, 1:2]).astype(np.float32)


def forward_by_hand(params, mean, x, train):
    """The model's math written out: (y, new running mean)."""
    h = x @ params[0]["w"] + params[0]["b"][None, :]
    centre = h.mean(axis=0) if train else mean
    h = jnp.tanh(h - centre[None, :] + params[1]["b"][None, :])
    new_mean = (1 - MOMENTUM) * mean + MOMENTUM * jax.lax.stop_gradient(centre) if train else mean
    return h @ params[3]["w"] + params[3]["b"][None, :], new_mean


def sgd_by_hand(variables):
    """EPOCHS epochs of SGD on unshuffled batches of BATCH rows, the state carried along."""
    params, mean = variables.params, variables.state[1]["mean"]
    for _ in range(EPOCHS):
        for start in range(0, len(X), BATCH):
            x, y = X[start:start + BATCH], Y[start:start + BATCH]

            def loss(p):
                pred, new_mean = forward_by_hand(p, mean, x, True)
                return jnp.mean((pred - y) ** 2), new_mean

            grads, mean = jax.grad(loss, has_aux=True)(params)
            params = jax.tree_util.tree_map(lambda p, g: p - LR * g, params, grads)
    return params, mean


def test_a_user_stateful_layer_makes_sequential_stateful():
    variables = MODEL.init(jax.random.key(0), X)
    assert nn.is_stateful(RunningMean(0.1)) and nn.is_stateful(MODEL)
    assert isinstance(variables, nn.Variables)
    assert variables.state == [{}, {"mean": variables.state[1]["mean"]}, {}, {}]
    y, state = MODEL.apply(variables, X, train=True)
    expected, mean = forward_by_hand(variables.params, variables.state[1]["mean"], X, True)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state[1]["mean"], mean, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["jax", "funcdl"])
def test_fit_evaluate_predict_and_a_checkpoint_carry_the_users_state(backend, tmp_path):
    variables = MODEL.init(jax.random.key(0), X)
    trained, _, history = fdl.train.fit(MODEL, variables, fdl.losses.mse_loss, fdl.optim.sgd(LR),
                                        X, Y, epochs=EPOCHS, batch_size=BATCH, shuffle=False,
                                        grad_backend=backend, progress=False)
    params, mean = sgd_by_hand(variables)
    assert isinstance(trained, nn.Variables) and len(history["loss"]) == EPOCHS
    for got, want in zip(jax.tree_util.tree_leaves(trained.params), jax.tree_util.tree_leaves(params)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(trained.state[1]["mean"], mean, rtol=1e-5, atol=1e-6)
    assert not np.allclose(mean, 0)  # the running mean moved

    # evaluation normalises with the running mean and leaves the state as it is
    by_hand, _ = forward_by_hand(trained.params, trained.state[1]["mean"], X, False)
    test = fdl.train.evaluate(MODEL, trained, fdl.losses.mse_loss, X, Y)
    assert test["loss"] == pytest.approx(float(jnp.mean((by_hand - Y) ** 2)), rel=1e-5)
    np.testing.assert_allclose(fdl.train.predict(MODEL, trained, X), by_hand, rtol=1e-5, atol=1e-6)

    path = tmp_path / "variables.safetensors"
    fdl.checkpoint.save(path, trained)
    loaded = fdl.checkpoint.load(path, trained)
    assert isinstance(loaded, nn.Variables)
    for got, want in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(trained)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(fdl.train.predict(MODEL, loaded, X),
                                  fdl.train.predict(MODEL, trained, X))


def test_the_stateful_contract_is_checked_and_names_the_layer():
    layer = RunningMean(0.5)
    variables = layer.init(jax.random.key(0), X)
    with pytest.raises(TypeError, match=r"RunningMean\(0.5\): a stateful model's apply takes "
                                        r"the `Variables\(params, state\)`.*got dict"):
        layer.apply(variables.params, X)
    with pytest.raises(TypeError, match=r"Sequential layer 1 \(RunningMean\(0.25\)\).*got list"
                       r"|Sequential\(.*\): a stateful model's apply takes the `Variables"):
        MODEL.apply(MODEL.init(jax.random.key(0), X).params, X)

    def init(key, x):
        return {"b": jnp.zeros(3)}

    def apply(variables, x, *, key=None, train=False):
        return x

    broken = nn.named_model("Broken()", init, apply, stateful=True)
    with pytest.raises(TypeError, match=r"Broken\(\).init: a stateful model's init must return "
                                        r"fdl.nn.Variables\(params, state\), got a dict"):
        broken.init(jax.random.key(0), X)
    with pytest.raises(TypeError, match=r"Broken\(\).apply: a stateful model's apply must return "
                                        r"the pair \(y, new_state\), got an array"):
        broken.apply(nn.Variables({}, {}), X)
