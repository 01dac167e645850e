"""fdl.nn: layers against PyTorch (tests/golden/nn.json, written by tests/golden/generate_nn.py),
the seeds' networks against their own arithmetic, gradients of both autodiffs against each
other and against finite differences, Dropout, Sequential's plumbing, shape inference without
computation, and every error message.
"""
import functools
import json
import math
import pathlib
import time

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from funcdl import autodiff, nn, ops
from funcdl.construction import constructed_by
from funcdl.nn import init

GOLDEN = json.loads((pathlib.Path(__file__).parent / "golden" / "nn.json").read_text())
KEY = jax.random.key(0)
# Inputs come from NumPy and most tests share the shapes (2, 4) -> Linear(3) -> Linear(2): each
# new shape of a jax.random draw or an eager op costs a compilation, which dominates run time.
X = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4)), jnp.float32)


def assert_matches(actual, expected, dtype, rtol, atol=0.0):
    """The one oracle check: a plain jax array of the expected shape and dtype, and close values."""
    assert isinstance(actual, jax.Array), type(actual)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == dtype, (actual.dtype, dtype)
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


TOLERANCE = {jnp.float32: dict(rtol=1e-5, atol=1e-6), jnp.float64: dict(rtol=1e-12, atol=1e-14)}


def linear_from_torch(case, dtype):
    """A funcdl Linear loaded with PyTorch's weights: w = weight.T (funcdl stores (in, out))."""
    weight = np.asarray(case["weight"])
    bias = "bias" in case
    layer = nn.Linear(weight.shape[0], bias=bias, w_init=init.constant(weight.T),
                      b_init=init.constant(case["bias"]) if bias else None)
    x = jnp.asarray(case["x"], dtype)
    return layer, layer.init(KEY, x), x


# ---------------------------------------------------------------- forward values vs PyTorch

LINEAR_CASES = ["linear", "linear_batched", "linear_vector", "linear_no_bias"]


def check_linear_against_torch(name, dtype):
    case = GOLDEN[name]
    layer, params, x = linear_from_torch(case, dtype)
    assert sorted(params) == (["b", "w"] if "bias" in case else ["w"])
    assert_matches(params["w"], np.transpose(case["weight"]), dtype, rtol=0, atol=1e-7)
    assert_matches(layer.apply(params, x), case["y"], dtype, **TOLERANCE[dtype])


@pytest.mark.parametrize("name", LINEAR_CASES)
def test_linear_matches_torch_float32(name):
    check_linear_against_torch(name, jnp.float32)


@pytest.mark.parametrize("name", LINEAR_CASES)
def test_linear_matches_torch_float64(name, x64):
    check_linear_against_torch(name, jnp.float64)


ACTIVATIONS = {
    "ReLU()": nn.ReLU(), "LeakyReLU(0.01)": nn.LeakyReLU(), "LeakyReLU(0.2)": nn.LeakyReLU(0.2),
    "Sigmoid()": nn.Sigmoid(), "Tanh()": nn.Tanh(), "Softmax(axis=-1)": nn.Softmax(),
    "Softmax(axis=1)": nn.Softmax(axis=1), "LogSoftmax(axis=-1)": nn.LogSoftmax(),
    "LogSoftmax(axis=0)": nn.LogSoftmax(axis=0), "Flatten()": nn.Flatten(),
}


def check_parameter_free_layer_against_torch(name, dtype):
    # x holds exact zeros and logits of +-800, which overflow a naive softmax.
    layer, golden = ACTIVATIONS[name], GOLDEN["activations"]
    x = jnp.asarray(golden["x"], dtype)
    assert layer.init(KEY, x) == {}
    assert_matches(layer.apply({}, x), golden["y"][name], dtype, **TOLERANCE[dtype])


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_parameter_free_layers_match_torch_float32(name):
    check_parameter_free_layer_against_torch(name, jnp.float32)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_parameter_free_layers_match_torch_float64(name, x64):
    check_parameter_free_layer_against_torch(name, jnp.float64)


def test_plain_functions_are_parameter_free_layers():
    x = jnp.asarray(GOLDEN["activations"]["x"], jnp.float32)
    model = nn.Sequential(ops.tanh, lambda v: ops.leaky_relu(v, 0.2))
    params = model.init(KEY, x)
    assert params == [{}, {}]
    expected = np.tanh(np.asarray(GOLDEN["activations"]["x"]))
    expected = np.where(expected > 0, expected, 0.2 * expected)
    assert_matches(model.apply(params, x), expected, jnp.float32, **TOLERANCE[jnp.float32])


# ---------------------------------------------------------------- the seeds' networks

def seed_002_network():
    """Seed 002, section 2.2.4: 2-2-2 sigmoid net; h1 = σ(i1 w1 + i2 w2 + b1), so in the
    (in, out) layout column j holds the weights into unit j: [[w1, w3], [w2, w4]]."""
    return nn.Sequential(
        nn.Linear(2, w_init=init.constant([[0.15, 0.25], [0.20, 0.30]]), b_init=init.constant(0.35)),
        nn.Sigmoid(),
        nn.Linear(2, w_init=init.constant([[0.40, 0.50], [0.45, 0.55]]), b_init=init.constant(0.60)),
        nn.Sigmoid())


