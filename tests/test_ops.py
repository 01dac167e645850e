"""Every op of `fdl.ops` and every Tensor operator, against PyTorch float64 (tests/golden/ops.json).

One oracle helper, `check_op(name, fn)` (tinygrad's `helper_test_op`): `fn` is the funcdl half of
golden case `name` (tests/golden/generate_ops.py holds the PyTorch half). It checks the value,
shape and dtype of `fn` on arrays and on Tensors, and the gradient of `sum(fn(*xs) * cotangent)`
with respect to every float input three ways, `fdl.autodiff.grad`, `Tensor.backward` and
`jax.grad`, against PyTorch and against each other; at kinks exactly. The table `OPS` maps each
case to its funcdl expression: one line per case. Then the kinks by hand (no PyTorch), and
hypothesis-drawn broadcast shapes for every binary op.
"""
import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import funcdl as fdl
from funcdl import ops
from funcdl.autodiff import Tensor

GOLDEN_PATH = pathlib.Path(__file__).parent / "golden" / "ops.json"
GOLDEN = {case["name"]: case for case in json.loads(GOLDEN_PATH.read_text())["cases"]}
# Against PyTorch; fdl.autodiff against jax.grad (AGREE); kink cases compare EXACTly.
TOLERANCE = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=1e-5, atol=1e-6)}
AGREE = {"float64": dict(rtol=1e-12, atol=1e-14), "float32": dict(rtol=1e-6, atol=1e-7)}
EXACT = dict(rtol=1e-15, atol=0.0)
# PyTorch's softplus returns x itself above its threshold 20 (gradient exactly 1); funcdl computes
# log1p(exp(-|x|)) + max(x, 0) and its derivative σ(x), which differ from those by up to 2e-9.
LOOSER = {"softplus_large": dict(rtol=3e-9, atol=1e-12)}


def golden_arguments(case):
    """The case's inputs as funcdl receives them, and the positions of the differentiable ones."""
    args = []
    for spec in case["inputs"]:
        array = np.asarray(spec["value"], spec["dtype"])
        args.append(array if spec["kind"] == "numpy" else jnp.asarray(array))
    diff = tuple(i for i, spec in enumerate(case["inputs"]) if spec["kind"] == "diff")
    return args, diff


def assert_close(result, expected, dtype, tolerance, what):
    assert result.dtype == np.dtype(dtype), f"{what}: dtype {result.dtype}, expected {dtype}"
    assert result.shape == expected.shape, f"{what}: shape {result.shape}, expected {expected.shape}"
    np.testing.assert_allclose(np.asarray(result), expected, err_msg=what, **tolerance)


def check_op(name, fn):
    """Golden case `name` through funcdl: values and gradients on both autodiffs vs PyTorch."""
    case = GOLDEN[name]
    if case["dtype"] == "float32":  # GPUs default to TF32 for float32 matmuls; PyTorch ran on a CPU
        with jax.default_matmul_precision("highest"):
            return _check_op(name, fn, case)
    return _check_op(name, fn, case)


def _check_op(name, fn, case):
    dtype = case["dtype"]
    tolerance = LOOSER.get(name, TOLERANCE[dtype])
    # At kinks the derivatives agree exactly; the values there may involve a log (ulps apart).
    to_torch, to_jax = (EXACT, EXACT) if case["exact"] else (tolerance, AGREE[dtype])
    args, diff = golden_arguments(case)
    expected = np.asarray(case["value"], case["value_dtype"])

    # Values: on arrays (plain jax.numpy) and on Tensors (the tape), the same numbers.
    value = fn(*args)
    assert not isinstance(value, Tensor), "fdl.ops on arrays must return arrays"
    assert_close(value, expected, case["value_dtype"], tolerance, f"{name}: value on arrays")
    tensors = [Tensor(a) if i in diff else a for i, a in enumerate(args)]
    out = fn(*tensors)
    if not diff:
        assert not isinstance(out, Tensor)
        return
    assert isinstance(out, Tensor), f"{name}: an op on a Tensor must return a Tensor"
    np.testing.assert_array_equal(out.value, value, err_msg=f"{name}: tape value != array value")

    # Gradients of <fn(xs), cotangent>: fdl.autodiff.grad, Tensor.backward and jax.grad.
    cotangent = jnp.asarray(np.asarray(case["cotangent"], dtype))
    out.backward(cotangent)

    def objective(*xs):
        return ops.sum(fn(*xs) * cotangent)

    by_funcdl = fdl.autodiff.grad(objective, argnums=diff)(*args)
    # jax.grad runs jitted: one compilation costs less than compiling each primitive eagerly.
    by_jax = jax.jit(jax.grad(objective, argnums=diff))(*args)
    for k, i in enumerate(diff):
        torch_grad = np.asarray(case["grads"][k], dtype)
        for path, result in (("fdl.autodiff.grad", by_funcdl[k]), ("Tensor.backward", tensors[i].grad),
                             ("jax.grad", by_jax[k])):
            assert_close(result, torch_grad, dtype, to_torch, f"{name}: {path} of input {i} vs PyTorch")
        assert_close(by_funcdl[k], np.asarray(by_jax[k]), dtype, to_jax, f"{name}: funcdl vs jax.grad, input {i}")
        np.testing.assert_array_equal(tensors[i].grad, by_funcdl[k], err_msg=f"{name}: backward != grad")


