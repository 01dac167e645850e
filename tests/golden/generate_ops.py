"""PyTorch golden values for `fdl.ops` and the Tensor operators: `.venv/bin/python tests/golden/generate_ops.py`.

Writes `tests/golden/ops.json`: one entry per case with the inputs themselves (so the tests need
no RNG agreement), the cotangent, PyTorch's value and the gradient of `(value * cotangent).sum()`
with respect to every differentiable input. `tests/test_ops.py` writes the same expression in
funcdl and checks it with `check_op(name, fn)`; this file is the PyTorch half (micrograd's
"each expression twice"). Kink cases (`exact`) use a cotangent of ones, so that every
autodiff multiplies the same two numbers, and are compared exactly.

Input kinds, as the funcdl side receives them:
  diff   a float array, differentiated (a Tensor on the tape, a traced array under jax.grad)
  numpy  a float constant passed as a NumPy array (it stands on the left of an operator)
  jax    a float constant passed as a jax array
  int    an integer array (indices, labels); bool: a boolean array (a `where` condition)

Needs torch (the `bench` extra), imported inside `build_cases` so that collecting this module
(pytest's --doctest-modules) works without it. `tests/test_ops.py` imports `build_cases` to check
that the committed JSON is not stale.
"""
import json
import pathlib
import zlib
from typing import Callable, NamedTuple

import numpy as np

OUTPUT = pathlib.Path(__file__).with_name("ops.json")


class Input(NamedTuple):
    kind: str  # diff | numpy | jax | int | bool
    make: Callable  # (rng: np.random.RandomState) -> np.ndarray (float64, rounded later)


def randn(*shape, scale=1.0, kind="diff"):
    return Input(kind, lambda rng: rng.normal(0.0, scale, shape))


def uniform(low, high, *shape, kind="diff"):
    return Input(kind, lambda rng: rng.uniform(low, high, shape))


def signed_uniform(low, high, *shape, kind="diff"):
    """Magnitudes in [low, high), random signs: away from 0 (divisors)."""
    return Input(kind, lambda rng: rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape))


def fixed(values, kind="diff"):
    return Input(kind, lambda rng: np.asarray(values, np.float64))


def ints(values):
    return Input("int", lambda rng: np.asarray(values, np.int64))


def bools(*shape):
    return Input("bool", lambda rng: rng.uniform(size=shape) < 0.5)


class Case(NamedTuple):
    name: str
    torch_fn: Callable
    inputs: tuple
    dtype: str = "float64"
    exact: bool = False