def seed_002_by_hand():
    """The seed's own scalar code ("方式1"), in float64 with math.exp."""
    i1, i2, b1, b2 = 0.05, 0.10, 0.35, 0.60
    w1, w2, w3, w4, w5, w6, w7, w8 = 0.15, 0.20, 0.25, 0.30, 0.40, 0.45, 0.50, 0.55
    sigmoid = lambda v: 1 / (1 + math.exp(-v))
    h1, h2 = sigmoid(i1 * w1 + i2 * w2 + b1), sigmoid(i1 * w3 + i2 * w4 + b1)
    o1, o2 = sigmoid(h1 * w5 + h2 * w6 + b2), sigmoid(h1 * w7 + h2 * w8 + b2)
    dw5 = (o1 - 0.01) * (o1 * (1.0 - o1)) * h1
    dw1 = ((o1 - 0.01) * (o1 * (1.0 - o1)) * w5 * h1 * (1.0 - h1) * i1
           + (o2 - 0.99) * (o2 * (1.0 - o2)) * w7 * h1 * (1.0 - h1) * i1)
    return (o1, o2), dw5, dw1


def test_seed_002_forward_matches_the_seed_and_torch(x64):
    (o1, o2), _, _ = seed_002_by_hand()
    assert (o1, o2) == pytest.approx((0.7513650695523157, 0.7729284653214625), rel=1e-15)
    model = seed_002_network()
    x = jnp.asarray([[0.05, 0.10]])
    out = model.apply(model.init(KEY, x), x)
    assert_matches(out, [[o1, o2]], jnp.float64, rtol=1e-15)
    assert_matches(out, GOLDEN["seed_002"]["o"], jnp.float64, rtol=1e-15)


@pytest.mark.parametrize("grad", [jax.grad, autodiff.grad], ids=["jax", "funcdl"])
def test_seed_002_backprop_matches_the_seed_and_torch(grad, x64):
    golden = GOLDEN["seed_002"]
    model = seed_002_network()
    x, target = jnp.asarray(golden["x"]), jnp.asarray(golden["target"])
    params = model.init(KEY, x)

    def loss(params):  # the seed's 0.5 * Σ (o - target)²
        return 0.5 * ops.sum(ops.square(model.apply(params, x) - target))

    grads = grad(loss)(params)
    assert float(loss(params)) == pytest.approx(golden["loss"], rel=1e-14)
    for layer, weight_grad, bias_grad in zip((0, 2), golden["weight_grads"], golden["bias_grads"]):
        assert_matches(grads[layer]["w"], np.transpose(weight_grad), jnp.float64, rtol=1e-12)
        assert_matches(grads[layer]["b"], bias_grad, jnp.float64, rtol=1e-12)
    assert grads[1] == {} and grads[3] == {}
    _, dw5, dw1 = seed_002_by_hand()
    assert float(grads[2]["w"][0, 0]) == pytest.approx(dw5, rel=1e-13)
    assert float(grads[0]["w"][0, 0]) == pytest.approx(dw1, rel=1e-13)


SEED_001_VALUES = [  # [w_11, w_12, b_11, b_12, w_21, w_22, b_21], the seed's figures 8 and 7
    [-0.1571950013426796, -0.1070365984042347, 0.3791639008324807, 0.31960284774415215,
     0.4263410176300597, 0.5097967360623379, 0.7597168751185974],
    [-0.4571950013426796, -0.4070365984042347, 0.3791639008324807, 0.31960284774415215,
     0.4263410176300597, 0.5097967360623379, 0.7597168751185974],
]


