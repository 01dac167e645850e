"""fdl.ops layer ops (funcdl/ops_layers.py, primitives in funcdl/autodiff/vjps_layers.py):
values and gradients of both autodiffs against PyTorch float64 (tests/golden/layers.json,
written by tests/golden/generate_layers.py; max pooling of -inf and NaN too), random
conv/pool configurations against jax.grad and finite differences (hypothesis), pooling ties,
take's accumulation, and every error.
"""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from funcdl import autodiff, ops
from funcdl.gradcheck import check_grads

GOLDEN = json.loads((pathlib.Path(__file__).parent / "golden" / "layers.json").read_text())


def _option(value):
    """JSON lists back to the tuples the ops take."""
    return tuple(value) if isinstance(value, list) else value


def check_against_torch(case, function, names):
    """The one oracle: y = function(*inputs) and the gradients of sum(y * gy) with respect to
    `names`, by jax.grad and by fdl.autodiff.grad, equal PyTorch's float64 (one jitted program
    per case computes all three: compiling dominates the run time)."""
    inputs = [jnp.asarray(case[name], jnp.float64) for name in names]
    gy = jnp.asarray(case["gy"], jnp.float64)
    argnums = tuple(range(len(names)))

    def loss(*xs):
        return ops.sum(function(*xs) * gy)

    @jax.jit
    def everything(*xs):
        return function(*xs), jax.grad(loss, argnums)(*xs), autodiff.grad(loss, argnums)(*xs)

    y, *by_autodiff = everything(*inputs)
    assert y.dtype == jnp.float64 and y.shape == np.shape(case["y"])
    np.testing.assert_allclose(y, case["y"], rtol=1e-12, atol=1e-12)
    for grads, label in zip(by_autodiff, ("jax.grad", "fdl.autodiff.grad")):
        for name, g in zip(names, grads):
            assert g.dtype == jnp.float64, (label, name)
            np.testing.assert_allclose(g, case[f"grad_{name}"], rtol=1e-11, atol=1e-12,
                                       err_msg=f"{label}: d/d{name}")


# ---------------------------------------------------------------- against PyTorch

@pytest.mark.parametrize("op_name", ["conv2d", "conv1d"])
def test_conv_against_torch(x64, op_name):
    op = getattr(ops, op_name)
    for case in GOLDEN[op_name]:
        names = ["x", "w"] + (["b"] if "b" in case else [])
        options = {k: _option(case[k]) for k in ("stride", "padding", "dilation", "groups")}
        check_against_torch(case, lambda *a, options=options: op(*a, **options), names)


@pytest.mark.parametrize("op_name", ["max_pool2d", "avg_pool2d"])
def test_pool_against_torch(x64, op_name):
    op = getattr(ops, op_name)
    kinds = [case["kind"] for case in GOLDEN[op_name]]
    assert {"relu", "integers", "zeros"} <= set(kinds)  # the tie cases are there
    for case in GOLDEN[op_name]:
        options = [_option(case[k]) for k in ("kernel_size", "stride", "padding")]
        check_against_torch(case, lambda x, options=options: op(x, *options), ["x"])


def test_max_pool_never_selects_padding_and_picks_pytorchs_nan(x64):
    """All -inf inputs with padding (the gradient goes to each window's first element inside
    the input, never to a padded one) and NaN in overlapping windows (a window's last NaN):
    both autodiffs give PyTorch's values and gradients."""
    cases = GOLDEN["max_pool2d_non_finite"]
    assert {case["kind"] for case in cases} == {"neg_inf", "nan", "mixed"}
    for case in cases:
        assert np.sum(case["grad_x"]) != 0  # the gradient lands inside the input
        options = [_option(case[k]) for k in ("kernel_size", "stride", "padding")]
        check_against_torch(case, lambda x, options=options: ops.max_pool2d(x, *options), ["x"])


@pytest.mark.parametrize("name", ["erf", "gelu", "gelu_tanh", "silu"])
def test_elementwise_against_torch(x64, name):
    function = {"erf": ops.erf, "gelu": ops.gelu, "silu": ops.silu,
                "gelu_tanh": lambda x: ops.gelu(x, approximate="tanh")}[name]
    check_against_torch(GOLDEN["elementwise"][name], function, ["x"])


