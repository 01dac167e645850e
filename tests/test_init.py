"""fdl.nn.init: each initializer's distribution against its formula; the fans each layer passes
(Linear, Conv1d/Conv2d with groups, Embedding, a bare PyTorch (out, in) weight), the gains and
the exact std/bound of kaiming_*/xavier_* against torch.nn.init (tests/golden/init.json,
written by tests/golden/generate_init.py); old three-argument initializers; dtypes and errors.

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
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import nn
from funcdl.nn import init

GOLDEN = json.loads((pathlib.Path(__file__).parent / "golden" / "init.json").read_text())
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


# ---------------------------------------------------------------- fans and scales vs PyTorch

def _build(case, **initializers):
    """The funcdl layer of a golden weight case and a sample input for it (None: a bare weight)."""
    kind = case["layer"]
    if kind == "Linear":
        return nn.Linear(case["out_features"], **initializers), jnp.zeros((1, case["in_features"]))
    if kind in ("Conv1d", "Conv2d"):
        spatial = (9,) * int(kind[-2])
        layer = getattr(nn, kind)(case["out_channels"], _option(case["kernel_size"]),
                                  groups=case["groups"], **initializers)
        return layer, jnp.zeros((1, case["in_channels"], *spatial))
    if kind == "Embedding":
        return (nn.Embedding(case["num_embeddings"], case["embedding_dim"], **initializers),
                jnp.zeros((2,), jnp.int32))
    return None, None


def _option(value):
    return tuple(value) if isinstance(value, list) else value


def _funcdl_shape(case):
    """The weight's shape in funcdl: PyTorch's, except Linear's w, which is weight.T."""
    shape = tuple(case["torch_shape"])
    return shape[::-1] if case["layer"] == "Linear" else shape


def _case_id(case):
    return f"{case['layer']}{case['torch_shape']}" + (f"g{case['groups']}" if "groups" in case else "")


WEIGHTS = GOLDEN["weights"]
LAYERS = [case for case in WEIGHTS if case["layer"] is not None]


@pytest.mark.parametrize("case", LAYERS, ids=_case_id)
def test_each_layer_passes_pytorchs_fans_to_w_init_and_b_init(case):
    seen = {}

    def spy(name):
        def initializer(key, shape, dtype, *, fan_in, fan_out):
            seen[name] = (tuple(shape), fan_in, fan_out)
            return jnp.zeros(shape, dtype)
        return initializer

    bias = {} if case["layer"] == "Embedding" else {"b_init": spy("b")}
    layer, x = _build(case, w_init=spy("w"), **bias)
    layer.init(KEY, x)
    assert seen["w"] == (_funcdl_shape(case), case["fan_in"], case["fan_out"])
    if bias:  # a bias is given its weight's fans (PyTorch's bias bound is the weight's fan_in)
        assert seen["b"][1:] == (case["fan_in"], case["fan_out"])


@pytest.mark.parametrize("case", WEIGHTS, ids=_case_id)
def test_compute_fans_of_both_layouts_match_pytorch(case):
    torch_shape = tuple(case["torch_shape"])
    expected = (case["fan_in"], case["fan_out"])
    assert init.compute_fans(torch_shape, "out_in") == expected
    if len(torch_shape) > 2:  # without a layout, rank >= 3 is PyTorch's (out, in, *kernel)
        assert init.compute_fans(torch_shape) == expected
    else:  # rank 2 without a layout is funcdl's (in, out): the transposed weight
        assert init.compute_fans(torch_shape[::-1]) == expected
        assert init.compute_fans(torch_shape[::-1], "in_out") == expected


def _scale_cases():
    for case in WEIGHTS:
        for scale in case["scales"]:
            yield pytest.param(case, scale, id=f"{_case_id(case)}-{sorted(scale.items())}")


@pytest.mark.parametrize("case, scale", list(_scale_cases()))
def test_kaiming_and_xavier_scales_equal_pytorchs_exactly(case, scale):
    fans = case["fan_in"], case["fan_out"]
    if scale["init"] == "kaiming":
        options = (scale["a"], scale["mode"], scale["nonlinearity"])
        std, bound = init.kaiming_std(*fans, *options), init.kaiming_bound(*fans, *options)
    else:
        std, bound = init.xavier_std(*fans, scale["gain"]), init.xavier_bound(*fans, scale["gain"])
    assert (std, bound) == (scale["std"], scale["bound"])


ISSUE_CASE = next(c for c in WEIGHTS if c["layer"] == "Conv2d" and c["torch_shape"] == [64, 32, 3, 3])