@pytest.mark.parametrize("values", SEED_001_VALUES, ids=["figure8", "figure7"])
def test_seed_001_leaky_relu_network(values, x64):
    """1-2-1 network fitting x²; the seed does not state its LeakyRelu slope, 0.01 is used."""
    w11, w12, b11, b12, w21, w22, b21 = values
    model = nn.Sequential(
        nn.Linear(2, w_init=init.constant([[w11, w12]]), b_init=init.constant([b11, b12])),
        nn.LeakyReLU(0.01),
        nn.Linear(1, w_init=init.constant([[w21], [w22]]), b_init=init.constant([b21])))
    x = np.linspace(-1.0, 4.0, 11).reshape(-1, 1)
    add_11, add_12 = x * w11 + b11, x * w12 + b12
    assert (add_11 < 0).any() and (add_11 > 0).any()  # both branches of the kink are exercised
    leaky = lambda v: np.where(v > 0, v, 0.01 * v)
    expected = leaky(add_11) * w21 + leaky(add_12) * w22 + b21
    params = model.init(KEY, x)
    assert [sorted(p) for p in params] == [["b", "w"], [], ["b", "w"]]
    assert_matches(model.apply(params, jnp.asarray(x)), expected, jnp.float64, rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------- gradients: both autodiffs

def numpy_normal(rng, std=0.7):
    """An initializer drawing from NumPy's `rng`: unlike jax.random, it compiles nothing per
    shape, which keeps these tests fast (init's own draws are tested in test_init.py)."""
    return lambda key, shape, dtype: jnp.asarray(rng.normal(0.0, std, shape), dtype)


MLPS = {
    "tanh-leaky-dropout-logsoftmax": lambda w: nn.Sequential(
        nn.Linear(6, w_init=w, b_init=w), nn.Tanh(), nn.Linear(5, w_init=w, b_init=w),
        nn.LeakyReLU(0.1), nn.Dropout(0.25), nn.Linear(4, w_init=w, b_init=w), nn.Sigmoid(),
        nn.Linear(3, w_init=w, b_init=w), nn.LogSoftmax()),
    "flatten-relu-dropout-softmax": lambda w: nn.Sequential(
        nn.Flatten(), nn.Linear(8, w_init=w, b_init=w), nn.ReLU(), nn.Dropout(0.5), ops.tanh,
        nn.Linear(3, bias=False, w_init=w), nn.Softmax()),
}


def mlp_problem(name):
    rng = np.random.default_rng(2)
    model = MLPS[name](numpy_normal(rng))
    x = jnp.asarray(rng.normal(size=(7, 2, 3) if name.startswith("flatten") else (7, 3)))
    labels = jnp.asarray([0, 2, 1, 1, 0, 2, 2])
    params = model.init(KEY, x)

    def loss(params, x, key):  # written with fdl.ops and operators only
        y = model.apply(params, x, key=key, train=True)
        return -ops.mean(ops.sum(ops.one_hot(labels, 3, dtype=jnp.float64) * y, axis=-1))

    return model, params, x, loss


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("name", list(MLPS))
def test_mlp_gradients_agree_between_autodiffs_and_with_central_differences(name, x64):
    # Compiled once, to keep the test fast; the eager tape is exercised by the seed-002 test.
    model, params, x, loss = mlp_problem(name)
    key = jax.random.key(3)
    rng = np.random.default_rng(4)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    directions = [jnp.asarray(rng.normal(size=leaf.shape)) for leaf in leaves]

    @jax.jit
    def everything(params, x, key, v):
        # The dropout mask really bites: train=True differs from the identity.
        outputs = model.apply(params, x, key=key, train=True), model.apply(params, x)
        expected = jax.grad(loss, argnums=(0, 1))(params, x, key)
        actual = autodiff.grad(loss, argnums=(0, 1))(params, x, key)
        # <grad, v> against (L(p + εv) - L(p - εv)) / 2ε, independent of both autodiffs.
        shifted = lambda eps: jax.tree_util.tree_map(lambda p, d: p + eps * d, params, v)
        numeric = (loss(shifted(1e-6), x, key) - loss(shifted(-1e-6), x, key)) / 2e-6
        analytic = sum(jnp.vdot(g, d) for g, d in
                       zip(jax.tree_util.tree_leaves(actual[0]), jax.tree_util.tree_leaves(v)))
        return outputs, expected, actual, numeric, analytic

    outputs, expected, actual, numeric, analytic = everything(
        params, x, key, jax.tree_util.tree_unflatten(treedef, directions))
    assert not np.allclose(*outputs)
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected)
    for a, e in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
        assert_matches(a, e, jnp.float64, rtol=1e-10, atol=1e-14)
    assert all(np.any(leaf != 0) for leaf in jax.tree_util.tree_leaves(actual))
    assert float(analytic) == pytest.approx(float(numeric), rel=1e-7)


def test_a_single_linear_layer_trains(x64):
    # d/dw mean((x w + b - y)²) = 2/N xᵀ r, d/db = 2/N Σ r with r = x w + b - y.
    layer = nn.Linear(2)
    x = np.random.default_rng(0).normal(size=(6, 3))
    y = np.random.default_rng(1).normal(size=(6, 2))
    params = layer.init(KEY, x)
    residual = x @ np.asarray(params["w"]) + np.asarray(params["b"]) - y
    loss = lambda p: ops.mean(ops.square(layer.apply(p, jnp.asarray(x)) - y))
    grads = autodiff.grad(loss)(params)
    assert_matches(grads["w"], 2 / residual.size * x.T @ residual, jnp.float64, rtol=1e-12)
    assert_matches(grads["b"], 2 / residual.size * residual.sum(0), jnp.float64, rtol=1e-12)
    step = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
    assert float(loss(step)) < float(loss(params))


# ---------------------------------------------------------------- Dropout

def test_dropout_is_the_identity_unless_training():
    layer = nn.Dropout(0.5)
    assert layer.init(KEY, X) == {}
    assert layer.apply({}, X) is X
    assert layer.apply({}, X, key=jax.random.key(1)) is X


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_drops_the_rate_and_scales_the_rest(rate):
    n = 100_000
    out = np.asarray(nn.Dropout(rate).apply({}, jnp.ones(n), key=jax.random.key(7), train=True))
    kept = out != 0
    # The kept fraction is Binomial(n, 1 - rate) / n: 5 standard errors.
    assert abs(kept.mean() - (1 - rate)) < 5 * math.sqrt(rate * (1 - rate) / n)
    np.testing.assert_allclose(out[kept], np.float32(1 / (1 - rate)), rtol=1e-7)


def test_dropout_mask_depends_only_on_the_key():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(50, 40)), jnp.float32)
    layer = nn.Dropout(0.5)
    a = layer.apply({}, x, key=jax.random.key(1), train=True)
    b = layer.apply({}, x, key=jax.random.key(1), train=True)
    c = layer.apply({}, x, key=jax.random.key(2), train=True)
    assert np.array_equal(a, b) and not np.array_equal(a == 0, c == 0)
    np.testing.assert_array_equal(np.where(a != 0, x * 2, 0), a)  # kept values are x / (1 - 0.5)