# name of the golden case -> the same expression in funcdl. A case `<name>_f32` (float32 inputs)
# uses the expression of `<name>`. Cases with `_rank` broadcast operands of different ranks.
OPS = {
    # ---- unary elementwise -----------------------------------------------------------------------
    "exp": ops.exp,
    "log": ops.log,
    "sqrt": ops.sqrt,
    "square": ops.square,
    "abs": ops.abs,
    "tanh": ops.tanh,
    "sigmoid": ops.sigmoid,
    "relu": ops.relu,
    "leaky_relu": ops.leaky_relu,
    "leaky_relu_slope": lambda x: ops.leaky_relu(x, negative_slope=0.2),
    "softplus": ops.softplus,
    "softplus_large": ops.softplus,
    "negative": lambda x: -x,
    "binary_cross_entropy": ops.binary_cross_entropy,
    "binary_cross_entropy_broadcast": ops.binary_cross_entropy,
    "binary_cross_entropy_rank": ops.binary_cross_entropy,
    # ---- binary elementwise (each also as _broadcast, _rank, _rank_left, see BINARY) ---------------
    "where": ops.where,
    "where_broadcast": ops.where,
    "where_rank": ops.where,
    "where_scalar": lambda c, x: ops.where(c, x, 0.0),
    "clip": lambda x: ops.clip(x, -0.5, 0.7),
    "clip_arrays": ops.clip,
    "clip_broadcast": ops.clip,
    # ---- Python operators with scalars, NumPy and jax arrays on either side ------------------------
    "radd_scalar": lambda x: 1.5 + x,
    "add_scalar": lambda x: x + 1.5,
    "rsub_scalar": lambda x: 2.5 - x,
    "sub_scalar": lambda x: x - 2.5,
    "rmul_scalar": lambda x: 3.0 * x,
    "mul_scalar": lambda x: x * 3.0,
    "rtruediv_scalar": lambda x: 2.0 / x,
    "truediv_scalar": lambda x: x / 4.0,
    "rpow_scalar": lambda x: 2.0 ** x,
    "pow_int": lambda x: x ** 2,
    "pow_int3": lambda x: x ** 3,
    "pow_half": lambda x: x ** 0.5,
    "pow_negative": lambda x: x ** -1.5,
    "numpy_add_left": lambda c, x: c + x,
    "numpy_pow_left": lambda c, x: c ** x,
    "numpy_matmul_right": lambda x, c: x @ c,
    **{f"{kind}_{name}": fn for kind in ("numpy", "jax") for name, fn in {
        "sub_left": lambda c, x: c - x,
        "mul_left": lambda c, x: c * x,
        "div_left": lambda c, x: c / x,
        "matmul_left": lambda c, x: c @ x,
    }.items()},
    "jax_maximum_left": ops.maximum,
    # ---- reductions: axis None / int / negative / tuple, keepdims ----------------------------------
    **{f"{name}{suffix}": (lambda x, reduce=reduce, kw=kw: reduce(x, **kw))
       for name, reduce in {"sum": ops.sum, "mean": ops.mean, "max": ops.max, "logsumexp": ops.logsumexp}.items()
       for suffix, kw in {"": {}, "_axis_neg1": dict(axis=-1), "_axes02": dict(axis=(0, 2)),
                          "_axis1_keepdims": dict(axis=1, keepdims=True),
                          "_keepdims": dict(keepdims=True)}.items()},
    "sum_axis1": lambda x: ops.sum(x, axis=1),
    "logsumexp_large": lambda x: ops.logsumexp(x, axis=-1),
    "softmax": ops.softmax,
    "softmax_axis0": lambda x: ops.softmax(x, axis=0),
    "softmax_large": ops.softmax,
    "log_softmax": ops.log_softmax,
    "log_softmax_axis1": lambda x: ops.log_softmax(x, axis=1),
    "log_softmax_large": ops.log_softmax,
    "method_sum": lambda x: x.sum(),
    "method_sum_axis": lambda x: x.sum(axis=1),
    "method_mean_keepdims": lambda x: x.mean(axis=(0, 2), keepdims=True),
    "method_reshape": lambda x: x.reshape(4, 6),
    "method_reshape_tuple": lambda x: x.reshape((3, -1)),
    "method_T": lambda x: x.T,
    # ---- linear algebra and shapes -----------------------------------------------------------------
    **{f"matmul_{name}": ops.matmul for name in ("2d", "1d_left", "1d_right", "1d_both", "batch", "batch_broadcast",
                                                 "batch_rank", "1d_batch", "batch_1d")},
    "matmul_operator": lambda a, b: a @ b,
    "transpose": ops.transpose,
    "transpose_axes": lambda x: ops.transpose(x, (1, 0, 2)),
    "transpose_axes_cycle": lambda x: ops.transpose(x, [2, 0, 1]),
    "transpose_axes_negative": lambda x: ops.transpose(x, (-1, 0, 1)),
    "reshape_6_4": lambda x: ops.reshape(x, (6, 4)),
    "reshape_m1": lambda x: ops.reshape(x, -1),
    "reshape_2_m1_2": lambda x: ops.reshape(x, [2, -1, 2]),
    "concatenate_axis0": lambda a, b: ops.concatenate([a, b], axis=0),
    "concatenate_axis1_three": lambda a, b, c: ops.concatenate((a, b, c), axis=1),
    "concatenate_axis_neg1": lambda a, b: ops.concatenate([a, b], axis=-1),
    "one_hot": lambda labels: ops.one_hot(labels, 5),
    "one_hot_2d": lambda labels: ops.one_hot(labels, 3),
    # ---- indexing --------------------------------------------------------------------------------
    "getitem_int": lambda x: x[1],
    "getitem_negative": lambda x: x[-1],
    "getitem_slice": lambda x: x[1:3],
    "getitem_step": lambda x: x[:, ::2],
    "getitem_ellipsis": lambda x: x[..., 0],
    "getitem_none": lambda x: x[None, 1],
    "getitem_tuple": lambda x: x[1, 2:],
    "getitem_int_array": lambda x, i: x[i],
    "getitem_repeated": lambda x, i: x[i],
    "getitem_two_arrays": lambda x, i, j: x[i, j],
    "getitem_slice_array": lambda x, i: x[1:, i],
    # ---- kinks (compared exactly) ------------------------------------------------------------------
    "abs_kink": ops.abs,
    "relu_kink": ops.relu,
    "leaky_relu_kink": ops.leaky_relu,
    "leaky_relu_slope_kink": lambda x: ops.leaky_relu(x, 0.2),
    "clip_kink": lambda x: ops.clip(x, -1.0, 1.0),
    "clip_kink_arrays": ops.clip,
    "maximum_tie": ops.maximum,
    "minimum_tie": ops.minimum,
    "max_tie_axis1": lambda x: ops.max(x, axis=1),
    "max_tie_axis0_keepdims": lambda x: ops.max(x, axis=0, keepdims=True),
    "max_tie": ops.max,
    "sqrt_kink": ops.sqrt,
    "binary_cross_entropy_kink": ops.binary_cross_entropy,
    # ---- power at 0 on both paths (ops.power: `**` on jax arrays is jax's own), NaN in max / min
    "pow_zero_exponent_kink": lambda x: ops.power(x, 0.0),
    "pow_self_kink": lambda x: ops.power(x, x),
    "pow_arrays_kink": ops.power,
    "max_nan_axis1": lambda x: ops.max(x, axis=1),
    "min_nan_axis1": lambda x: ops.min(x, axis=1),
    # ---- issue 9: new ops, the Tensor methods, list axes, integer and missing bounds ----------------
    "sin": ops.sin,
    "cos": ops.cos,
    "log1p": ops.log1p,
    "expm1": ops.expm1,
    **{f"{name}{suffix}": (lambda x, reduce=reduce, kw=kw: reduce(x, **kw))
       for name, reduce in {"min": ops.min, "var": ops.var}.items()
       for suffix, kw in {"": {}, "_axis_neg1": dict(axis=-1), "_axes02": dict(axis=[0, 2]),
                          "_axis1_keepdims": dict(axis=1, keepdims=True),
                          "_keepdims": dict(keepdims=True)}.items()},
    "min_tie_axis1": lambda x: ops.min(x, axis=1),
    "var_ddof1": lambda x: ops.var(x, axis=1, ddof=1),
    "stack_axis0": lambda a, b: ops.stack([a, b]),
    "stack_axis_neg1": lambda a, b, c: ops.stack((a, b, c), axis=-1),
    "expand_dims": lambda x: ops.expand_dims(x, 1),
    "squeeze": ops.squeeze,
    "squeeze_axis": lambda x: ops.squeeze(x, axis=-1),
    "astype_float32": lambda x: ops.astype(ops.astype(x, jnp.float32), jnp.float64),
    "stop_gradient": lambda x: x * ops.stop_gradient(x),
    "argmax": lambda x: ops.argmax(x, axis=1),
    "argmin": ops.argmin,
    "method_max_axis": lambda x: x.max(axis=1),
    "method_min": lambda x: x.min(),
    "method_transpose": lambda x: x.transpose(1, 0, 2),
    "method_astype": lambda x: x.astype(jnp.float32).astype(jnp.float64) * 2.0,
    "abs_builtin": lambda x: abs(x),
    "reduction_list_axis": lambda x: ops.sum(x, axis=[0, 2]),
    "clip_int_bounds": lambda x: ops.clip(x, -1, 1),
    "clip_no_upper": lambda x: ops.clip(x, 0.0, None),
    "clip_no_lower": lambda x: ops.clip(x, None, 0.25),
    "binary_cross_entropy_int_target": lambda p: ops.binary_cross_entropy(p, 0),
    # ---- clip with lo > hi (all to hi, as clamp_backward_min_max); bce's d/dy = -logit(p), unclamped
    "clip_lo_above_hi": ops.clip,
    "binary_cross_entropy_target_kink": ops.binary_cross_entropy,
}
BINARY = {"add": lambda x, y: x + y, "subtract": lambda x, y: x - y, "multiply": lambda x, y: x * y,
          "divide": lambda x, y: x / y, "power": lambda x, y: x ** y, "maximum": ops.maximum, "minimum": ops.minimum}
