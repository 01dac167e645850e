"""Tests for `fdl.nn.BatchNorm1d/2d` and stateful `Sequential`s, against PyTorch float64 golden
values (tests/golden/generate_batchnorm.py): several training steps (outputs, input and weight
gradients in both autodiffs, the running statistics after each step), then eval outputs."""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fdl
from funcdl import nn

GOLDEN = json.loads((pathlib.Path(__file__).parent / "golden" / "batchnorm.json").read_text())


def layer_of(case):
    kind = getattr(nn, case["kind"])
    return kind(momentum=case["momentum"], affine=case["affine"],
                track_running_stats=case["track_running_stats"])


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("backend", ["jax", "funcdl"])
@pytest.mark.parametrize("index", range(len(GOLDEN["cases"])))
def test_batchnorm_equals_pytorch_over_training_steps_then_eval(x64, index, backend):
    case = GOLDEN["cases"][index]
    layer = layer_of(case)
    steps = case["steps"]
    made = layer.init(jax.random.key(0), jnp.asarray(steps[0]["x"]))
    tracked = case["track_running_stats"]
    assert nn.is_stateful(layer) == tracked
    params = {"w": jnp.asarray(case["w"]), "b": jnp.asarray(case["b"])} if case["affine"] else {}
    state = made.state if tracked else None
    grad = jax.grad if backend == "jax" else fdl.autodiff.grad
    for step in steps:
        x, gy, train = jnp.asarray(step["x"]), jnp.asarray(step["gy"]), step["mode"] == "train"

        def loss(p, x):
            if tracked:
                y, new_state = layer.apply(nn.Variables(p, state), x, train=train)
            else:
                y, new_state = layer.apply(p, x, train=train), None
            return fdl.ops.sum(y * gy), (y, new_state)

        (grad_p, grad_x), (y, new_state) = grad(loss, argnums=(0, 1), has_aux=True)(params, x)
        close(y, step["y"])
        close(grad_x, step["grad_x"])
        if case["affine"]:
            close(grad_p["w"], step["grad_w"])
            close(grad_p["b"], step["grad_b"])
        if tracked:
            close(new_state["mean"], step["mean"])
            close(new_state["var"], step["var"])
            assert int(new_state["count"]) == step["count"]
            if not train:  # eval leaves the statistics as they are
                jax.tree_util.tree_map(np.testing.assert_array_equal, new_state, state)
            state = new_state


def test_gradcheck_of_batchnorm_in_training():
    layer = nn.BatchNorm2d()
    x = np.random.default_rng(0).normal(size=(3, 2, 2, 3))
    variables = layer.init(jax.random.key(0), jnp.asarray(x, jnp.float32))
    weights = np.random.default_rng(1).normal(size=(3, 2, 2, 3))

    def f(params, x):
        state = jax.tree_util.tree_map(lambda s: s.astype(jnp.float64) if s.dtype != jnp.int32
                                       else s, variables.state)
        y, _ = layer.apply(nn.Variables(params, state), x, train=True)
        return fdl.ops.sum(fdl.ops.square(y) * weights)

    params = {"w": np.array([0.5, -1.5]), "b": np.array([0.25, 2.0])}
    report = fdl.gradcheck.check_grads(f, (params, x), argnums=(0, 1))
    assert report.passed, report


def test_a_sequential_threads_the_state_and_leaves_stateless_layers_empty():
    model = nn.Sequential(nn.Linear(4), nn.BatchNorm1d(momentum=0.5), nn.ReLU(), nn.Linear(1))
    x = jnp.asarray(np.random.default_rng(2).normal(size=(8, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    assert nn.is_stateful(model)
    assert [sorted(s) for s in variables.state] == [[], ["count", "mean", "var"], [], []]
    y, state = model.apply(variables, x, train=True)
    # the same computation by hand, layer by layer
    h = nn.Linear(4).apply(variables.params[0], x)
    h_norm, bn_state = nn.BatchNorm1d(momentum=0.5).apply(
        nn.Variables(variables.params[1], variables.state[1]), h, train=True)
    expected = nn.Linear(1).apply(variables.params[3], jax.nn.relu(h_norm))
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_allclose(state[1]["mean"], 0.5 * np.mean(np.asarray(h), axis=0), rtol=1e-6)
    assert int(state[1]["count"]) == 1
    y_eval, same = model.apply(variables._replace(state=state), x)
    assert int(same[1]["count"]) == 1


def test_stateful_models_refuse_params_alone_and_other_channel_counts():
    layer = nn.BatchNorm2d()
    x = jnp.ones((2, 3, 4, 4))
    variables = layer.init(jax.random.key(0), x)
    with pytest.raises(TypeError, match=r"BatchNorm2d\(\): a stateful model's apply takes the "
                                        r"`Variables\(params, state\)`"):
        layer.apply(variables.params, x)
    with pytest.raises(ValueError, match=r"`x` has 4 channels .* is for 3"):
        layer.apply(variables, jnp.ones((2, 4, 4, 4)))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(\): `x` must have shape \(N, C, H, W\)"):
        layer.apply(variables, jnp.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"expected more than 1 value per channel"):
        nn.BatchNorm1d().apply(nn.BatchNorm1d().init(jax.random.key(0), jnp.ones((1, 3))),
                               jnp.ones((1, 3)), train=True)
    model = nn.Sequential(nn.Linear(3), nn.BatchNorm1d())
    seq_variables = model.init(jax.random.key(0), jnp.ones((4, 2)))
    with pytest.raises(TypeError, match=r"Sequential\(Linear\(3\), BatchNorm1d\(\)\): a stateful"):
        model.apply(seq_variables.params, jnp.ones((4, 2)))
    # a Variables without its state: None (it would silently normalise with batch statistics)
    with pytest.raises(TypeError, match=r"BatchNorm2d\(\): `variables.state` must be the running "
                                        r"statistics .* got NoneType: pass the `Variables` from"):
        layer.apply(nn.Variables(variables.params, None), x, train=True)
    with pytest.raises(ValueError, match=r"`variables.state` must have keys \['count', 'mean', "
                                         r"'var'\] .* got \[\]"):
        layer.apply(nn.Variables(variables.params, {}), x)


@pytest.mark.parametrize("kwargs, match", [
    (dict(momentum=1.5), r"`momentum` must be a number in \[0, 1\] or None"),
    (dict(eps=0.0), r"`eps` must be a number > 0"),
    (dict(affine=1), r"`affine` must be a bool"),
])
def test_bad_options_name_them(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        nn.BatchNorm1d(**kwargs)