def test_dropout_rate_zero_and_one_follow_torch():
    assert np.array_equal(nn.Dropout(0.0).apply({}, X, key=KEY, train=True), X)
    out = nn.Dropout(1.0).apply({}, X, key=KEY, train=True)
    assert out.shape == X.shape and not np.any(out)


def test_dropout_gradient_is_the_scaled_mask(x64):
    x = jnp.asarray(np.random.default_rng(2).normal(size=(50, 40)))
    layer, key = nn.Dropout(0.3), jax.random.key(5)
    out = layer.apply({}, x, key=key, train=True)
    grad = jax.jit(autodiff.grad(lambda x: ops.sum(layer.apply({}, x, key=key, train=True))))(x)
    assert_matches(grad, np.where(out != 0, 1 / 0.7, 0.0), jnp.float64, rtol=1e-15)


def test_sequential_gives_two_dropouts_distinct_keys():
    x = jnp.ones((50, 40))
    model = nn.Sequential(nn.Dropout(0.5), nn.Dropout(0.5))
    key = jax.random.key(11)
    out = model.apply(model.init(KEY, x), x, key=key, train=True)
    first_key, second_key = jax.random.split(key, 2)
    first = nn.Dropout(0.5).apply({}, x, key=first_key, train=True)
    second_alone = nn.Dropout(0.5).apply({}, x, key=second_key, train=True)
    np.testing.assert_array_equal(out, nn.Dropout(0.5).apply({}, first, key=second_key, train=True))
    assert not np.array_equal(first == 0, second_alone == 0)


# ---------------------------------------------------------------- Sequential plumbing

def probe(log):
    """A parameter-free layer that records the key and train flag it receives, and adds the
    key's noise to x so that the output reveals which key it got."""
    def apply(params, x, *, key=None, train=False):
        log.append((key, train))
        return x if key is None else x + jax.random.uniform(key, x.shape)
    return nn.Model(lambda key, x: {}, apply)


def test_sequential_splits_the_key_once_per_layer_and_passes_train():
    log = []
    model = nn.Sequential(probe(log), nn.Linear(3), probe(log))
    params = model.init(KEY, X)
    log.clear()
    key = jax.random.key(5)
    out = model.apply(params, X, key=key, train=True)
    keys = jax.random.split(key, 3)
    expected = X + jax.random.uniform(keys[0], X.shape)
    expected = nn.Linear(3).apply(params[1], expected)
    expected = expected + jax.random.uniform(keys[2], expected.shape)
    np.testing.assert_array_equal(out, expected)
    assert [train for _, train in log] == [True, True]
    log.clear()
    model.apply(params, X)
    assert log == [(None, False), (None, False)]


def test_sequential_params_structure():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4), nn.ReLU(), ops.sigmoid, nn.Dropout(0.1),
                          nn.Linear(2, bias=False))
    params = model.init(KEY, jnp.zeros((3, 2, 5)))
    assert isinstance(params, list) and len(params) == 6
    shapes = [jax.tree_util.tree_map(jnp.shape, p) for p in params]
    assert shapes == [{}, {"w": (10, 4), "b": (4,)}, {}, {}, {}, {"w": (4, 2)}]
    assert model.apply(params, jnp.ones((3, 2, 5))).shape == (3, 2)


def test_sequential_nests_and_empty_is_identity():
    inner = nn.Sequential(nn.Linear(3), nn.Tanh())
    model = nn.Sequential(inner, nn.Linear(2))
    params = model.init(KEY, X)
    assert len(params) == 2 and len(params[0]) == 2
    expected = nn.Linear(2).apply(params[1], inner.apply(params[0], X))
    np.testing.assert_array_equal(model.apply(params, X), expected)
    empty = nn.Sequential()
    assert empty.init(KEY, X) == [] and empty.apply([], X) is X


def test_apply_under_jit_matches_eager():
    model = nn.Sequential(nn.Linear(3), nn.ReLU(), nn.Dropout(0.5), nn.Linear(2))
    params = model.init(KEY, X)
    key = jax.random.key(9)
    train = jax.jit(lambda p, x, k: model.apply(p, x, key=k, train=True))
    np.testing.assert_allclose(train(params, X, key), model.apply(params, X, key=key, train=True),
                               rtol=1e-6)
    np.testing.assert_allclose(jax.jit(model.apply)(params, X), model.apply(params, X), rtol=1e-6)


def test_layers_are_named_in_repr():
    assert "Sequential(Linear(4), ReLU(), relu, Dropout(0.5)).apply" in repr(
        nn.Sequential(nn.Linear(4), nn.ReLU(), ops.relu, nn.Dropout(0.5)).apply)


# ---------------------------------------------------------------- init reads only shapes

def test_init_accepts_a_shape_dtype_struct():
    model = nn.Sequential(nn.Linear(3), nn.ReLU(), nn.Linear(2))
    from_struct = model.init(KEY, jax.ShapeDtypeStruct((2, 4), jnp.float32))
    from_array = model.init(KEY, X)
    for a, b in zip(jax.tree_util.tree_leaves(from_struct), jax.tree_util.tree_leaves(from_array)):
        np.testing.assert_array_equal(a, b)


