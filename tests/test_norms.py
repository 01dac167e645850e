"""Tests for `fdl.nn.GroupNorm` and `fdl.nn.RMSNorm` against PyTorch float64 goldens with the
weights copied across (tests/golden/generate_norms.py): outputs and the gradients of the input
and the weights, in both autodiffs; a NumPy reference over random shapes; float16's default
epsilon; init; errors."""
import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import funcdl as fdl
from funcdl import nn

GOLDEN = json.loads((pathlib.Path(__file__).parent / "golden" / "norms.json").read_text())
BACKENDS = {"jax": jax.grad, "funcdl": fdl.autodiff.grad}
NAMES = {"weight": "w", "bias": "b"}


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


def layer_of(case):
    options = dict(case["options"])
    if case["kind"] == "GroupNorm":
        options.pop("num_channels")  # read from the input at init
        return nn.GroupNorm(options.pop("num_groups"), **options)
    shape = options.pop("normalized_shape")
    return nn.RMSNorm(tuple(shape) if isinstance(shape, list) else shape, **options)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("index", range(len(GOLDEN["cases"])))
def test_norms_equal_pytorch(x64, index, backend):
    case = GOLDEN["cases"][index]
    layer = layer_of(case)
    x, g_out = jnp.asarray(case["x"]), jnp.asarray(case["g_out"])
    params = {NAMES[k]: jnp.asarray(v) for k, v in case["weights"].items()}
    assert sorted(params) == sorted(layer.init(jax.random.key(0), x))

    def loss(params, x):
        out = layer.apply(params, x)
        return fdl.ops.sum(out * g_out), out

    (grad_params, grad_x), out = BACKENDS[backend](loss, argnums=(0, 1), has_aux=True)(params, x)
    close(out, case["out"])
    close(grad_x, case["grad_x"])
    for name, value in case["grad_weights"].items():
        close(grad_params[NAMES[name]], value)


def test_rms_norm_float16_default_eps_is_float32s_as_pytorch():
    case = GOLDEN["rms_float16"]
    x = jnp.asarray(case["x"], jnp.float16)
    layer = nn.RMSNorm(4)
    out = layer.apply(layer.init(jax.random.key(0), x), x)
    assert out.dtype == jnp.float16
    np.testing.assert_allclose(np.asarray(out, np.float64), case["out"], rtol=1e-3)
    # float16's own epsilon (9.8e-4) would swamp mean(x²) ~ 1e-6 and shrink the output
    assert np.abs(np.asarray(out, np.float64)).mean() > 0.5


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 3), groups=st.integers(1, 3), per_group=st.integers(1, 3),
       spatial=st.lists(st.integers(1, 3), max_size=2), seed=st.integers(0, 2**16))
@pytest.mark.slow  # ~13 s: the slow tier (`make test-slow`, run by CI)
def test_group_norm_is_the_numpy_formula(x64, n, groups, per_group, spatial, seed):
    rng = np.random.default_rng(seed)
    C = groups * per_group
    x = rng.normal(size=(n, C, *spatial)) + 3.0
    w, b = rng.normal(size=C), rng.normal(size=C)
    got = nn.GroupNorm(groups).apply({"w": jnp.asarray(w), "b": jnp.asarray(b)}, jnp.asarray(x))
    grouped = x.reshape(n, groups, -1)
    normed = (grouped - grouped.mean(-1, keepdims=True)) / np.sqrt(grouped.var(-1, keepdims=True) + 1e-5)
    per_channel = (1, C) + (1,) * len(spatial)
    close(got, normed.reshape(x.shape) * w.reshape(per_channel) + b.reshape(per_channel))


def test_init_and_gradcheck():
    x = jnp.zeros((2, 6, 3))
    params = nn.GroupNorm(3).init(jax.random.key(0), x)
    np.testing.assert_array_equal(params["w"], np.ones(6))
    np.testing.assert_array_equal(params["b"], np.zeros(6))
    assert nn.GroupNorm(3, affine=False).init(jax.random.key(0), x) == {}
    rms = nn.RMSNorm((6, 3)).init(jax.random.key(0), x)
    assert list(rms) == ["w"] and rms["w"].shape == (6, 3)
    assert nn.RMSNorm(3, elementwise_affine=False).init(jax.random.key(0), x) == {}
    rng = np.random.default_rng(0)
    xs, readout = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 3))
    for layer, p in ((nn.GroupNorm(2), {"w": rng.normal(size=4), "b": rng.normal(size=4)}),
                     (nn.RMSNorm(3), {"w": rng.normal(size=3)})):
        report = fdl.gradcheck.check_grads(
            lambda p, x: fdl.ops.sum(layer.apply(p, x) * readout), (p, xs), argnums=(0, 1))
        assert report.passed, report


ERRORS = [
    (lambda: nn.GroupNorm(0), ValueError, "GroupNorm: `num_groups` must be an int >= 1, got 0"),
    (lambda: nn.GroupNorm(2).init(jax.random.key(0), jnp.zeros((2, 5, 3))), ValueError,
     "the 5 channels of the sample input `x` (axis 1) must be divisible by `num_groups` (2)"),
    (lambda: nn.GroupNorm(2).apply({"w": jnp.ones(4), "b": jnp.ones(4)}, jnp.zeros((2, 6))),
     ValueError, "`params['w']` must have shape (6,) for the 6 channels of `x`, got (4,)"),
    (lambda: nn.GroupNorm(2).apply({}, jnp.zeros((2, 4))), ValueError, "`params` must have keys ['b', 'w']"),
    (lambda: nn.GroupNorm(1).apply({"w": jnp.ones(1), "b": jnp.ones(1)}, jnp.zeros(3)), ValueError,
     "`x` must have shape (N, C, *), got (3,)"),
    (lambda: nn.RMSNorm(4).apply({"w": jnp.ones(4)}, jnp.zeros((2, 3))), ValueError,
     "RMSNorm(4): `x` must have shape (..., 4), got (2, 3)"),
    (lambda: nn.RMSNorm(4, eps=-1.0), ValueError, "RMSNorm: `eps` must be a number >= 0, got -1.0"),
    (lambda: nn.RMSNorm("4"), TypeError, "`normalized_shape` must be an int or a tuple of ints"),
    (lambda: nn.RMSNorm(2).apply({"w": jnp.ones(2)}, jnp.zeros((2, 2), jnp.int32)), TypeError,
     "`x` must have a floating-point dtype, got int32"),
]


@pytest.mark.parametrize("call, error, message", ERRORS)
def test_bad_input_names_the_argument(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()
