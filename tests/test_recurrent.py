"""Tests for `fdl.nn.RNN/LSTM/GRU` against PyTorch float64 goldens with the weights copied
across (tests/golden/generate_recurrent.py): outputs, final states and the gradients of the
input, the initial state and every weight, in both autodiffs; PyTorch's init bounds; errors."""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fdl
from funcdl import nn

GOLDEN = json.loads((pathlib.Path(__file__).parent / "golden" / "recurrent.json").read_text())
BACKENDS = {"jax": jax.grad, "funcdl": fdl.autodiff.grad}
SHORT = {"weight_ih": "w_ih", "weight_hh": "w_hh", "bias_ih": "b_ih", "bias_hh": "b_hh"}


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


def params_of(case):
    """PyTorch's flat weights as funcdl's list of dicts, in the same order."""
    params, current = [], None
    for name, value in zip(case["weight_names"], case["weights"]):
        kind, suffix = name.split("_l", 1)
        if current is None or current[0] != suffix:
            current = (suffix, {})
            params.append(current[1])
        current[1][SHORT[kind]] = jnp.asarray(value)
    return params


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("index", range(len(GOLDEN["cases"])))
def test_recurrent_layers_equal_pytorch(x64, index, backend):
    case = GOLDEN["cases"][index]
    layer = getattr(nn, case["kind"])(case["hidden"], **case["options"])
    params = params_of(case)
    x = jnp.asarray(case["x"])
    lstm = case["kind"] == "LSTM"
    state = None if case["h0"] is None else (
        (jnp.asarray(case["h0"]), jnp.asarray(case["c0"])) if lstm else jnp.asarray(case["h0"]))
    g_out, g_h = jnp.asarray(case["g_out"]), jnp.asarray(case["g_h"])

    def loss(params, x, state):
        out, final = layer.apply(params, x if state is None else (x, state))
        h_n, c_n = final if lstm else (final, None)
        total = fdl.ops.sum(out * g_out) + fdl.ops.sum(h_n * g_h)
        if lstm:
            total = total + fdl.ops.sum(c_n * jnp.asarray(case["g_c"]))
        return total, (out, final)

    argnums = (0, 1) if state is None else (0, 1, 2)
    grads, (out, final) = BACKENDS[backend](loss, argnums=argnums, has_aux=True)(
        params, x, state)
    close(out, case["out"])
    close(final[0] if lstm else final, case["h_n"])
    if lstm:
        close(final[1], case["c_n"])
    close(grads[1], case["grad_x"])
    if state is not None:
        close(grads[2][0] if lstm else grads[2], case["grad_h0"])
        if lstm:
            close(grads[2][1], case["grad_c0"])
    expected = iter(case["grad_weights"])
    for layer_grads in grads[0]:
        for key in ("w_ih", "w_hh", "b_ih", "b_hh"):
            if key in layer_grads:
                close(layer_grads[key], next(expected))


def test_init_is_pytorchs_uniform_and_layout():
    layer = nn.LSTM(16, num_layers=2, bidirectional=True)
    params = layer.init(jax.random.key(0), jnp.zeros((7, 5, 3)))
    assert [tuple(p["w_ih"].shape) for p in params] == [(64, 3), (64, 3), (64, 32), (64, 32)]
    leaves = np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(params)])
    bound = 1 / np.sqrt(16)
    assert np.all(np.abs(leaves) <= bound)
    # uniform in ±1/sqrt(H): mean 0 and variance bound²/3 (5 sigma over ~13k draws)
    assert abs(leaves.mean()) < 5 * bound / np.sqrt(3 * leaves.size)
    assert abs(leaves.var() - bound ** 2 / 3) < 5 * bound ** 2 * np.sqrt(0.8 / leaves.size) / 3


@pytest.mark.slow  # ~5 s: the slow tier (`make test-slow`, run by CI)
def test_gradcheck_of_a_gru():
    layer = nn.GRU(3)
    x = np.random.default_rng(0).normal(size=(4, 2, 2))
    params = jax.tree_util.tree_map(np.asarray, layer.init(jax.random.key(0),
                                                           jnp.asarray(x, jnp.float32)))
    report = fdl.gradcheck.check_grads(
        lambda p, x: fdl.ops.sum(fdl.ops.square(layer.apply(p, x)[0])), (params, x),
        argnums=(0, 1))
    assert report.passed, report


def test_bad_input_names_the_argument():
    layer = nn.GRU(4)
    params = layer.init(jax.random.key(0), jnp.zeros((5, 2, 3)))
    with pytest.raises(ValueError, match=r"the input has 6 features .* params were made for 3"):
        layer.apply(params, jnp.zeros((5, 2, 6)))
    with pytest.raises(ValueError, match=r"`h_0` must have shape \(1, 2, 4\), got \(2, 2, 4\)"):
        layer.apply(params, (jnp.zeros((5, 2, 3)), jnp.zeros((2, 2, 4))))
    with pytest.raises(ValueError, match=r"must have shape \(L, N, H_in\)"):
        layer.apply(params, jnp.zeros((5, 2, 3, 1)))
    with pytest.raises(TypeError, match=r"an LSTM's initial state is \(h_0, c_0\)"):
        lstm = nn.LSTM(4)
        lstm.apply(lstm.init(jax.random.key(0), jnp.zeros((5, 2, 3))),
                   (jnp.zeros((5, 2, 3)), jnp.zeros((1, 2, 4))))


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_an_input_in_the_other_layout_suggests_batch_first(kind, batch_first):
    """(N, L, C) given to a batch_first=False layer (or (L, N, C) to a batch_first=True one)
    passes the feature check; the initial state's shape catches it, and the message says
    which batch_first would read it. A channels-first (N, C, L) input fails the feature check,
    which names the axis holding the features."""
    layer = getattr(nn, kind)(4, batch_first=batch_first)
    N, L, C = 2, 7, 3
    ours = (N, L, C) if batch_first else (L, N, C)
    params = layer.init(jax.random.key(0), jnp.zeros(ours))
    other = jnp.zeros((ours[1], ours[0], C))  # the other layout
    h_0 = jnp.zeros((1, N, 4))
    initial = (h_0, h_0) if kind == "LSTM" else h_0
    with pytest.raises(ValueError, match=(
            rf"{kind}\(4.*\): `h_0` must have shape \(1, {L}, 4\), got \(1, {N}, 4\); these "
            rf"shapes fit if the input is \({'L, N' if batch_first else 'N, L'}, \.\.\.\) rather "
            rf"than the layer's .* build the layer with batch_first={not batch_first}")):
        layer.apply(params, (other, initial))
    layer.apply(params, (jnp.zeros(ours), initial))  # the layer's own layout is fine
    with pytest.raises(ValueError, match=rf"the input has {L} features \(its last axis\), but "
                                         rf"the params were made for {C}; axis 1 of the input "
                                         rf"has {C}: the features go on the last axis"):
        layer.apply(params, jnp.zeros((N, C, L)))
    with pytest.raises(ValueError, match=r"the input has 5 features \(its last axis\), but the "
                                         r"params were made for 3$"):
        layer.apply(params, jnp.zeros((N, L, 5)))  # no axis of size 3: no hint


def test_bad_options_name_their_argument():
    with pytest.raises(ValueError, match=r"`nonlinearity` must be 'tanh' or 'relu'"):
        nn.RNN(4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"`hidden_size` must be an int >= 1"):
        nn.LSTM(0)