OPS.update({name + variant: fn for name, fn in BINARY.items() for variant in ("", "_broadcast", "_rank")})
OPS.update({name + "_rank_left": BINARY[name] for name in ("subtract", "divide", "power")})
@pytest.mark.slow  # ~5 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("name", list(OPS))
def test_op_matches_torch(name, x64, request):
    if "_rank" in name:
        request.getfixturevalue("allow_rank_promotion")
    if name + "_f32" in GOLDEN:
        check_op(name + "_f32", OPS[name])  # float32 stays float32 under x64
    check_op(name, OPS[name])


def test_every_golden_case_has_a_funcdl_expression():
    assert {name.removesuffix("_f32") for name in GOLDEN} == set(OPS)
    kinks = {name for name, case in GOLDEN.items() if case["exact"]}
    assert {"abs_kink_f32", "relu_kink_f32", "leaky_relu_kink_f32", "clip_kink_arrays_f32", "maximum_tie_f32",
            "minimum_tie_f32", "max_tie_axis1_f32", "sqrt_kink_f32", "binary_cross_entropy_kink_f32"} <= kinks
    assert GOLDEN_PATH.stat().st_size < 500_000


@pytest.mark.parametrize("name", ["matmul_batch_broadcast_f32", "softmax_f32", "binary_cross_entropy_f32",
                                  "max_tie_axis1_f32", "binary_cross_entropy_kink_f32"])
