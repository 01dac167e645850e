"""fdl.nn layers beyond the seeds (funcdl/nn/conv.py, norm.py, embedding.py, activations.py):
PyTorch's values and parameter gradients (tests/golden/layers.json, written by
tests/golden/generate_layers.py) in both autodiffs, PyTorch's init, weights copied from a
torch.nn.Conv2d, composition with Sequential/Flatten under jit and vmap, errors naming the
layer, and a CNN trained on the 8x8 digits through `fdl.train.fit`.
"""
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import autodiff, datasets, losses, nn, ops, optim, train
from funcdl.gradcheck import check_grads
from funcdl.nn import init

GOLDEN = json.loads((pathlib.Path(__file__).parent / "golden" / "layers.json").read_text())
KEY = jax.random.key(0)


def _option(value):
    return tuple(value) if isinstance(value, list) else value


def check_layer_against_torch(layer, params, x, case, names):
    """The one oracle: layer.apply(params, x) and the gradients of sum(y * gy) with respect to
    params[name] (golden `grad_<name>`) and, for float x, x (`grad_x`), by jax.grad and by
    fdl.autodiff.grad in one jitted program, equal PyTorch's float64."""
    gy = jnp.asarray(case["gy"], jnp.float64)
    differentiate_x = jnp.issubdtype(x.dtype, jnp.floating)

    def loss(params, x):
        return ops.sum(layer.apply(params, x) * gy)

    argnums = (0, 1) if differentiate_x else 0

    @jax.jit
    def everything(params, x):
        return (layer.apply(params, x), jax.grad(loss, argnums)(params, x),
                autodiff.grad(loss, argnums)(params, x))

    y, *by_autodiff = everything(params, x)
    np.testing.assert_allclose(y, case["y"], rtol=1e-12, atol=1e-12)
    for grads, label in zip(by_autodiff, ("jax.grad", "fdl.autodiff.grad")):
        param_grads, x_grad = grads if differentiate_x else (grads, None)
        for name in names:
            np.testing.assert_allclose(param_grads[name], case[f"grad_{name}"], rtol=1e-11,
                                       atol=1e-12, err_msg=f"{label}: d/d{name}")
        if differentiate_x:
            np.testing.assert_allclose(x_grad, case["grad_x"], rtol=1e-11, atol=1e-12,
                                       err_msg=f"{label}: d/dx")


def constant_params(case, names):
    return {name: init.constant(np.asarray(case[name])) for name in names}


# ---------------------------------------------------------------- against PyTorch

@pytest.mark.parametrize("kind, index", [("conv2d", 2), ("conv2d", 8), ("conv1d", 0)])
def test_conv_layer_against_torch(x64, kind, index):
    case = GOLDEN[kind][index]
    w = np.asarray(case["w"])
    options = {k: _option(case[k]) for k in ("stride", "padding", "dilation", "groups")}
    layer = (nn.Conv2d if kind == "conv2d" else nn.Conv1d)(
        w.shape[0], w.shape[2:], w_init=init.constant(w),
        b_init=init.constant(np.asarray(case["b"])), **options)
    x = jnp.asarray(case["x"], jnp.float64)
    params = layer.init(KEY, x)
    check_layer_against_torch(layer, params, x, case, ["w", "b"])


def test_weights_copied_from_torch_conv2d_reproduce_its_output():
    case = GOLDEN["torch_conv2d_module"]
    layer = nn.Conv2d(5, 3, stride=2, padding=1)
    params = {"w": jnp.asarray(case["weight"], jnp.float32), "b": jnp.asarray(case["bias"], jnp.float32)}
    y = layer.apply(params, jnp.asarray(case["x"], jnp.float32))
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, case["y"], rtol=1e-5, atol=1e-6)
    # torch's own default init drew those weights: within PyTorch's bound 1/sqrt(fan_in).
    assert np.max(np.abs(case["weight"])) <= 1 / math.sqrt(case["fan_in"])


