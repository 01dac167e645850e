"""Tests for the layer options PyTorch users pass (Conv `padding_mode`, Embedding
`padding_idx`/`max_norm`, `inplace=`), against PyTorch float64 goldens
(tests/golden/generate_layer_options.py), in both autodiffs, plus gradcheck."""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fdl
from funcdl import nn

GOLDEN = json.loads((pathlib.Path(__file__).parent / "golden" / "layer_options.json").read_text())
BACKENDS = {"jax": jax.grad, "funcdl": fdl.autodiff.grad}


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


def as_arg(value):
    return tuple(value) if isinstance(value, list) else value


@pytest.mark.slow  # ~23 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("index", range(len(GOLDEN["convs"])))
def test_conv_padding_modes_equal_pytorch(x64, index, backend):
    case = GOLDEN["convs"][index]
    layer = getattr(nn, case["kind"])(case["out"], as_arg(case["kernel"]),
                                      stride=as_arg(case["stride"]),
                                      padding=as_arg(case["padding"]),
                                      dilation=case["dilation"],
                                      padding_mode=case["padding_mode"])
    x, gy = jnp.asarray(case["x"]), jnp.asarray(case["gy"])
    params = {"w": jnp.asarray(case["w"]), "b": jnp.asarray(case["b"])}
    close(layer.apply(params, x), case["y"])
    grad_p, grad_x = BACKENDS[backend](
        lambda p, x: fdl.ops.sum(layer.apply(p, x) * gy), argnums=(0, 1))(params, x)
    close(grad_x, case["grad_x"])
    close(grad_p["w"], case["grad_w"])
    close(grad_p["b"], case["grad_b"])


def test_gradcheck_of_a_reflect_padded_conv():
    layer = nn.Conv2d(2, 3, padding=1, padding_mode="reflect")
    x = np.random.default_rng(0).normal(size=(1, 2, 4, 4))
    params = jax.tree_util.tree_map(np.asarray, layer.init(jax.random.key(0),
                                                           jnp.asarray(x, jnp.float32)))
    report = fdl.gradcheck.check_grads(
        lambda p, x: fdl.ops.sum(fdl.ops.square(layer.apply(p, x))), (params, x),
        argnums=(0, 1))
    assert report.passed, report


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("index", range(len(GOLDEN["embeddings"])))
def test_embedding_padding_idx_and_max_norm_equal_pytorch(x64, index, backend):
    case = GOLDEN["embeddings"][index]
    layer = nn.Embedding(case["num_embeddings"], case["dim"], padding_idx=case["padding_idx"],
                         max_norm=case["max_norm"])
    indices, gy = jnp.asarray(case["indices"]), jnp.asarray(case["gy"])
    params = {"w": jnp.asarray(case["w"])}
    close(layer.apply(params, indices), case["y"])
    grad = BACKENDS[backend](lambda p: fdl.ops.sum(layer.apply(p, indices) * gy))(params)
    close(grad["w"], case["grad_w"])
    if case["padding_idx"] is not None:  # zero at init, as PyTorch's reset_parameters
        row = layer.init(jax.random.key(0), indices)["w"][case["padding_idx"]]
        np.testing.assert_array_equal(row, np.zeros(case["dim"]))


def test_inplace_is_accepted_and_ignored():
    x = jnp.array([-1.0, 0.5])
    for make in (nn.ReLU, nn.SiLU, lambda **k: nn.LeakyReLU(0.1, **k),
                 lambda **k: nn.Dropout(0.5, **k)):
        np.testing.assert_array_equal(make(inplace=True).apply({}, x), make().apply({}, x))
    with pytest.raises(TypeError, match=r"ReLU: `inplace` must be a bool"):
        nn.ReLU(inplace=1)


@pytest.mark.parametrize("make, error, match", [
    (lambda: nn.Conv2d(2, 3, padding_mode="mirror"), ValueError,
     r"Conv2d: `padding_mode` must be one of 'zeros', 'reflect', 'replicate', 'circular'"),
    (lambda: nn.Conv2d(2, 3, stride=2, padding="same", padding_mode="reflect"), ValueError,
     r"padding='same' needs stride 1"),
    (lambda: nn.Embedding(4, 2, padding_idx=4), ValueError,
     r"`padding_idx` must be within num_embeddings \[-4, 4\), got 4"),
    (lambda: nn.Embedding(4, 2, max_norm=0), ValueError, r"`max_norm` must be a number > 0"),
])
def test_bad_options_name_them(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_reflect_padding_larger_than_the_input_is_refused():
    layer = nn.Conv1d(1, 3, padding=3, padding_mode="reflect")
    x = jnp.ones((1, 1, 3))
    params = {"w": jnp.ones((1, 1, 3)), "b": jnp.zeros(1)}
    with pytest.raises(ValueError, match=r"padding_mode='reflect' needs each padding < the "
                                         r"input's size"):
        layer.apply(params, x)