def _initializers(scale):
    if scale["init"] == "kaiming":
        options = {k: scale[k] for k in ("a", "mode", "nonlinearity")}
        return init.kaiming_uniform(**options), init.kaiming_normal(**options)
    return init.xavier_uniform(scale["gain"]), init.xavier_normal(scale["gain"])


@pytest.mark.parametrize("scale", ISSUE_CASE["scales"], ids=lambda s: str(sorted(s.items())))
def test_a_conv2d_draws_with_pytorchs_std_and_bound(scale):
    # Conv2d(64, 3) over 32 channels: 18,432 draws per weight. The issue's kaiming_normal()
    # gave std 0.0182 (fan_in 6144, from a (kh, kw, in, out) reading) where PyTorch's is 0.0833.
    uniform, normal = _initializers(scale)
    for initializer, check in ((uniform, lambda w: check_uniform(w, -scale["bound"], scale["bound"])),
                               (normal, lambda w: check_normal(w, 0.0, scale["std"]))):
        layer, x = _build(ISSUE_CASE, w_init=initializer)
        check(layer.init(KEY, x)["w"])


@pytest.mark.parametrize("case", [c for c in LAYERS if c is not ISSUE_CASE], ids=_case_id)
def test_kaiming_normal_given_each_layers_fans_draws_pytorchs_std(case):
    # One large draw per weight case, with the fans the layer passes (checked above).
    scale = next(s for s in case["scales"] if s["init"] == "kaiming" and s["mode"] == "fan_out"
                 and s["nonlinearity"] == "relu")
    sample = init.kaiming_normal(mode="fan_out", nonlinearity="relu")(
        KEY, (200_000,), jnp.float32, fan_in=case["fan_in"], fan_out=case["fan_out"])
    check_normal(sample, 0.0, scale["std"])


def test_called_without_fans_a_kernel_is_read_as_pytorchs_layout():
    # (C_out, C_in, kh, kw) = (32, 64, 5, 5): fan_in = 64*5*5 = 1600, fan_out = 32*5*5 = 800.
    assert init.compute_fans((32, 64, 5, 5)) == (1600, 800)
    check_normal(init.kaiming_normal()(KEY, (32, 64, 5, 5), jnp.float32), 0.0, math.sqrt(2 / 1600))
    check_normal(init.kaiming_normal(mode="fan_out")(KEY, (32, 64, 5, 5), jnp.float32), 0.0,
                 math.sqrt(2 / 800))


def test_explicit_fans_override_the_shape():
    # A rank-1 shape has no fans of its own; given by the caller, they are used.
    sample = init.xavier_uniform()(KEY, (100_000,), jnp.float32, fan_in=30, fan_out=70)
    check_uniform(sample, -math.sqrt(6 / 100), math.sqrt(6 / 100))
    only_in = init.kaiming_normal()(KEY, (400, 50), jnp.float32, fan_in=8)  # fan_out from shape
    check_normal(only_in, 0.0, math.sqrt(2 / 8))


def test_old_three_argument_initializers_are_still_accepted():
    seen = []

    def old_style(key, shape, dtype):
        seen.append(tuple(shape))
        return jnp.full(shape, 0.5, dtype)

    conv = nn.Conv2d(4, 3, w_init=old_style, b_init=old_style).init(KEY, jnp.zeros((1, 2, 5, 5)))
    linear = nn.Linear(3, w_init=old_style).init(KEY, jnp.zeros((1, 2)))
    assert seen == [(4, 2, 3, 3), (4,), (2, 3)]
    assert np.all(conv["w"] == 0.5) and np.all(linear["w"] == 0.5)
    assert not init.accepts_fans(old_style) and not init.accepts_fans(jax.nn.initializers.zeros)
    assert init.accepts_fans(lambda key, shape, dtype, **options: None)
    assert all(init.accepts_fans(i) for i in ALL)


def test_a_jax_initializer_works_in_a_layer():
    # jax.nn.initializers take (key, shape, dtype) and read the fans from the shape themselves.
    params = nn.Linear(8, w_init=jax.nn.initializers.zeros).init(KEY, jnp.zeros((1, 3)))
    assert params["w"].shape == (3, 8) and not np.any(params["w"])