def test_init_on_a_huge_batch_is_instant():
    # 10**7 x 784 float32 is 31 GB: computing anything on it could not finish in time.
    model = nn.Sequential(nn.Flatten(), nn.Linear(3), nn.ReLU(), nn.Dropout(0.5), nn.Linear(2),
                          nn.LogSoftmax())
    model.init(KEY, jnp.zeros((1, 28, 28)))  # compiles the initializers for these param shapes
    start = time.perf_counter()
    params = model.init(KEY, jax.ShapeDtypeStruct((10**7, 28, 28), jnp.float32))
    assert time.perf_counter() - start < 2.0
    assert params[1]["w"].shape == (784, 3) and params[4]["w"].shape == (3, 2)


def test_sequential_init_never_runs_a_layer_on_data():
    seen = []

    def apply(params, x, *, key=None, train=False):
        seen.append(isinstance(x, jax.core.Tracer))
        return x

    nn.Sequential(nn.Linear(3), nn.Model(lambda key, x: {}, apply), nn.Linear(2)).init(KEY, X)
    assert seen == [True]


def param_dtypes(params):
    return {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_params_follow_the_sample_dtype(dtype):
    params = nn.Sequential(nn.Linear(3), nn.Linear(2)).init(KEY, jax.ShapeDtypeStruct((2, 4), dtype))
    assert param_dtypes(params) == {jnp.dtype(dtype)}


def test_params_follow_a_float64_sample(x64):
    params = nn.Sequential(nn.Linear(3), nn.Linear(2)).init(KEY, X.astype(jnp.float64))
    assert param_dtypes(params) == {jnp.dtype(jnp.float64)}


def test_non_floating_sample_gives_float32_params():
    params = nn.Linear(3).init(KEY, jax.ShapeDtypeStruct((2, 4), jnp.int32))
    assert params["w"].dtype == params["b"].dtype == jnp.float32


def test_linear_dtype_keyword_overrides_the_sample():
    params = nn.Linear(3, dtype=jnp.bfloat16).init(KEY, X)
    assert params["w"].dtype == params["b"].dtype == jnp.bfloat16


def test_float64_sample_without_x64_gives_float32_params():
    params = nn.Sequential(nn.Linear(3), nn.Tanh(), nn.Linear(2)).init(KEY, np.zeros((2, 4)))
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float32)}


# ---------------------------------------------------------------- shapes, against NumPy

batch_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)