def op_cases(torch, F):
    """The PyTorch half of every case; the funcdl half is `OPS[name]` in tests/test_ops.py."""
    cases = []

    def case(name, torch_fn, *inputs, float32=False, exact=False):
        cases.append(Case(name, torch_fn, inputs, "float64", exact))
        if float32:
            cases.append(Case(name + "_f32", torch_fn, inputs, "float32", exact))

    def reductions(name, reduce, float32=False):
        """axis None / int / negative / tuple, with and without keepdims, on x of shape (2, 3, 4)."""
        x = randn(2, 3, 4)
        case(f"{name}", lambda x: reduce(x, (0, 1, 2), False), x)
        case(f"{name}_axis_neg1", lambda x: reduce(x, -1, False), x)
        case(f"{name}_axes02", lambda x: reduce(x, (0, 2), False), x, float32=float32)
        case(f"{name}_axis1_keepdims", lambda x: reduce(x, 1, True), x)
        case(f"{name}_keepdims", lambda x: reduce(x, (0, 1, 2), True), x)

    # ---- unary elementwise -------------------------------------------------------------------
    case("exp", torch.exp, randn(2, 3), float32=True)
    case("log", torch.log, uniform(0.1, 3.0, 2, 3))
    case("sqrt", torch.sqrt, uniform(0.1, 3.0, 2, 3))
    case("square", torch.square, randn(2, 3))
    case("abs", torch.abs, randn(2, 3))
    case("tanh", torch.tanh, randn(2, 3, scale=2.0))
    case("sigmoid", torch.sigmoid, randn(2, 3, scale=3.0))
    case("relu", torch.relu, randn(2, 3))
    case("leaky_relu", lambda x: F.leaky_relu(x, 0.01), randn(2, 3))
    case("leaky_relu_slope", lambda x: F.leaky_relu(x, 0.2), randn(2, 3))
    case("softplus", F.softplus, randn(2, 3, scale=3.0))
    # PyTorch returns x itself above its threshold 20 (gradient 1); funcdl's σ(x) is 2e-9 below 1 at 20.
    case("softplus_large", F.softplus, fixed([-40.0, -25.0, -20.5, -1.0, 19.5, 20.0, 20.5, 25.0, 40.0]))
    case("negative", lambda x: -x, randn(2, 3))
    case("binary_cross_entropy", lambda p, y: F.binary_cross_entropy(p, y, reduction="none"),
         uniform(0.02, 0.98, 2, 3), uniform(0.0, 1.0, 2, 3), float32=True)

    # ---- binary elementwise: same shape, size-1 broadcasting, different ranks ---------------------
    binary = {
        "add": (lambda x, y: x + y, randn, randn),
        "subtract": (lambda x, y: x - y, randn, randn),
        "multiply": (lambda x, y: x * y, randn, randn),
        "divide": (lambda x, y: x / y, randn, lambda *s: signed_uniform(0.5, 2.0, *s)),
        "power": (lambda x, y: x ** y, lambda *s: uniform(0.5, 2.0, *s), randn),
        "maximum": (torch.maximum, randn, randn),
        "minimum": (torch.minimum, randn, randn),
    }
    for name, (fn, left, right) in binary.items():
        case(name, fn, left(2, 3), right(2, 3), float32=name == "power")
        case(f"{name}_broadcast", fn, left(2, 1, 4), right(1, 3, 4), float32=name == "multiply")
        case(f"{name}_rank", fn, left(3, 4), right(4))
        if name in ("subtract", "divide", "power"):  # the lower-rank operand on the left
            case(f"{name}_rank_left", fn, left(4), right(2, 1, 4))
    case("where", torch.where, bools(2, 3), randn(2, 3), randn(2, 3))
    case("where_broadcast", torch.where, bools(2, 1, 4), randn(1, 3, 4), randn(2, 3, 1))
    case("where_rank", torch.where, bools(3, 4), randn(4), randn(3, 1))
    case("where_scalar", lambda c, x: torch.where(c, x, 0.0), bools(2, 3), randn(2, 3))

    def bce_broadcast(p, y):
        p, y = torch.broadcast_tensors(p, y)  # PyTorch's BCE does not broadcast its target
        return F.binary_cross_entropy(p, y, reduction="none")

    case("binary_cross_entropy_broadcast", bce_broadcast, uniform(0.05, 0.95, 2, 1, 4), uniform(0.0, 1.0, 1, 3, 4))
    case("binary_cross_entropy_rank", bce_broadcast, uniform(0.05, 0.95, 3, 4), uniform(0.0, 1.0, 4))
    case("clip", lambda x: torch.clamp(x, -0.5, 0.7), randn(2, 3))
    case("clip_arrays", torch.clamp, randn(2, 3), uniform(-1.0, -0.2, 2, 3), uniform(0.2, 1.0, 2, 3))
    case("clip_broadcast", torch.clamp, randn(2, 3, 4), uniform(-1.0, -0.2, 1, 3, 1), uniform(0.2, 1.0, 2, 1, 4))

    # ---- Python operators with a Python scalar, a NumPy array or a jax array on either side -------
    case("radd_scalar", lambda x: 1.5 + x, randn(2, 3))
    case("add_scalar", lambda x: x + 1.5, randn(2, 3))
    case("rsub_scalar", lambda x: 2.5 - x, randn(2, 3))
    case("sub_scalar", lambda x: x - 2.5, randn(2, 3))
    case("rmul_scalar", lambda x: 3.0 * x, randn(2, 3))
    case("mul_scalar", lambda x: x * 3.0, randn(2, 3))
    case("rtruediv_scalar", lambda x: 2.0 / x, signed_uniform(0.5, 2.0, 2, 3))
    case("truediv_scalar", lambda x: x / 4.0, randn(2, 3))
    case("rpow_scalar", lambda x: 2.0 ** x, randn(2, 3))
    case("pow_int", lambda x: x ** 2, randn(2, 3))
    case("pow_int3", lambda x: x ** 3, randn(2, 3))
    case("pow_half", lambda x: x ** 0.5, uniform(0.1, 3.0, 2, 3))
    case("pow_negative", lambda x: x ** -1.5, uniform(0.5, 3.0, 2, 3))
    case("numpy_add_left", lambda c, x: c + x, randn(2, 3, kind="numpy"), randn(2, 3))
    case("numpy_pow_left", lambda c, x: c ** x, uniform(0.5, 2.0, 2, 3, kind="numpy"), randn(2, 3))
    case("numpy_matmul_right", lambda x, c: x @ c, randn(2, 3), randn(3, 4, kind="numpy"))
    for kind in ("numpy", "jax"):
        case(f"{kind}_sub_left", lambda c, x: c - x, randn(2, 3, kind=kind), randn(2, 3))
        case(f"{kind}_mul_left", lambda c, x: c * x, randn(2, 3, kind=kind), randn(2, 3))
        case(f"{kind}_div_left", lambda c, x: c / x, randn(2, 3, kind=kind), signed_uniform(0.5, 2.0, 2, 3))
        case(f"{kind}_matmul_left", lambda c, x: c @ x, randn(2, 3, kind=kind), randn(3, 4))
    case("jax_maximum_left", torch.maximum, randn(2, 3, kind="jax"), randn(2, 3))

    # ---- reductions ------------------------------------------------------------------------------
    reductions("sum", lambda x, dim, keepdim: torch.sum(x, dim=dim, keepdim=keepdim), float32=True)
    case("sum_axis1", lambda x: torch.sum(x, dim=1), randn(2, 3, 4))
    reductions("mean", lambda x, dim, keepdim: torch.mean(x, dim=dim, keepdim=keepdim))
    reductions("max", lambda x, dim, keepdim: torch.amax(x, dim=dim, keepdim=keepdim))
    reductions("logsumexp", lambda x, dim, keepdim: torch.logsumexp(x, dim=dim, keepdim=keepdim))
    large = fixed([[1e3, 1e3 - 1.0, -1e3], [-800.0, -801.0, -802.0]])  # exp overflows and underflows
    case("logsumexp_large", lambda x: torch.logsumexp(x, dim=-1), large)
    x = randn(2, 3, 4, scale=2.0)
    case("softmax", lambda x: torch.softmax(x, dim=-1), x, float32=True)
    case("softmax_axis0", lambda x: torch.softmax(x, dim=0), x)
    case("log_softmax", lambda x: torch.log_softmax(x, dim=-1), x)
    case("log_softmax_axis1", lambda x: torch.log_softmax(x, dim=1), x)
    case("softmax_large", lambda x: torch.softmax(x, dim=-1), large)
    case("log_softmax_large", lambda x: torch.log_softmax(x, dim=-1), large)
    # The methods on Tensor (and on jax arrays): .sum() .mean() .reshape() .T
    case("method_sum", lambda x: x.sum(), randn(2, 3))
    case("method_sum_axis", lambda x: x.sum(dim=1), randn(2, 3))
    case("method_mean_keepdims", lambda x: x.mean(dim=(0, 2), keepdim=True), randn(2, 3, 4))
    case("method_reshape", lambda x: x.reshape(4, 6), randn(2, 3, 4))
    case("method_reshape_tuple", lambda x: x.reshape((3, -1)), randn(2, 3, 4))
    case("method_T", lambda x: x.T, randn(2, 3))

    # ---- linear algebra and shapes ---------------------------------------------------------------
    matmul_shapes = {
        "2d": ((3, 4), (4, 5)), "1d_left": ((4,), (4, 5)), "1d_right": ((3, 4), (4,)), "1d_both": ((4,), (4,)),
        "batch": ((2, 3, 4), (2, 4, 5)), "batch_broadcast": ((2, 1, 3, 4), (1, 3, 4, 2)),
        "batch_rank": ((3, 4), (2, 4, 5)), "1d_batch": ((4,), (2, 4, 5)), "batch_1d": ((2, 3, 4), (4,)),
    }
    for name, (a, b) in matmul_shapes.items():
        case(f"matmul_{name}", torch.matmul, randn(*a), randn(*b), float32=name == "batch_broadcast")
    case("matmul_operator", lambda a, b: a @ b, randn(2, 3, 4), randn(4, 2))
    case("transpose", lambda x: x.permute(2, 1, 0), randn(2, 3, 4))
    case("transpose_axes", lambda x: x.permute(1, 0, 2), randn(2, 3, 4))
    case("transpose_axes_cycle", lambda x: x.permute(2, 0, 1), randn(2, 3, 4))
    case("transpose_axes_negative", lambda x: x.permute(-1, 0, 1), randn(2, 3, 4))
    for shape in ((6, 4), (-1,), (2, -1, 2)):
        name = "_".join(str(n).replace("-", "m") for n in shape)
        case(f"reshape_{name}", lambda x, shape=shape: x.reshape(shape), randn(2, 3, 4))
    case("concatenate_axis0", lambda a, b: torch.cat([a, b], 0), randn(2, 3), randn(1, 3))
    case("concatenate_axis1_three", lambda a, b, c: torch.cat([a, b, c], 1), randn(2, 3), randn(2, 2), randn(2, 1))
    case("concatenate_axis_neg1", lambda a, b: torch.cat([a, b], -1), randn(2, 3, 1), randn(2, 3, 2))
    case("one_hot", lambda labels: F.one_hot(labels, 5).float(), ints([0, 3, 1, 1, 4]))
    case("one_hot_2d", lambda labels: F.one_hot(labels, 3).float(), ints([[0, 2], [1, 1]]))

    # ---- indexing: ints, slices, steps, ellipsis, None, integer arrays with repeats ----------------
    case("getitem_int", lambda x: x[1], randn(3, 4))
    case("getitem_negative", lambda x: x[-1], randn(3, 4))
    case("getitem_slice", lambda x: x[1:3], randn(4, 3))
    case("getitem_step", lambda x: x[:, ::2], randn(3, 5))
    case("getitem_ellipsis", lambda x: x[..., 0], randn(2, 3, 4))
    case("getitem_none", lambda x: x[None, 1], randn(3, 4))
    case("getitem_tuple", lambda x: x[1, 2:], randn(3, 4))
    case("getitem_int_array", lambda x, i: x[i], randn(5, 2), ints([4, 0, 2]))
    case("getitem_repeated", lambda x, i: x[i], randn(4, 3), ints([0, 2, 0, 0, 3]), float32=True)
    case("getitem_two_arrays", lambda x, i, j: x[i, j], randn(3, 4), ints([0, 1, 1, 2]), ints([2, 3, 3, 0]))
    case("getitem_slice_array", lambda x, i: x[1:, i], randn(3, 4), ints([3, 3, 1]))

    # ---- kinks: PyTorch's derivative at the points where the function is not differentiable ---------
    kink = dict(float32=True, exact=True)
    case("abs_kink", torch.abs, fixed([-1.5, 0.0, 0.0, 2.0]), **kink)
    case("relu_kink", torch.relu, fixed([-1.0, 0.0, 0.5]), **kink)
    case("leaky_relu_kink", lambda x: F.leaky_relu(x, 0.01), fixed([-1.0, 0.0, 0.5]), **kink)
    case("leaky_relu_slope_kink", lambda x: F.leaky_relu(x, 0.2), fixed([-1.0, 0.0, 0.5]), **kink)
    clip_points = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]
    case("clip_kink", lambda x: torch.clamp(x, -1.0, 1.0), fixed(clip_points), **kink)
    case("clip_kink_arrays", torch.clamp, fixed(clip_points), fixed([-1.0] * 7), fixed([1.0] * 7), **kink)
    case("maximum_tie", torch.maximum, fixed([1.0, 2.0, 3.0, -1.0, 0.0]), fixed([1.0, 1.0, 3.0, 0.0, 0.0]), **kink)
    case("minimum_tie", torch.minimum, fixed([1.0, 2.0, 3.0, -1.0, 0.0]), fixed([1.0, 1.0, 3.0, 0.0, 0.0]), **kink)
    ties = fixed([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [-1.0, 5.0, 0.0, 5.0]])
    case("max_tie_axis1", lambda x: torch.amax(x, dim=1), ties, **kink)
    case("max_tie_axis0_keepdims", lambda x: torch.amax(x, dim=0, keepdim=True), ties, **kink)
    case("max_tie", lambda x: torch.amax(x, dim=(0, 1)), ties, **kink)
    case("sqrt_kink", torch.sqrt, fixed([0.0, 1.0, 4.0, 0.25]), **kink)
    # p = 0 and 1: the logs are clamped at -100 (value 100 or 0), d/dp = (p - y) / max(p (1 - p), 1e-12).
    edge_p = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1e-45, 0.5, 0.25]
    edge_y = [1.0, 0.0, 0.0, 1.0, 0.25, 0.75, 1.0, 0.5, 0.0]
    case("binary_cross_entropy_kink", lambda p, y: F.binary_cross_entropy(p, y, reduction="none"),
         fixed(edge_p), fixed(edge_y, kind="numpy"), **kink)

    # power at x = 0 (PyTorch: d(x ** 0)/dx = 0, d(x ** x)/dx = 0 there); max/min over NaN: NaN
    zero_points = fixed([0.0, 0.5, 1.0, 0.0])
    case("pow_zero_exponent_kink", lambda x: x ** 0.0, zero_points, **kink)
    case("pow_self_kink", lambda x: x ** x, zero_points, exact=True)
    case("pow_arrays_kink", lambda x, y: x ** y, fixed([0.0, 0.0, 0.0, 2.0]), fixed([0.0, 1.0, 2.5, 0.0]), exact=True)
    with_nan = fixed([[1.0, float("nan"), 3.0], [0.5, 2.0, -1.0]])
    case("max_nan_axis1", lambda x: torch.amax(x, dim=1), with_nan, exact=True)
    case("min_nan_axis1", lambda x: torch.amin(x, dim=1), with_nan, exact=True)

    # ---- issue 9: the ops added to fdl.ops and the Tensor methods --------------------------------
    case("sin", torch.sin, randn(2, 3, scale=2.0), float32=True)
    case("cos", torch.cos, randn(2, 3, scale=2.0))
    case("log1p", torch.log1p, uniform(-0.9, 3.0, 2, 3))
    case("expm1", torch.expm1, randn(2, 3), float32=True)
    reductions("min", lambda x, dim, keepdim: torch.amin(x, dim=dim, keepdim=keepdim))
    case("min_tie_axis1", lambda x: torch.amin(x, dim=1), fixed([[1.0, 0.0, 0.0, 3.0], [2.0, 2.0, 2.0, 2.0]]),
         **kink)
    reductions("var", lambda x, dim, keepdim: torch.var(x, dim=dim, keepdim=keepdim, correction=0), float32=True)
    case("var_ddof1", lambda x: torch.var(x, dim=1, correction=1), randn(2, 3, 4))
    case("stack_axis0", lambda a, b: torch.stack([a, b], 0), randn(2, 3), randn(2, 3))
    case("stack_axis_neg1", lambda a, b, c: torch.stack([a, b, c], -1), randn(2, 3), randn(2, 3), randn(2, 3))
    case("expand_dims", lambda x: torch.unsqueeze(x, 1), randn(2, 3))
    case("squeeze", lambda x: torch.squeeze(x), randn(2, 1, 3, 1))
    case("squeeze_axis", lambda x: torch.squeeze(x, -1), randn(2, 1, 3, 1))
    case("astype_float32", lambda x: x.to(torch.float32).to(torch.float64), randn(2, 3))
    case("stop_gradient", lambda x: x * x.detach(), randn(2, 3))
    case("argmax", lambda x: torch.argmax(x, dim=1), randn(3, 4, kind="jax"))
    case("argmin", lambda x: torch.argmin(x), randn(3, 4, kind="jax"))
    case("method_max_axis", lambda x: x.amax(dim=1), randn(2, 3, 4))
    case("method_min", lambda x: x.amin(), randn(2, 3))
    case("method_transpose", lambda x: x.permute(1, 0, 2), randn(2, 3, 4))
    case("method_astype", lambda x: x.to(torch.float32).to(torch.float64) * 2.0, randn(2, 3))
    case("abs_builtin", lambda x: abs(x), randn(2, 3))
    case("reduction_list_axis", lambda x: torch.sum(x, dim=(0, 2)), randn(2, 3, 4))
    case("clip_int_bounds", lambda x: torch.clamp(x, -1, 1), randn(2, 3, scale=2.0))
    case("clip_no_upper", lambda x: torch.clamp(x, min=0.0), randn(2, 3))
    case("clip_no_lower", lambda x: torch.clamp(x, max=0.25), randn(2, 3))
    case("binary_cross_entropy_int_target", lambda p: F.binary_cross_entropy(p, torch.zeros_like(p),
                                                                               reduction="none"),
         uniform(0.05, 0.95, 2, 3))

    # ---- where funcdl is known to differ from PyTorch (xfail tests in tests/test_ops.py) -------------
    # clip with lo > hi: the value is hi everywhere, so PyTorch gives the whole gradient to hi.
    case("clip_lo_above_hi", torch.clamp, fixed([-1.0, 0.0, 0.3, 0.6, 2.0]), fixed([0.5] * 5), fixed([0.2] * 5),
         exact=True)
    # d/dy at p = 0 and 1: PyTorch's -logit(p) is infinite there.
    case("binary_cross_entropy_target_kink", lambda p, y: F.binary_cross_entropy(p, y, reduction="none"),
         fixed([0.0, 1.0, 0.0, 1.0, 0.5]), fixed([1.0, 0.0, 0.0, 1.0, 0.5]), exact=True)
    return cases