@pytest.mark.parametrize("case", GOLDEN["gains"], ids=lambda c: f"{c['nonlinearity']}-{c['param']}")
def test_gains_match_pytorch(case):
    assert init.calculate_gain(case["nonlinearity"], case["param"]) == case["gain"]


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
    # Bit for bit what it has always been: uniform draws with the two halves of the key.
    w_key, b_key = jax.random.split(KEY)
    for value, key in ((params["w"], w_key), (params["b"], b_key)):
        expected = jax.random.uniform(key, value.shape, jnp.float32, minval=-bound, maxval=bound)
        assert np.array_equal(value, expected)


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
    (lambda: init.compute_fans((7,)), ValueError, r"rank >= 2 .*, got `shape` \(7,\)"),
    (lambda: init.compute_fans((2, 3, 4), "in_out"), ValueError,
     r"layout 'in_out' is a dense \(in, out\) weight of rank 2, got `shape` \(2, 3, 4\)"),
    (lambda: init.compute_fans((2, 3), "io"), ValueError,
     r"`layout` must be 'in_out', 'out_in' or None, got 'io'"),
    (lambda: nn.Linear(3, w_init=0.1), TypeError,
     r"Linear\(3\): `w_init` must be an initializer .* got float"),
    (lambda: nn.Conv2d(3, 2, b_init="zeros"), TypeError, r"Conv2d\(3, 2\): `b_init` must be an initializer"),
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


@pytest.mark.parametrize("initializer, kind", [
    (init.uniform(-0.5, 0.5), "uniform"), (init.normal(2.0, mean=0.3), "normal"),
    (init.kaiming_uniform(), "uniform"), (init.xavier_normal(), "normal")])
def test_draws_are_one_flat_vector_with_the_numbers_of_a_shaped_draw(initializer, kind):
    """A weight is drawn as one rank-1 vector (its generator compiles several times faster
    than a rank-4 one's) and reshaped: the numbers are those of jax.random's draw of the shape."""
    shape = (16, 8, 3, 3)
    w = initializer(KEY, shape, jnp.float32, fan_in=72, fan_out=144)
    program = str(jax.make_jaxpr(lambda k: initializer(k, shape, jnp.float32, fan_in=72,
                                                       fan_out=144))(KEY))
    draws = re.findall(r"random_bits\[[^\]]*shape=(\([0-9, ]*\))", program)
    assert w.shape == shape and draws and set(draws) == {f"({math.prod(shape)},)"}, draws
    unit = (jax.random.uniform(KEY, shape, jnp.float32, -1.0, 1.0) if kind == "uniform"
            else jax.random.normal(KEY, shape, jnp.float32))
    # the same draw up to the initializer's affine map a * unit + b (fitted on two entries)
    flat_w, flat_unit = np.asarray(w, np.float64).ravel(), np.asarray(unit, np.float64).ravel()
    scale = (flat_w[1] - flat_w[0]) / (flat_unit[1] - flat_unit[0])
    np.testing.assert_allclose(flat_w, flat_w[0] + scale * (flat_unit - flat_unit[0]), atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("key", [KEY, jax.random.PRNGKey(3)], ids=["typed_key", "raw_key"])
def test_small_eager_draws_share_one_generator_and_keep_their_own_sizes_numbers(key, dtype):
    """Eagerly, a weight of fewer than SHARED_DRAW numbers is cut from a draw of SHARED_DRAW:
    exactly the numbers of jax.random's draw of its own size (for each of several sizes, and
    under jit, where it is drawn at its own size), and new sizes compile no new generator."""
    compiled = []

    def count(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(duration)

    sizes = [(3, 7), (41,), (5, 2, 3), (init.SHARED_DRAW + 3,)]
    for shape in sizes:  # against jax.random, drawn at the weight's own size
        n = math.prod(shape)
        uniform = init.uniform(-0.5, 0.25)(key, shape, dtype)
        normal = init.normal(2.0, mean=0.3)(key, shape, dtype)
        np.testing.assert_array_equal(
            np.asarray(uniform), np.asarray(jax.random.uniform(key, (n,), dtype, -0.5, 0.25)).reshape(shape))
        np.testing.assert_array_equal(
            np.asarray(normal), np.asarray(0.3 + 2.0 * jax.random.normal(key, (n,), dtype).reshape(shape)))
        assert uniform.dtype == normal.dtype == dtype and uniform.shape == shape
        traced = jax.jit(lambda k, s=shape: init.uniform(-0.5, 0.25)(k, s, dtype))(key)
        np.testing.assert_array_equal(np.asarray(traced), np.asarray(uniform))
    init.uniform()(key, (2,), dtype)  # the shared generator, compiled if it was not yet
    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        for size in (13, 17, 19, 23):  # sizes drawn nowhere else: one generator each, before
            init.uniform(-1.0, 1.0)(key, (size,), dtype)
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert compiled == [], f"{len(compiled)} programs compiled for 4 new small sizes"
