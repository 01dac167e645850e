"""fdl.nn.init: each initializer's distribution against its formula, fans from the (in, out)
layout, gains and fans against PyTorch (tests/golden/nn.json), dtypes and errors.

Statistical checks use one large sample per initializer (a fixed key, so they are
deterministic) and tolerances of 5 standard errors, which a correct initializer exceeds with
probability < 1e-6 per statistic while the mistakes they target (a swapped fan, a missing
gain, sqrt(3) lost between std and bound) are off by 20 or more standard errors:
- mean: SE = sigma / sqrt(n);
- sample std: SE ~ sigma * sqrt((kurtosis - 1) / (4 n)), kurtosis 1.8 (uniform), 3 (normal);
- uniform ends: every value inside [low, high], and the extremes within 30 / n of the width
  from the ends (no sample that close to an end has probability (1 - 30/n)^n ~ e^-30);
- normal shape: the fraction beyond 2 sigma within 5 SE of 4.55% (a uniform of the same std
  has none there).
"""
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import nn
from funcdl.nn import init

GOLDEN = json.loads((pathlib.Path(__file__).parent / "golden" / "nn.json").read_text())
KEY = jax.random.key(0)


def check_uniform(sample, low, high):
    sample = np.asarray(sample, np.float64).ravel()
    n, width = sample.size, high - low
    sigma = width / math.sqrt(12)
    assert low <= sample.min() and sample.max() <= high, (sample.min(), sample.max(), low, high)
    assert sample.min() < low + 30 / n * width and sample.max() > high - 30 / n * width
    assert abs(sample.mean() - (low + high) / 2) < 5 * sigma / math.sqrt(n)
    assert abs(sample.std() - sigma) < 5 * sigma * math.sqrt(0.8 / (4 * n))


def check_normal(sample, mean, std):
    sample = np.asarray(sample, np.float64).ravel()
    n = sample.size
    assert abs(sample.mean() - mean) < 5 * std / math.sqrt(n)
    assert abs(sample.std() - std) < 5 * std * math.sqrt(2 / (4 * n))
    tail, p = np.mean(np.abs(sample - mean) > 2 * std), 0.0455
    assert abs(tail - p) < 5 * math.sqrt(p * (1 - p) / n)


# (in, out) with in != out, so that a swapped fan_in/fan_out changes every bound and std.
IN, OUT = 800, 250


@pytest.mark.parametrize("initializer, low, high", [
    (init.uniform(-0.3, 0.7), -0.3, 0.7),
    (init.kaiming_uniform(), -math.sqrt(6 / IN), math.sqrt(6 / IN)),
    (init.kaiming_uniform(a=math.sqrt(5)), -1 / math.sqrt(IN), 1 / math.sqrt(IN)),
    (init.kaiming_uniform(mode="fan_out"), -math.sqrt(6 / OUT), math.sqrt(6 / OUT)),
    (init.kaiming_uniform(nonlinearity="tanh"), -5 / 3 * math.sqrt(3 / IN), 5 / 3 * math.sqrt(3 / IN)),
    (init.xavier_uniform(), -math.sqrt(6 / (IN + OUT)), math.sqrt(6 / (IN + OUT))),
    (init.xavier_uniform(gain=2.0), -2 * math.sqrt(6 / (IN + OUT)), 2 * math.sqrt(6 / (IN + OUT))),
    (init.bias_uniform(IN), -1 / math.sqrt(IN), 1 / math.sqrt(IN)),
])
def test_uniform_initializers_follow_their_bounds(initializer, low, high):
    sample = initializer(KEY, (IN, OUT), jnp.float32)
    assert sample.shape == (IN, OUT) and sample.dtype == jnp.float32
    check_uniform(sample, low, high)


@pytest.mark.parametrize("initializer, mean, std", [
    (init.normal(0.3), 0.0, 0.3),
    (init.normal(0.3, mean=-2.0), -2.0, 0.3),
    (init.kaiming_normal(), 0.0, math.sqrt(2 / IN)),
    (init.kaiming_normal(mode="fan_out"), 0.0, math.sqrt(2 / OUT)),
    (init.kaiming_normal(a=0.2), 0.0, math.sqrt(2 / (1 + 0.04)) / math.sqrt(IN)),
    (init.xavier_normal(), 0.0, math.sqrt(2 / (IN + OUT))),
    (init.xavier_normal(gain=0.5), 0.0, 0.5 * math.sqrt(2 / (IN + OUT))),
])
def test_normal_initializers_follow_their_std(initializer, mean, std):
    sample = initializer(KEY, (IN, OUT), jnp.float32)
    assert sample.shape == (IN, OUT) and sample.dtype == jnp.float32
    check_normal(sample, mean, std)


def test_kernel_fans_multiply_the_receptive_field():
    # (kh, kw, in, out): fan_in = 5*5*64 = 1600, fan_out = 5*5*32 = 800.
    sample = init.kaiming_normal()(KEY, (5, 5, 64, 32), jnp.float32)
    check_normal(sample, 0.0, math.sqrt(2 / 1600))
    assert init.compute_fans((5, 5, 64, 32)) == (1600, 800)


@pytest.mark.parametrize("case", GOLDEN["init"]["fans"], ids=lambda c: str(c["torch_shape"]))
def test_fans_match_pytorch_on_the_transposed_layout(case):
    out_features, in_features, *receptive = case["torch_shape"]
    funcdl_shape = (*receptive, in_features, out_features)
    assert init.compute_fans(funcdl_shape) == (case["fan_in"], case["fan_out"])


@pytest.mark.parametrize("case", GOLDEN["init"]["gains"],
                         ids=lambda c: f"{c['nonlinearity']}-{c['param']}")