@pytest.mark.parametrize("index", [0, 1, 2])
def test_layer_norm_against_torch(x64, index):
    case = GOLDEN["layer_norm"][index]
    layer = nn.LayerNorm(tuple(case["normalized_shape"]), elementwise_affine=case["affine"])
    x = jnp.asarray(case["x"], jnp.float64)
    params = layer.init(KEY, x)
    names = ["w", "b"] if case["affine"] else []
    if case["affine"]:
        np.testing.assert_array_equal(params["w"], np.ones(case["normalized_shape"]))
        np.testing.assert_array_equal(params["b"], np.zeros(case["normalized_shape"]))
        params = {name: jnp.asarray(case[name], jnp.float64) for name in names}
    else:
        assert params == {}
    check_layer_against_torch(layer, params, x, case, names)


def test_embedding_against_torch(x64):
    case = GOLDEN["embedding"]
    layer = nn.Embedding(6, 3)
    indices = jnp.asarray(case["indices"])
    assert layer.init(KEY, indices)["w"].shape == (6, 3)
    params = {"w": jnp.asarray(case["w"], jnp.float64)}
    check_layer_against_torch(layer, params, indices, case, ["w"])  # row 1 is taken 3 times


def test_gelu_silu_layers_are_the_ops():
    x = jnp.linspace(-3.0, 3.0, 7)
    np.testing.assert_array_equal(nn.GELU().apply({}, x), ops.gelu(x))
    np.testing.assert_array_equal(nn.GELU("tanh").apply({}, x), ops.gelu(x, approximate="tanh"))
    np.testing.assert_array_equal(nn.SiLU().apply({}, x), ops.silu(x))


# ---------------------------------------------------------------- init (PyTorch's defaults)