@settings(max_examples=30, deadline=None)
@given(batch=batch_shapes, in_features=st.integers(1, 3), out_features=st.integers(1, 3),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_shapes_against_numpy(batch, in_features, out_features, bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=batch + (in_features,)).astype(np.float32)
    params = {"w": rng.normal(size=(in_features, out_features)).astype(np.float32)}
    expected = x.astype(np.float64) @ params["w"].astype(np.float64)
    if bias:
        params["b"] = rng.normal(size=out_features).astype(np.float32)
        expected = expected + params["b"].astype(np.float64)
    out = nn.Linear(out_features, bias=bias).apply(params, jnp.asarray(x))
    assert_matches(out, expected, jnp.float32, rtol=1e-5, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(shape=hnp.array_shapes(min_dims=2, max_dims=5, min_side=1, max_side=3))
def test_flatten_shapes_against_numpy(shape):
    x = np.arange(math.prod(shape), dtype=np.float32).reshape(shape)
    out = nn.Flatten().apply({}, jnp.asarray(x))
    assert_matches(out, x.reshape(shape[0], -1), jnp.float32, rtol=0)


# ---------------------------------------------------------------- errors

def two_layer_params():
    return nn.Sequential(nn.Linear(3), nn.ReLU(), nn.Linear(5)).init(KEY, jnp.zeros((2, 4)))


MLP = nn.Sequential(nn.Linear(3), nn.ReLU(), nn.Linear(2))


ERRORS = [
    # wrong rank or type of the sample input
    (lambda: nn.Linear(4).init(KEY, jnp.zeros(())), ValueError,
     r"^Linear\(4\): sample input `x` must have shape \(\.\.\., in\), got shape \(\)$"),
    (lambda: nn.Linear(4).init(KEY, [1.0, 2.0]), TypeError,
     r"Linear\(4\): sample input `x` must be an array or jax.ShapeDtypeStruct, got list"),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(2)).init(KEY, jnp.zeros(5)), ValueError,
     r"^Sequential layer 0 \(Flatten\(\)\): `x` must have shape \(N, \.\.\.\) with rank >= 2, got \(5,\)$"),
    (lambda: nn.Sequential(nn.Linear(3), nn.Softmax(axis=2)).init(KEY, X), ValueError,
     r"^Sequential layer 1 \(Softmax\(axis=2\)\): `axis` 2 is out of range for `x` of shape \(2, 3\)$"),
    # params of another architecture
    (lambda: MLP.apply(two_layer_params()[:2], X), ValueError,
     r"Sequential\(Linear\(3\), ReLU\(\), Linear\(2\)\): `params` must have one entry per layer: "
     r"expected 3 entries, got 2"),
    (lambda: MLP.apply(two_layer_params(), X), ValueError,
     r"^Sequential layer 2 \(Linear\(2\)\): `params\['w'\]` must have shape \(in, 2\), got \(3, 5\)$"),
    (lambda: jax.jit(MLP.apply)(two_layer_params(), X), ValueError,  # raised while tracing
     r"^Sequential layer 2 \(Linear\(2\)\): `params\['w'\]` must have shape \(in, 2\), got \(3, 5\)"),
    (lambda: nn.Linear(4).apply({"w": jnp.ones((3, 4))}, jnp.ones(3)), ValueError,
     r"^Linear\(4\): `params` must have keys \['b', 'w'\], got \['w'\]$"),
    (lambda: nn.Linear(4, bias=False).apply({"w": jnp.ones((3, 4)), "b": jnp.ones(4)}, jnp.ones(3)),
     ValueError, r"Linear\(4, bias=False\): `params` must have keys \['w'\], got \['b', 'w'\]"),
    (lambda: nn.Linear(4).apply({"w": jnp.ones((3, 4)), "b": jnp.ones(3)}, jnp.ones(3)), ValueError,
     r"Linear\(4\): `params\['b'\]` must have shape \(4,\), got \(3,\)"),
    (lambda: nn.Sequential(nn.ReLU(), nn.Linear(2)).apply([{"w": jnp.ones((2, 2))}, {}], X),
     ValueError, r"^Sequential layer 0 \(ReLU\(\)\): `params` must be \{\} \(the layer has no "
                 r"parameters\), got keys \['w'\]$"),
    (lambda: nn.Sequential(nn.Sequential(nn.Linear(2)), nn.Linear(3)).apply(
        [[{"w": jnp.ones((4, 3)), "b": jnp.ones(3)}], {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}], X),
     ValueError, r"^Sequential layer 0 \(Sequential\(Linear\(2\)\)\): Sequential layer 0 "
                 r"\(Linear\(2\)\): `params\['w'\]` must have shape \(in, 2\), got \(4, 3\)$"),
    # input of the wrong feature size
    (lambda: MLP.apply(MLP.init(KEY, X), jnp.ones((2, 5))), ValueError,
     r"^Sequential layer 0 \(Linear\(3\)\): `x` must have shape \(\.\.\., 4\) to match "
     r"`params\['w'\]` of shape \(4, 3\), got \(2, 5\)$"),
    (lambda: jax.jit(MLP.apply)(MLP.init(KEY, X), jnp.ones((2, 5))), ValueError,
     r"`x` must have shape \(\.\.\., 4\) to match `params\['w'\]` of shape \(4, 3\), got \(2, 5\)"),
    (lambda: nn.Flatten().apply({}, jnp.ones(3)), ValueError,
     r"Flatten\(\): `x` must have shape \(N, \.\.\.\) with rank >= 2, got \(3,\)"),
    # wrong types
    (lambda: nn.Linear(4).apply([jnp.ones((3, 4)), jnp.ones(4)], jnp.ones(3)), TypeError,
     r"Linear\(4\): `params` must be a dict with keys \['b', 'w'\], got list"),
    (lambda: MLP.apply({"w": 1}, X), TypeError,
     r"`params` must be a list with one entry per layer \(3\), got dict"),
    (lambda: nn.Linear(4).apply({"w": jnp.ones((3, 4)), "b": jnp.ones(4)}, [1.0, 2.0, 3.0]),
     TypeError, r"Linear\(4\): `x` must be an array or Tensor, got list"),
    (lambda: nn.ReLU().apply(None, X), TypeError, r"ReLU\(\): `params` must be \{\}.*got NoneType"),
    (lambda: nn.Linear(4).init(0, X), TypeError,
     r"Linear\(4\): `key` must be a PRNG key \(jax.random.key\(seed\) or jax.random.PRNGKey\(seed\)\), got int"),
    (lambda: MLP.init(jnp.zeros(2), X), TypeError,
     r"`key` must be a PRNG key .*got an array of shape \(2,\) and dtype float32"),
    (lambda: MLP.apply(MLP.init(KEY, X), X, key=5), TypeError, r"`key` must be a PRNG key"),
    (lambda: nn.Dropout(0.5).apply({}, X, key=np.ones(2, np.float32), train=True), TypeError,
     r"Dropout\(0.5\): `key` must be a PRNG key"),
    (lambda: nn.Sequential(nn.Linear(2), 3), TypeError,
     r"Sequential: `layers\[1\]` must be a Model or a function x -> y, got int"),
    # Dropout
    (lambda: nn.Dropout(0.5).apply({}, X, train=True), ValueError,
     r"^Dropout\(0.5\): `key` is required when train=True"),
    (lambda: nn.Sequential(nn.Linear(3), nn.Dropout(0.5)).apply(MLP.init(KEY, X)[:1] + [{}], X, train=True),
     ValueError, r"^Sequential layer 1 \(Dropout\(0.5\)\): `key` is required when train=True"),
    (lambda: nn.Dropout(1.5), ValueError, r"Dropout: `rate` must be in \[0, 1\], got 1.5"),
    (lambda: nn.Dropout(-0.1), ValueError, r"Dropout: `rate` must be in \[0, 1\], got -0.1"),
    (lambda: nn.Dropout("0.5"), TypeError, r"Dropout: `rate` must be a real number, got str"),
    # constructors and initializers
    (lambda: nn.Linear(0), ValueError, r"Linear: `out_features` must be >= 1, got 0"),
    (lambda: nn.Linear(2.0), TypeError, r"Linear: `out_features` must be an int, got float"),
    (lambda: nn.Linear(2, dtype=jnp.int32).init(KEY, X), TypeError,
     r"Linear\(2\): `dtype` must be a floating dtype, got int32"),
    (lambda: nn.Linear(2, w_init=init.constant(np.ones((2, 4)))).init(KEY, X), ValueError,
     r"Linear\(2\): `w_init` failed: constant: `value` of shape \(2, 4\) does not match the "
     r"parameter's shape \(4, 2\)"),
    (lambda: nn.Linear(2, b_init=lambda key, shape, dtype: jnp.zeros(3, dtype)).init(KEY, X),
     ValueError, r"Linear\(2\): `b_init` must return an array of shape \(2,\) and dtype float32, "
                 r"got \(3,\) and float32"),
    (lambda: nn.LeakyReLU("0.1"), TypeError, r"LeakyReLU: `negative_slope` must be a real number"),
    (lambda: nn.Softmax(axis=1.0), TypeError, r"Softmax: `axis` must be an int, got float"),
    (lambda: nn.LogSoftmax(axis=None), TypeError, r"LogSoftmax: `axis` must be an int, got NoneType"),
]