def _round(array, dtype):
    """Values exactly representable in `dtype`, as nested Python lists (exact in JSON)."""
    return np.asarray(array, dtype=dtype).tolist()


def run_case(torch, case):
    """Run one case in PyTorch; a dict with the inputs, cotangent, value and input gradients."""
    rng = np.random.RandomState(zlib.crc32(case.name.encode()))
    torch_dtype = getattr(torch, case.dtype)
    inputs, tensors = [], []
    for spec in case.inputs:
        array = spec.make(rng)
        if spec.kind in ("diff", "numpy", "jax"):
            array = np.asarray(array, case.dtype)
            tensor = torch.tensor(array, dtype=torch_dtype, requires_grad=spec.kind == "diff")
        else:
            tensor = torch.tensor(array)
        inputs.append({"kind": spec.kind, "dtype": case.dtype if spec.kind in ("diff", "numpy", "jax") else
                       str(array.dtype), "value": array.tolist()})
        tensors.append(tensor)
    value = case.torch_fn(*tensors)
    differentiated = [t for t, spec in zip(tensors, case.inputs) if spec.kind == "diff"]
    cotangent = None
    if differentiated:
        shape = tuple(value.shape)
        cotangent = np.ones(shape) if case.exact else rng.uniform(-1.0, 1.0, shape)
        cotangent = _round(cotangent, case.dtype)
        (value * torch.tensor(cotangent, dtype=torch_dtype)).sum().backward()
    return {
        "name": case.name,
        "dtype": case.dtype,
        "exact": case.exact,
        "inputs": inputs,
        "cotangent": cotangent,
        "value": value.detach().tolist(),
        "value_dtype": str(value.dtype).removeprefix("torch."),
        "grads": [(t.grad if t.grad is not None else torch.zeros_like(t)).tolist() for t in differentiated],
    }


def build_cases():
    """All golden cases, deterministic (each case draws from its own RandomState(crc32(name)))."""
    import torch
    import torch.nn.functional as F

    cases = op_cases(torch, F)
    names = [case.name for case in cases]
    if len(set(names)) != len(names):
        raise RuntimeError("duplicate golden case names")
    return {"torch_version": torch.__version__, "cases": [run_case(torch, case) for case in cases]}


def main():
    golden = build_cases()
    OUTPUT.write_text(json.dumps(golden, separators=(",", ":")))
    print(f"wrote {len(golden['cases'])} cases to {OUTPUT} ({OUTPUT.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