def test_conv_default_init_is_uniform_within_one_over_sqrt_fan_in():
    layer = nn.Conv2d(64, (3, 2), groups=2)
    params = layer.init(KEY, jax.ShapeDtypeStruct((1, 8, 5, 5), jnp.float32))
    bound = 1 / math.sqrt(8 // 2 * 3 * 2)
    assert params["w"].shape == (64, 4, 3, 2) and params["b"].shape == (64,)
    assert params["w"].dtype == params["b"].dtype == jnp.float32
    for leaf in params.values():
        assert np.max(np.abs(leaf)) <= bound
    # Uniform on [-bound, bound]: the extremes are reached and the std is bound / sqrt(3).
    assert np.max(np.abs(params["w"])) > 0.99 * bound
    np.testing.assert_allclose(np.std(params["w"]), bound / math.sqrt(3), rtol=0.05)
    # Bit for bit what it has always been: uniform draws with the two halves of the key.
    w_key, b_key = jax.random.split(KEY)
    for value, key in ((params["w"], w_key), (params["b"], b_key)):
        expected = jax.random.uniform(key, value.shape, jnp.float32, minval=-bound, maxval=bound)
        assert np.array_equal(value, expected)


def test_embedding_default_init_is_standard_normal():
    w = nn.Embedding(1000, 40).init(KEY, jnp.zeros((2,), jnp.int32))["w"]
    assert w.shape == (1000, 40) and w.dtype == jnp.float32
    np.testing.assert_allclose([np.mean(w), np.std(w)], [0.0, 1.0], atol=0.02)


# ---------------------------------------------------------------- composition

SMALL_CNN = nn.Sequential(nn.Conv2d(3, 3, padding="same"), nn.GELU(), nn.AvgPool2d(2),
                          nn.Conv2d(4, 2, stride=2), nn.SiLU(), nn.Flatten(), nn.LayerNorm(16),
                          nn.Linear(2))


def test_small_cnn_shapes_jit_and_vmap():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 2, 8, 8)), jnp.float32)
    params = SMALL_CNN.init(KEY, x)
    assert [sorted(p) for p in params] == [["b", "w"], [], [], ["b", "w"], [], [], ["b", "w"], ["b", "w"]]
    assert jax.jit(SMALL_CNN.apply)(params, x).shape == (5, 2)
    # vmap over unbatched (C, H, W) samples equals the batched form (Flatten needs a batch
    # axis, so per sample only the layers before it).
    features = nn.Sequential(nn.Conv2d(3, 3, padding="same"), nn.GELU(), nn.AvgPool2d(2),
                             nn.Conv2d(4, 2, stride=2), nn.SiLU())
    per_sample = jax.jit(jax.vmap(features.apply, in_axes=(None, 0)))(params[:5], x)
    batched = jax.jit(features.apply)(params[:5], x)
    assert batched.shape == (5, 4, 2, 2)
    np.testing.assert_allclose(per_sample, batched, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_small_cnn_gradients_agree_with_jax_and_finite_differences():
    """Every new layer on one tape: fdl.autodiff == jax.grad to 1e-10 in float64, both within
    finite-difference tolerance (check_grads casts to float64)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 2, 8, 8))
    params = SMALL_CNN.init(KEY, jax.ShapeDtypeStruct(x.shape, jnp.float32))
    embedding = {"w": rng.normal(size=(4, 2))}
    labels, tokens = np.array([0, 1]), np.array([[1, 3], [3, 3]])

    def loss(params, embedding, x):
        shift = ops.sum(nn.Embedding(4, 2).apply(embedding, tokens), axis=1)  # (2, 2)
        logits = SMALL_CNN.apply(params, x) + shift
        return losses.cross_entropy(logits, labels)

    check_grads(loss, (params, embedding, x), argnums=(0, 1, 2), max_elementwise=0)


@pytest.mark.slow
def test_fit_trains_a_cnn_with_both_backends():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(16, 2, 8, 8)), jnp.float32)
    y = jnp.asarray(np.arange(16) % 2)
    params = SMALL_CNN.init(KEY, x)
    results = [train.fit(SMALL_CNN, params, losses.cross_entropy, optim.adam(1e-2), x, y,
                         epochs=3, batch_size=8, grad_backend=backend, progress=False)
               for backend in ("jax", "funcdl")]
    (p_jax, _, h_jax), (p_fdl, _, h_fdl) = results
    assert h_jax["loss"][-1] < h_jax["loss"][0]
    np.testing.assert_allclose(h_fdl["loss"], h_jax["loss"], rtol=1e-4)
    for a, b in zip(jax.tree_util.tree_leaves(p_fdl), jax.tree_util.tree_leaves(p_jax)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_reprs_read_like_the_construction():
    model = nn.Sequential(nn.Conv2d(16, 3, padding=1), nn.MaxPool2d(2), nn.AvgPool2d(3, stride=1, padding=1),
                          nn.Conv1d(4, (3,), groups=2, bias=False), nn.LayerNorm((3, 4), elementwise_affine=False),
                          nn.Embedding(5, 2), nn.GELU("tanh"), nn.SiLU())
    assert repr(model) == ("Sequential(Conv2d(16, 3, padding=1), MaxPool2d(2), AvgPool2d(3, stride=1, "
                           "padding=1), Conv1d(4, (3,), groups=2, bias=False), LayerNorm((3, 4), "
                           "elementwise_affine=False), Embedding(5, 2), GELU(approximate='tanh'), SiLU())")


# ---------------------------------------------------------------- errors name the layer

X = jnp.ones((2, 3, 6, 6))


@pytest.mark.parametrize("call, error, match", [
    (lambda: nn.Conv2d(4, 3).apply({"w": jnp.ones((4, 2, 3, 3)), "b": jnp.ones(4)}, X),
     ValueError, r"^Conv2d\(4, 3\): `x` of shape \(2, 3, 6, 6\) has 3 channels \(axis 1\) but "
                 r"`params\['w'\]` of shape \(4, 2, 3, 3\) expects 2"),
    (lambda: nn.Conv2d(4, 7).apply({"w": jnp.ones((4, 3, 7, 7)), "b": jnp.ones(4)}, X),
     ValueError, r"^Conv2d\(4, 7\): the kernel .* larger"),
    (lambda: nn.Conv2d(0, 3), ValueError, r"Conv2d: `out_channels` must be >= 1, got 0"),
    (lambda: nn.Conv2d(4.0, 3), TypeError, r"Conv2d: `out_channels` must be an int"),
    (lambda: nn.Conv2d(4, 3, padding="full"), ValueError, r"Conv2d: `padding` must be 'valid'"),
    (lambda: nn.Conv2d(4, 3, groups=3), ValueError, r"`groups` \(3\) must divide `out_channels`"),
    (lambda: nn.Conv2d(6, 3, groups=2).init(KEY, X), ValueError,
     r"must divide the input channels \(3\)"),
    (lambda: nn.Conv1d(4, 3).init(KEY, X), ValueError, r"^Conv1d\(4, 3\): sample input `x`"),
    (lambda: nn.Conv2d(4, 3).apply({"w": jnp.ones((4, 3, 2, 2)), "b": jnp.ones(4)}, X),
     ValueError, r"`params\['w'\]` must have shape \(4, C_in // groups, 3, 3\)"),
    (lambda: nn.Conv2d(4, 3, bias=False).apply({"w": jnp.ones((4, 3, 3, 3)), "b": 0}, X),
     ValueError, r"`params` must have keys \['w'\]"),
    (lambda: nn.MaxPool2d(7).init(KEY, X), ValueError, r"^MaxPool2d\(7\): the kernel .* larger"),
    (lambda: nn.AvgPool2d(2, padding=2), ValueError, r"^AvgPool2d: `padding` must be at most half"),
    (lambda: nn.MaxPool2d((2, 2, 2)), TypeError, r"MaxPool2d: `kernel_size` must be an int or"),
    (lambda: nn.Embedding(5, 2).apply({"w": jnp.ones((5, 2))}, jnp.array([0, 5, -1])),
     ValueError, r"^Embedding\(5, 2\): indices in `x` must lie in \[0, 5\), got \[5, -1\]"),
    (lambda: nn.Embedding(5, 2).apply({"w": jnp.ones((5, 2))}, jnp.array([0.0])),
     TypeError, r"`x` must be an integer array of indices"),
    (lambda: nn.Embedding(5, 0), ValueError, r"`embedding_dim` must be >= 1"),
    (lambda: nn.LayerNorm(4).init(KEY, X), ValueError,
     r"^LayerNorm\(4\): sample input `x` must have shape \(\.\.\., 4\), got \(2, 3, 6, 6\)"),
    (lambda: nn.LayerNorm((6, 6)).apply({"w": jnp.ones(6), "b": jnp.ones(6)}, X), ValueError,
     r"`params\['w'\]` must have shape \(6, 6\)"),
    (lambda: nn.LayerNorm(()), ValueError, r"`normalized_shape` must be non-empty"),
    (lambda: nn.LayerNorm(2.5), TypeError, r"`normalized_shape` must be an int or a tuple"),
    (lambda: nn.GELU("fast"), ValueError, r"GELU: `approximate` must be 'none' or 'tanh'"),
    (lambda: nn.Sequential(nn.MaxPool2d(2), nn.MaxPool2d(4)).init(KEY, X), ValueError,
     r"^Sequential layer 1 \(MaxPool2d\(4\)\): the kernel"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------- channels-last data (issue 17)

CONV2D = nn.Conv2d(8, 3)
CONV2D_PARAMS = CONV2D.init(KEY, jnp.zeros((2, 3, 12, 12)))  # for 3 channels
CONV1D = nn.Conv1d(4, 3)
CONV1D_PARAMS = CONV1D.init(KEY, jnp.zeros((2, 3, 16)))
GROUPED = nn.Conv2d(8, 3, groups=2)
GROUPED_PARAMS = GROUPED.init(KEY, jnp.zeros((2, 4, 9, 9)))  # w (8, 2, 3, 3)
HINT_2D = r"funcdl convolutions are channels-first, `x` \(N, C, H, W\) or \(C, H, W\) as in PyTorch"
HINT_1D = r"funcdl convolutions are channels-first, `x` \(N, C, L\) or \(C, L\) as in PyTorch"


@pytest.mark.parametrize("call, match", [
    (lambda: CONV2D.apply(CONV2D_PARAMS, jnp.zeros((2, 12, 12, 3))),  # NHWC
     r"^Conv2d\(8, 3\): `x` of shape \(2, 12, 12, 3\) has 12 channels \(axis 1\) but `params\['w'\]` "
     r"of shape \(8, 3, 3, 3\) expects 3 \(w.shape\[1\] \* groups = 3 \* 1\): expected `x` of "
     r"shape \(N, 3, H, W\) or \(3, H, W\); " + HINT_2D
     + r": transpose NHWC data with x.transpose\(0, 3, 1, 2\)$"),
    (lambda: CONV2D.apply(CONV2D_PARAMS, jnp.zeros((12, 12, 3))),  # unbatched HWC
     r"^Conv2d\(8, 3\): `x` of shape \(12, 12, 3\) has 12 channels \(axis 0\) but .* expects 3 "
     r".*: expected `x` of shape \(N, 3, H, W\) or \(3, H, W\); " + HINT_2D
     + r": transpose HWC data with x.transpose\(2, 0, 1\)$"),
    (lambda: jax.jit(CONV2D.apply)(CONV2D_PARAMS, jnp.zeros((2, 12, 12, 3))),  # at trace time
     r"has 12 channels \(axis 1\) but .* expects 3"),
    (lambda: nn.Sequential(CONV2D, nn.ReLU()).apply([CONV2D_PARAMS, {}], jnp.zeros((2, 12, 12, 3))),
     r"^Sequential layer 0 \(Conv2d\(8, 3\)\): `x` of shape \(2, 12, 12, 3\) has 12 channels"),
    (lambda: GROUPED.apply(GROUPED_PARAMS, jnp.zeros((2, 9, 9, 4))),
     r"`x` of shape \(2, 9, 9, 4\) has 9 channels \(axis 1\) but `params\['w'\]` of shape "
     r"\(8, 2, 3, 3\) expects 4 \(w.shape\[1\] \* groups = 2 \* 2\): expected `x` of shape "
     r"\(N, 4, H, W\) or \(4, H, W\); " + HINT_2D),
    (lambda: GROUPED.apply(GROUPED_PARAMS, jnp.zeros((9, 9, 4))),  # unbatched, grouped
     r"`x` of shape \(9, 9, 4\) has 9 channels \(axis 0\) .* expects 4 .*: expected `x` of shape "
     r"\(N, 4, H, W\) or \(4, H, W\); " + HINT_2D + r": transpose HWC data"),
    (lambda: CONV1D.apply(CONV1D_PARAMS, jnp.zeros((2, 16, 3))),  # NLC
     r"^Conv1d\(4, 3\): `x` of shape \(2, 16, 3\) has 16 channels \(axis 1\) but .* expects 3 .*"
     r": expected `x` of shape \(N, 3, L\) or \(3, L\); " + HINT_1D
     + r": transpose NLC data with x.transpose\(0, 2, 1\)$"),
    (lambda: CONV1D.apply(CONV1D_PARAMS, jnp.zeros((16, 3))),  # unbatched LC
     r"^Conv1d\(4, 3\): `x` of shape \(16, 3\) has 16 channels \(axis 0\) .*: expected `x` of shape "
     r"\(N, 3, L\) or \(3, L\); " + HINT_1D + r": transpose LC data with x.transpose\(1, 0\)$"),
    (lambda: CONV2D.apply(CONV2D_PARAMS, jnp.zeros((12, 3))),
     r"^Conv2d\(8, 3\): `x` must have shape \(N, C, H, W\) or \(C, H, W\), got \(12, 3\); " + HINT_2D),
    # init has no params to compare with; what it can see of NHWC data is named the same way
    (lambda: GROUPED.init(KEY, jnp.zeros((2, 9, 9, 4))),
     r"`groups` \(2\) must divide the input channels \(9\) of `x` of shape \(2, 9, 9, 4\); "
     + HINT_2D + r": transpose NHWC data"),
    (lambda: nn.Conv2d(8, 5).init(KEY, jnp.zeros((2, 28, 28, 1))),
     r"the kernel \(extent \(5, 5\) with dilation\) is larger than the padded spatial size \(28, 1\) of "
     r"sample input `x` of shape \(2, 28, 28, 1\); " + HINT_2D + r": transpose NHWC data"),
    (lambda: nn.Conv1d(4, 5).init(KEY, jnp.zeros((28, 1))),
     r"larger than the padded spatial size \(1,\) .*: transpose LC data with x.transpose\(1, 0\)$"),
])
def test_channels_last_data_are_named_as_such(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_channels_first_data_of_every_rank_pass_the_checks():
    def shape(layer, params, x_shape):  # traced only: the checks run, nothing is compiled
        return jax.eval_shape(layer.apply, params, jax.ShapeDtypeStruct(x_shape, jnp.float32)).shape

    assert shape(CONV2D, CONV2D_PARAMS, (3, 12, 12)) == (8, 10, 10)
    assert shape(CONV1D, CONV1D_PARAMS, (3, 16)) == (4, 14)
    assert shape(GROUPED, GROUPED_PARAMS, (1, 4, 9, 9)) == (1, 8, 7, 7)
    same = nn.Conv2d(2, 5, padding="same")  # "same" pads whatever the size
    sample = jax.ShapeDtypeStruct((1, 1, 2, 2), jnp.float32)
    assert shape(same, same.init(KEY, sample), (1, 1, 2, 2)) == (1, 2, 2, 2)


# ---------------------------------------------------------------- equality by construction (issue 17)

def every_layer():
    return [
        nn.Conv2d(8, 3), nn.Conv2d(8, 3, padding=1), nn.Conv2d(8, (3, 5)), nn.Conv2d(8, 3, groups=2),
        nn.Conv2d(8, 3, bias=False), nn.Conv2d(8, 3, w_init=init.kaiming_normal(nonlinearity="relu")),
        nn.Conv2d(8, 3, padding="same"), nn.Conv1d(8, 3), nn.Conv1d(8, 3, stride=2),
        nn.MaxPool2d(2), nn.MaxPool2d(2, stride=1), nn.AvgPool2d(2), nn.AvgPool2d(3, padding=1),
        nn.LayerNorm(4), nn.LayerNorm((2, 4)), nn.LayerNorm(4, eps=1e-6), nn.LayerNorm(4, elementwise_affine=False),
        nn.Embedding(5, 2), nn.Embedding(5, 3), nn.Embedding(5, 2, w_init=init.normal(0.1)),
        nn.GELU(), nn.GELU("tanh"), nn.SiLU(),
        nn.Sequential(nn.Conv2d(8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(10)),
    ]


def test_rebuilt_layers_are_equal_with_equal_hashes_and_all_others_differ():
    first, again = every_layer(), every_layer()
    for i, a in enumerate(first):
        assert hash(a) == hash(again[i])
        for j, b in enumerate(again):
            assert (a == b) == (i == j), (a, b)
    assert nn.Conv2d(8, 3) == nn.Conv2d(8, 3, stride=1, padding=0, dilation=1, groups=1, bias=True)
    assert nn.LayerNorm([2, 4]) != nn.LayerNorm((2, 4))  # a list and a tuple: other types


def test_embedding_under_jit_gives_nan_rows_for_out_of_range_indices():
    y = jax.jit(nn.Embedding(3, 2).apply)({"w": jnp.ones((3, 2))}, jnp.array([1, 3, -1]))
    assert np.all(y[0] == 1) and np.all(np.isnan(y[1:]))


# ---------------------------------------------------------------- the digits CNN

@pytest.mark.slow
def test_cnn_on_digits_reaches_98_percent():
    """Conv(16)-ReLU-Pool-Conv(32)-ReLU-Pool-Flatten-Linear(10) through `fit` with the funcdl
    backend: >= 98% accuracy on 360 held-out digits (measured: 98.9%, 20 epochs of Adam)."""
    x, y = datasets.load_digits()
    order = np.random.default_rng(0).permutation(len(x))
    x = (x[order] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = y[order]
    model = nn.Sequential(nn.Conv2d(16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(10))
    params = model.init(KEY, x[:1])
    params, _, history = train.fit(model, params, losses.cross_entropy, optim.adam(5e-3),
                                   x[:1437], y[:1437], epochs=20, batch_size=64,
                                   grad_backend="funcdl", progress=False, key=jax.random.key(1))
    accuracy = float(jnp.mean(jnp.argmax(model.apply(params, x[1437:]), -1) == y[1437:]))
    assert history["loss"][-1] < 0.1
    assert accuracy >= 0.98, accuracy