def test_gains_match_pytorch(case):
    assert init.calculate_gain(case["nonlinearity"], case["param"]) == pytest.approx(
        case["gain"], rel=1e-15)


def test_fixed_value_initializers():
    assert np.array_equal(init.zeros(KEY, (2, 3), jnp.float32), np.zeros((2, 3)))
    assert np.array_equal(init.ones(KEY, (4,), jnp.float32), np.ones(4))
    assert np.array_equal(init.constant(0.35)(KEY, (2,), jnp.float32), np.float32([0.35, 0.35]))
    value = [[0.15, 0.25], [0.20, 0.30], [0.5, -1.0]]
    out = init.constant(value)(KEY, (3, 2), jnp.float32)
    assert out.dtype == jnp.float32 and np.array_equal(out, np.float32(value))


def test_same_key_same_values_other_key_other_values():
    draw = init.kaiming_uniform()
    a, b = draw(KEY, (30, 20), jnp.float32), draw(KEY, (30, 20), jnp.float32)
    c = draw(jax.random.key(1), (30, 20), jnp.float32)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    raw = draw(jax.random.PRNGKey(0), (30, 20), jnp.float32)  # raw uint32 keys work too
    assert np.array_equal(raw, a)


ALL = [init.zeros, init.ones, init.constant(0.5), init.uniform(), init.normal(),
       init.bias_uniform(3), init.xavier_uniform(), init.xavier_normal(), init.kaiming_uniform(),
       init.kaiming_normal(), init.glorot_uniform(), init.he_normal()]


@pytest.mark.parametrize("initializer", ALL)
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_dtype_is_the_requested_one(initializer, dtype):
    assert initializer(KEY, (3, 2), dtype).dtype == dtype


@pytest.mark.parametrize("initializer", ALL)
def test_float64_under_x64(initializer, x64):
    out = initializer(KEY, (3, 2), jnp.float64)
    assert out.dtype == jnp.float64 and out.shape == (3, 2)


def test_float64_values_are_not_rounded_to_float32(x64):
    value = 0.1 + 1e-12
    assert float(init.constant(value)(KEY, (), jnp.float64)) == value
    sample = np.asarray(init.normal()(KEY, (1000,), jnp.float64))
    assert not np.array_equal(sample, sample.astype(np.float32))


def test_aliases_are_the_same_distributions():
    assert init.glorot_uniform is init.xavier_uniform and init.glorot_normal is init.xavier_normal
    assert init.he_uniform is init.kaiming_uniform and init.he_normal is init.kaiming_normal


# ---------------------------------------------------------------- Linear's default init

def test_linear_default_init_is_pytorch_with_fan_in_from_the_first_axis():
    # in = 50, out = 4000: PyTorch's bound 1/sqrt(50) = 0.141 for w and b; with the fans
    # swapped it would be 1/sqrt(4000) = 0.016, and the extremes check would fail.
    params = nn.Linear(4000).init(KEY, jnp.zeros((2, 50)))
    assert params["w"].shape == (50, 4000) and params["b"].shape == (4000,)
    bound = 1 / math.sqrt(50)
    check_uniform(params["w"], -bound, bound)
    check_uniform(params["b"], -bound, bound)
    assert not np.array_equal(params["w"][0, :100], params["b"][:100])  # distinct keys


def test_linear_default_bias_keeps_pytorch_bound_with_another_w_init():
    params = nn.Linear(4000, w_init=init.zeros).init(KEY, jnp.zeros((1, 50)))
    assert not np.any(params["w"])
    check_uniform(params["b"], -1 / math.sqrt(50), 1 / math.sqrt(50))


def test_linear_initializers_are_keyword_arguments():
    params = nn.Linear(3, w_init=init.ones, b_init=init.constant(0.35)).init(KEY, jnp.zeros((2,)))
    assert np.array_equal(params["w"], np.ones((2, 3)))
    assert np.array_equal(params["b"], np.float32([0.35] * 3))


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("make, error, match", [
    (lambda: init.compute_fans((7,)), ValueError, r"rank >= 2, got `shape` \(7,\)"),
    (lambda: init.kaiming_normal()(KEY, (7,), jnp.float32), ValueError, r"rank >= 2"),
    (lambda: init.xavier_uniform()(KEY, (), jnp.float32), ValueError, r"rank >= 2"),
    (lambda: init.kaiming_uniform(mode="fan_avg"), ValueError, r"`mode` must be 'fan_in' or 'fan_out', got 'fan_avg'"),
    (lambda: init.calculate_gain("swish"), ValueError, r"`nonlinearity` must be one of .*got 'swish'"),
    (lambda: init.uniform(1.0, 0.0), ValueError, r"uniform: need `a` <= `b`, got a=1.0, b=0.0"),
    (lambda: init.normal(-1.0), ValueError, r"normal: `std` must be >= 0, got -1.0"),
    (lambda: init.constant([1.0, 2.0])(KEY, (3,), jnp.float32), ValueError,
     r"constant: `value` of shape \(2,\) does not match the parameter's shape \(3,\)"),
    (lambda: init.constant([[1.0, 2.0]])(KEY, (2, 1), jnp.float32), ValueError,
     r"`value` of shape \(1, 2\) does not match the parameter's shape \(2, 1\)"),
    (lambda: init.constant(["a"]), TypeError, r"constant: `value` must be real numbers"),
    (lambda: init.uniform()(KEY, (2,), jnp.int32), TypeError, r"uniform: `dtype` must be a floating dtype, got int32"),
    (lambda: init.zeros(KEY, (2,), jnp.int32), TypeError, r"zeros: `dtype` must be a floating dtype"),
])
def test_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()