@pytest.mark.parametrize("make, error, match", ERRORS, ids=[m for _, _, m in ERRORS])
def test_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


# ---------------------------------------------------------------- repr and call mistakes (issue 9)

def test_repr_reads_like_the_construction_and_model_stays_a_pair():
    model = nn.Sequential(nn.Linear(16), nn.Tanh(), nn.Linear(1))
    assert repr(model) == str(model) == "Sequential(Linear(16), Tanh(), Linear(1))"
    assert repr(nn.Sequential(nn.Linear(3, bias=False), ops.relu, nn.Dropout(0.5), nn.LogSoftmax())) == (
        "Sequential(Linear(3, bias=False), relu, Dropout(0.5), LogSoftmax(axis=-1))")
    assert repr(nn.LeakyReLU(0.2)) == "LeakyReLU(0.2)" and repr(nn.Flatten()) == "Flatten()"
    # Still exactly the 2-field NamedTuple: unpacking, indexing, _fields, equality of fields.
    init, apply = model
    assert model._fields == ("init", "apply") and len(model) == 2 and model[0] is init
    assert isinstance(model, tuple) and type(model) is nn.Model
    params = init(KEY, jnp.zeros((2, 4)))
    np.testing.assert_array_equal(apply(params, jnp.ones((2, 4))), model.apply(params, jnp.ones((2, 4))))
    # A Model built by hand from plain functions keeps the NamedTuple's own repr.
    plain = nn.Model(jnp.zeros_like, jnp.add)
    assert repr(plain).startswith("Model(init=<") and "apply=<" in repr(plain)


def test_a_custom_layer_from_named_model_follows_the_contract():
    def Scale():
        def init(key, x):
            return {"s": jnp.ones((x.shape[-1],), x.dtype)}

        def apply(params, x, *, key=None, train=False):
            return x * ops.reshape(params["s"], (1, -1))
        return nn.named_model("Scale()", init, apply)

    model = nn.Sequential(nn.Linear(3), Scale())
    assert repr(model) == "Sequential(Linear(3), Scale())"
    params = model.init(key=KEY, x=jnp.zeros((2, 4)))  # keywords work as positions do
    y = model.apply(params=params, x=jnp.ones((2, 4)))
    grads = autodiff.grad(lambda p: ops.sum(model.apply(p, jnp.ones((2, 4)))))(params)
    np.testing.assert_allclose(grads[1]["s"], jnp.sum(y, axis=0), rtol=1e-6)  # d/ds sum(h s) = Σ h


CALL_MISTAKES = [
    (lambda m, p, x: m.apply(x),
     r"Sequential\(Linear\(4\), ReLU\(\)\)\.apply: expected apply\(params, x, \*, key=None, train=False\), "
     r"got 1 positional argument\(s\): an array of shape \(2, 3\) and dtype float32 \(the params are "
     r"missing: pass them first, `model.apply\(params, x\)`, with `params = model.init\(key, x\)`\)"),
    (lambda m, p, x: m.apply(x, p),
     r"Sequential\(Linear\(4\), ReLU\(\)\)\.apply: expected apply\(params, x\), the params pytree first, "
     r"got `params` an array of shape \(2, 3\) and dtype float32 and `x` a list: the arguments look "
     r"swapped, call `model.apply\(params, x\)`"),
    (lambda m, p, x: jax.jit(m.apply)(x, p),  # under jit x is a tracer: still said in plain words
     r"got `params` an array of shape \(2, 3\) and dtype float32 and `x` a list: the arguments look swapped"),
    (lambda m, p, x: m.layers_first_apply(x, p[0]),
     r"Linear\(4\)\.apply: expected apply\(params, x\), the params pytree first, got `params` an array "
     r"of shape \(2, 3\) and dtype float32 and `x` a dict"),
    (lambda m, p, x: m.init(x),
     r"Sequential\(Linear\(4\), ReLU\(\)\)\.init: expected init\(key, x\), a PRNG key and a sample input, "
     r"got 1 positional argument\(s\): an array of shape \(2, 3\) and dtype float32; call "
     r"`params = model.init\(jax.random.key\(0\), x\)`"),
]


@pytest.mark.parametrize("mistake, message", CALL_MISTAKES)
def test_call_mistakes_say_what_was_expected(mistake, message):
    linear = nn.Linear(4)
    model = nn.Sequential(linear, nn.ReLU())
    x = jnp.ones((2, 3), jnp.float32)
    params = model.init(KEY, x)

    class WithLayer:  # gives the lambdas the first layer alone too
        apply, init = model.apply, model.init
        layers_first_apply = linear.apply

    with pytest.raises(TypeError, match=message):
        mistake(WithLayer, params, x)