def test_float32_without_x64(name):
    check_op(name, OPS[name.removesuffix("_f32")])


# ---- kinks by hand: the derivatives API.md states, without PyTorch ------------------------------------
def _bce_dp(p, y, dtype):
    """PyTorch's d bce / dp: (p - y) / max(p (1 - p), EPSILON), with `constexpr float EPSILON = 1e-12`
    (aten Loss.cpp): float32(1e-12) = 9.99999996e-13 also for float64, 4e-9 away from the double 1e-12."""
    p, y = np.asarray(p, dtype), np.asarray(y, dtype)
    return (p - y) / np.maximum(p * (1 - p), np.asarray(np.float32(1e-12), dtype))


BCE_TARGET = [1.0, 0.0, 0.5, 0.25]
KINKS = [  # (name, fn, x, derivative of sum(fn(x)) at x, or a function of the dtype giving it)
    ("abs", ops.abs, [-2.0, 0.0, 3.0], [-1.0, 0.0, 1.0]),
    ("relu", ops.relu, [-2.0, 0.0, 3.0], [0.0, 0.0, 1.0]),
    ("leaky_relu", ops.leaky_relu, [-2.0, 0.0, 3.0], [0.01, 0.01, 1.0]),
    ("leaky_relu_0.3", lambda x: ops.leaky_relu(x, negative_slope=0.3), [-2.0, 0.0, 3.0], [0.3, 0.3, 1.0]),
    ("clip", lambda x: ops.clip(x, -1.0, 2.0), [-1.5, -1.0, 0.0, 2.0, 2.5], [0.0, 1.0, 1.0, 1.0, 0.0]),
    ("maximum", lambda x: ops.maximum(x, 1.0), [0.0, 1.0, 2.0], [0.0, 0.5, 1.0]),
    ("minimum", lambda x: ops.minimum(x, 1.0), [0.0, 1.0, 2.0], [1.0, 0.5, 0.0]),
    ("max_k3", ops.max, [2.0, 0.0, 2.0, 2.0], [1 / 3, 0.0, 1 / 3, 1 / 3]),
    ("max_axis", lambda x: ops.max(ops.reshape(x, (2, 2)), axis=1), [1.0, 1.0, 0.0, 3.0], [0.5, 0.5, 0.0, 1.0]),
    ("sqrt", ops.sqrt, [0.0, 4.0], [np.inf, 0.25]),
    ("bce_p0", lambda p: ops.binary_cross_entropy(p, np.asarray(BCE_TARGET, p.dtype)), [0.0] * 4,
     lambda dtype: _bce_dp([0.0] * 4, BCE_TARGET, dtype)),
    ("bce_p1", lambda p: ops.binary_cross_entropy(p, np.asarray(BCE_TARGET, p.dtype)), [1.0] * 4,
     lambda dtype: _bce_dp([1.0] * 4, BCE_TARGET, dtype)),
]