def test_take_against_torch(x64):
    for case in GOLDEN["take"]:
        indices = np.asarray(case["indices"])
        check_against_torch(case, lambda x: ops.take(x, indices, axis=case["axis"]), ["x"])


# ---------------------------------------------------------------- properties (hypothesis)

@st.composite
def conv_configs(draw):
    groups = draw(st.sampled_from([1, 2]))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    dilation = draw(st.tuples(st.integers(1, 2), st.integers(1, 2)))
    stride = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    padding = draw(st.one_of(st.tuples(st.integers(0, 2), st.integers(0, 2)),
                             st.sampled_from(["valid", "same"] if stride == (1, 1) else ["valid"])))
    pad = (0, 0) if isinstance(padding, str) else padding
    size = tuple(draw(st.integers(max(1, (k - 1) * d + 1 - 2 * p), 6))
                 for k, d, p in zip(kernel, dilation, pad))
    return dict(shape=(draw(st.integers(1, 2)), c_in, *size), w_shape=(c_out, c_in // groups, *kernel),
                stride=stride, padding=padding, dilation=dilation, groups=groups)


PROPERTY_SETTINGS = settings(max_examples=6, deadline=None, derandomize=True,
                             suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(conv_configs(), st.integers(0, 2**16))
def test_conv_gradients_property(config, seed):
    """fdl.autodiff == jax.grad to 1e-10 (float64), both within finite-difference tolerance."""
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=config["shape"]), rng.normal(size=config["w_shape"])
    b = rng.normal(size=config["w_shape"][:1])
    options = {k: config[k] for k in ("stride", "padding", "dilation", "groups")}

    def f(x, w, b):
        y = ops.conv2d(x, w, b, **options)
        return ops.sum(y * y)

    check_grads(f, (x, w, b), argnums=(0, 1, 2))


@st.composite
def pool_configs(draw):
    kernel = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    size = tuple(draw(st.integers(max(1, k - 2 * p), 6)) for k, p in zip(kernel, padding))
    return dict(shape=(draw(st.integers(1, 2)), draw(st.integers(1, 2)), *size),
                kernel_size=kernel, stride=stride, padding=padding)


@PROPERTY_SETTINGS
@given(pool_configs(), st.sampled_from(["max_pool2d", "avg_pool2d"]), st.integers(0, 2**16))
def test_pool_gradients_property(config, op_name, seed):
    # Distinct values (a permutation) keep finite differences away from max's ties.
    n = int(np.prod(config["shape"]))
    x = np.random.default_rng(seed).permutation(n).reshape(config["shape"]) / n - 0.5
    op = getattr(ops, op_name)

    def f(x):
        y = op(x, config["kernel_size"], config["stride"], config["padding"])
        return ops.sum(y * y)

    check_grads(f, (x,))


# ---------------------------------------------------------------- specific behaviour

@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_max_pool_ties_go_to_the_first_maximum(x64):
    """Overlapping windows over a constant input: each window sends its whole gradient to its
    first element in row-major order, in both autodiffs (the PyTorch golden cases check the
    numbers; this pins the rule itself)."""
    def f(x):
        return ops.sum(ops.max_pool2d(x, 2, 1))

    x = jnp.zeros((1, 1, 3, 3), jnp.float64)
    expected = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    for grad in (jax.grad, autodiff.grad):
        np.testing.assert_array_equal(grad(f)(x)[0, 0], expected)


def test_take_repeated_indices_accumulate(x64):
    x = jnp.arange(3.0, dtype=jnp.float64)
    g = autodiff.grad(lambda x: ops.sum(ops.take(x, np.array([2, 2, 0, 2, -1]))))(x)
    np.testing.assert_array_equal(g, [1.0, 0.0, 4.0])


def test_take_under_jit_fills_out_of_range_with_nan():
    y = jax.jit(lambda x, i: ops.take(x, i))(jnp.ones((3, 2)), jnp.array([0, 3]))
    assert np.all(np.isfinite(y[0])) and np.all(np.isnan(y[1]))


def test_unbatched_forms_equal_the_batched_ones():
    x, w = jnp.ones((3, 5, 4)), jnp.ones((2, 3, 3, 3))
    np.testing.assert_array_equal(ops.conv2d(x, w, padding=1), ops.conv2d(x[None], w, padding=1)[0])
    np.testing.assert_array_equal(ops.max_pool2d(x, 2), ops.max_pool2d(x[None], 2)[0])


def test_float32_stays_float32():
    x, w = jnp.ones((1, 2, 5, 5), jnp.float32), jnp.ones((3, 2, 3, 3), jnp.float32)
    gx, gw = autodiff.grad(lambda x, w: ops.sum(ops.conv2d(x, w)), argnums=(0, 1))(x, w)
    assert gx.dtype == gw.dtype == jnp.float32


# ---------------------------------------------------------------- errors

X, W = jnp.ones((1, 2, 5, 5)), jnp.ones((4, 2, 3, 3))


@pytest.mark.parametrize("call, error, match", [
    (lambda: ops.conv2d(jnp.ones((1, 3, 5, 5)), W), ValueError, r"`x` has 3 channels but `w`"),
    (lambda: ops.conv2d(X, W, groups=3), ValueError, r"`groups` must be >= 1 and divide"),
    (lambda: ops.conv2d(X, W, groups=1.0), TypeError, r"`groups` must be an int"),
    (lambda: ops.conv2d(X, W, padding="full"), ValueError, r"`padding` must be 'valid', 'same'"),
    (lambda: ops.conv2d(X, W, padding="same", stride=2), ValueError, r"'same'` needs stride 1"),
    (lambda: ops.conv2d(X, W, padding=-1), ValueError, r"`padding` must be >= 0"),
    (lambda: ops.conv2d(X, W, stride=(1, 2, 3)), TypeError, r"`stride` must be an int or a tuple of 2"),
    (lambda: ops.conv2d(X, W, stride=0), ValueError, r"`stride` must be >= 1"),
    (lambda: ops.conv2d(X, W, dilation=3), ValueError, r"kernel .* is larger than the padded input"),
    (lambda: ops.conv2d(jnp.ones((5, 5)), W), ValueError, r"`x` must have shape \(N, C, H, W\)"),
    (lambda: ops.conv2d(X, jnp.ones((4, 2, 3))), ValueError, r"`w` must have shape \(C_out"),
    (lambda: ops.conv2d(X, W, jnp.ones(3)), ValueError, r"`b` must have shape \(4,\)"),
    (lambda: ops.conv2d(X.astype(jnp.int32), W), TypeError, r"`x` must have a floating-point dtype"),
    (lambda: ops.conv2d(X, W.astype(jnp.bfloat16)), TypeError, r"same dtype"),
    (lambda: ops.conv2d([1.0], W), TypeError, r"`x` must be an array or Tensor"),
    (lambda: ops.conv1d(jnp.ones((1, 2, 2)), jnp.ones((1, 2, 3))), ValueError, r"larger than"),
    (lambda: ops.max_pool2d(X, 3, padding=2), ValueError, r"at most half of `kernel_size`"),
    (lambda: ops.max_pool2d(X, 6), ValueError, r"kernel .* is larger than the padded input"),
    (lambda: ops.avg_pool2d(X, (2, 2, 2)), TypeError, r"`kernel_size` must be an int or a tuple"),
    (lambda: ops.avg_pool2d(X, 0), ValueError, r"`kernel_size` must be >= 1"),
    (lambda: ops.gelu(X, approximate="fast"), ValueError, r"`approximate` must be 'none' or 'tanh'"),
    (lambda: ops.silu(jnp.arange(3)), TypeError, r"`x` must have a floating-point dtype"),
    (lambda: ops.take(X, jnp.array([0.0])), TypeError, r"`indices` must be an integer array"),
    (lambda: ops.take(X, jnp.array([0]), axis=4), ValueError, r"`axis` 4 is out of range"),
    (lambda: ops.take(X, jnp.array([0]), axis=None), TypeError, r"`axis` must be an int"),
    (lambda: ops.take(X, jnp.array([1, 5, -6]), axis=1), ValueError,
     r"`indices` must lie in \[-2, 2\) .* got \[5, -6\]"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