# ---------------------------------------------------------------- equality by construction (issue 17)
# Equal calls give equal, equally hashed Models, so jax.jit's caches (fit's compiled programs)
# reuse what they compiled; any differing argument gives an unequal Model.

SHARED_ARRAY = np.ones((4, 3))
SHARED_FUNCTION = lambda key, shape, dtype: jnp.zeros(shape, dtype)  # noqa: E731


def every_layer():
    """One of each constructor here, with some non-default arguments; called twice below."""
    return [
        nn.Linear(4), nn.Linear(4, bias=False), nn.Linear(4, dtype=jnp.bfloat16),
        nn.Linear(4, w_init=init.xavier_uniform(2.0)), nn.Linear(4, w_init=init.constant(SHARED_ARRAY)),
        nn.Linear(4, w_init=SHARED_FUNCTION), nn.Linear(4, b_init=init.constant([0.1, 0.2, 0.3, 0.4])),
        nn.ReLU(), nn.LeakyReLU(), nn.LeakyReLU(0.2), nn.Sigmoid(), nn.Tanh(), nn.Softmax(),
        nn.Softmax(axis=0), nn.LogSoftmax(), nn.Dropout(0.1), nn.Dropout(0.2), nn.Flatten(),
        nn.Sequential(), nn.Sequential(nn.Linear(16), nn.Tanh(), nn.Linear(1)),
        nn.Sequential(nn.Linear(16), nn.ReLU(), nn.Linear(1)), nn.Sequential(nn.Linear(16), nn.Tanh()),
        nn.Sequential(nn.Linear(16), ops.tanh, nn.Linear(1)),
        nn.Sequential(nn.Sequential(nn.Linear(16), nn.Tanh()), nn.Linear(1)),
    ]


def test_rebuilt_layers_are_equal_with_equal_hashes_and_all_others_differ():
    first, again = every_layer(), every_layer()
    for a, b in zip(first, again):
        assert a == b and not a != b and hash(a) == hash(b), a
        assert a.apply is not b.apply  # new functions, equal by their construction
    for i, a in enumerate(first):
        for j, b in enumerate(again):
            assert (a == b) == (i == j), (a, b)
    assert len(set(first) | set(again)) == len(first)


def test_defaults_given_or_not_are_one_construction():
    assert nn.Linear(4) == nn.Linear(4, bias=True, b_init=None) == nn.Linear(out_features=4)
    assert nn.Softmax() == nn.Softmax(-1) and nn.LeakyReLU() == nn.LeakyReLU(0.01)


def test_arrays_and_functions_compare_by_identity():
    assert nn.Linear(4, w_init=init.constant(np.ones((4, 3)))) != nn.Linear(
        4, w_init=init.constant(np.ones((4, 3))))
    assert nn.Linear(4, w_init=lambda k, s, d: jnp.zeros(s, d)) != nn.Linear(
        4, w_init=lambda k, s, d: jnp.zeros(s, d))
    # lists and tuples of numbers compare by value, numbers with their type
    assert nn.Linear(2, w_init=init.constant([[1.0, 2.0]])) == nn.Linear(2, w_init=init.constant([[1.0, 2.0]]))
    assert nn.Dropout(0.5) != nn.Dropout(np.float32(0.5))


def test_hand_built_models_keep_the_identity_of_their_functions():
    def apply(params, x):
        return x

    def init_(key, x):
        return {}

    assert nn.Model(init_, apply) == nn.Model(init_, apply)
    assert hash(nn.Model(init_, apply)) == hash(nn.Model(init_, apply))
    assert nn.Model(init_, apply) != nn.Model(init_, lambda params, x: x)
    layer = nn.Linear(3)
    assert nn.Model(layer.init, layer.apply) == layer == nn.Linear(3)  # the same two functions
    assert nn.Model(layer.init, nn.Linear(3).apply) != layer  # a pair from two calls: by identity

    @functools.wraps(layer.apply)  # copies the function's attributes, not its construction
    def doubled(params, x, **kwargs):
        return 2 * layer.apply(params, x, **kwargs)

    assert nn.Model(layer.init, doubled) != layer
    assert constructed_by(nn.Model(init_, apply)) is None


def test_the_record_rebuilds_an_equal_model():
    model = nn.Sequential(nn.Linear(16, bias=False), nn.Dropout(0.25), nn.Linear(1))
    constructor, args, kwargs = constructed_by(model)
    assert constructor is nn.Sequential and args == tuple(constructed_by(model).args)
    assert constructor(*args, **kwargs) == model
    linear = constructed_by(args[0])
    assert linear.constructor is nn.Linear and linear.arguments()["bias"] is False


def test_a_rebuilt_model_hits_jits_cache():
    @functools.partial(jax.jit, static_argnames="model")
    def forward(params, x, model):
        return model.apply(params, x)

    params = nn.Linear(2).init(KEY, X)
    forward(params, X, model=nn.Linear(2))
    forward(params, X, model=nn.Linear(2))
    assert forward._cache_size() == 1
    forward(params, X, model=nn.Linear(2, bias=True, dtype=jnp.float32))  # another construction
    assert forward._cache_size() == 2