@pytest.mark.parametrize("name, fn, x, expected, dtype", [
    pytest.param(*kink, dtype, id=f"{kink[0]}-{dtype}") for kink in KINKS for dtype in ("float32", "float64")])
def test_kink_derivative(name, fn, x, expected, dtype, x64):
    """Both autodiffs give exactly the derivative API.md states at each kink, in float32 and float64."""
    x = jnp.asarray(x, dtype)
    expected = expected(dtype) if callable(expected) else np.asarray(expected, dtype)
    objective = lambda x: ops.sum(fn(x))  # noqa: E731
    for path, grad in (("fdl.autodiff", fdl.autodiff.grad(objective)), ("jax", jax.jit(jax.grad(objective)))):
        result = grad(x)
        assert result.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(result, expected, err_msg=f"{name} ({path})")


def test_bce_value_is_clamped_at_100(x64):
    p = jnp.array([0.0, 1.0, 0.0, 1.0])
    y = jnp.array([1.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(ops.binary_cross_entropy(p, y), [100.0, 100.0, 0.0, 0.0])
    np.testing.assert_array_equal(ops.binary_cross_entropy(Tensor(p), y).value, [100.0, 100.0, 0.0, 0.0])


# ---- broadcasting: random shape pairs with size-1 dims and different ranks ----------------------------
def _operand(rng, role, shape):
    if role == "positive":
        return rng.uniform(0.5, 2.0, shape)
    if role == "nonzero":
        return rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    if role == "probability":
        return rng.uniform(0.05, 0.95, shape)
    if role == "low":
        return rng.uniform(-1.0, -0.2, shape)
    if role == "high":
        return rng.uniform(0.2, 1.0, shape)
    if role == "condition":
        return rng.uniform(size=shape) < 0.5
    return rng.normal(size=shape)


BROADCASTING = {  # name: (fn, role of each operand)
    "add": (lambda x, y: x + y, ("any", "any")),
    "subtract": (lambda x, y: x - y, ("any", "any")),
    "multiply": (lambda x, y: x * y, ("any", "any")),
    "divide": (lambda x, y: x / y, ("any", "nonzero")),
    "power": (lambda x, y: x ** y, ("positive", "any")),
    "maximum": (ops.maximum, ("any", "any")),
    "minimum": (ops.minimum, ("any", "any")),
    "where": (ops.where, ("condition", "any", "any")),
    "clip": (ops.clip, ("any", "low", "high")),
    "binary_cross_entropy": (ops.binary_cross_entropy, ("probability", "probability")),
}


@pytest.mark.parametrize("name", BROADCASTING)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_broadcasting_gradients_agree_with_jax(name, data, x64, allow_rank_promotion):
    fn, roles = BROADCASTING[name]
    shapes = data.draw(mutually_broadcastable_shapes(num_shapes=len(roles), min_dims=0, max_dims=3, max_side=3))
    rng = np.random.RandomState(data.draw(st.integers(0, 2**31 - 1)))
    args = [jnp.asarray(_operand(rng, role, shape)) for role, shape in zip(roles, shapes.input_shapes)]
    cotangent = jnp.asarray(rng.uniform(-1.0, 1.0, shapes.result_shape))
    diff = tuple(i for i, role in enumerate(roles) if role != "condition")
    objective = lambda *xs: ops.sum(fn(*xs) * cotangent)  # noqa: E731
    # One compilation for both gradients (the tape is built while tracing): eager evaluation would
    # compile every primitive again for every new shape.
    by_funcdl, by_jax = jax.jit(lambda *xs: (fdl.autodiff.grad(objective, argnums=diff)(*xs),
                                             jax.grad(objective, argnums=diff)(*xs)))(*args)
    for k, i in enumerate(diff):
        assert by_funcdl[k].shape == shapes.input_shapes[i]
        np.testing.assert_allclose(by_funcdl[k], by_jax[k], **AGREE["float64"], err_msg=f"{name}: input {i}")


# ---- the committed JSON is what the generator writes -------------------------------------------------
def test_golden_file_is_fresh():
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("generate_ops", GOLDEN_PATH.with_name("generate_ops.py"))
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    fresh = generator.build_cases()["cases"]
    assert [case["name"] for case in fresh] == list(GOLDEN), "rerun tests/golden/generate_ops.py"
    for case in fresh:
        committed = GOLDEN[case["name"]]
        for key in ("dtype", "exact", "value_dtype"):
            assert case[key] == committed[key], (case["name"], key)
        # (as JSON text, so that a NaN input compares equal to itself)
        assert json.dumps([spec["value"] for spec in case["inputs"]]) == json.dumps(
            [spec["value"] for spec in committed["inputs"]]), case["name"]
        assert (case["cotangent"] is None) == (committed["cotangent"] is None), case["name"]
        for key in ("value", "cotangent") if case["cotangent"] is not None else ("value",):
            np.testing.assert_allclose(np.asarray(case[key], float), np.asarray(committed[key], float), rtol=1e-13,
                                       err_msg=f"{case['name']}: {key}")
        for fresh_grad, committed_grad in zip(case["grads"], committed["grads"], strict=True):
            # atol: torch's float64 matmul sums in another order with another thread count
            # (1.8e-13 relative on an entry of 7e-4 seen on a loaded 2-core machine)
            np.testing.assert_allclose(fresh_grad, committed_grad, rtol=1e-13, atol=1e-15,
                                       err_msg=case["name"])
