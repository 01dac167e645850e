"""Second order through funcdl's own tape: `grad(grad(f))`, `hessian`, `hvp`, `jacobian`, `vjp`.

References: `jax.hessian`, `jax.jvp(jax.grad(f))`, `jax.jacrev` and `jax.vjp` (an independent
autodiff: jax differentiates the ops' jax.numpy forwards, never the tape's rules), in float64
to 1e-10 relative; at kinks, PyTorch's values (`tests/golden/second_order.json`, written by
`tests/golden/generate_second_order.py` with torch.autograd.functional).
"""
import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fdl
from funcdl import ops
from funcdl.autodiff import Tensor

GOLDEN = pathlib.Path(__file__).parent / "golden" / "second_order.json"
RTOL = 1e-10


def assert_close(actual, expected, rtol=RTOL, atol=1e-13):
    """Every leaf: max|a - e| <= atol + rtol * max|e| (same tree, same shapes)."""
    a_leaves, a_tree = jax.tree_util.tree_flatten(actual)
    e_leaves, e_tree = jax.tree_util.tree_flatten(expected)
    assert a_tree == e_tree, (a_tree, e_tree)
    for a, e in zip(a_leaves, e_leaves):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape, (a.shape, e.shape)
        scale = float(np.max(np.abs(e))) if e.size else 0.0
        assert float(np.max(np.abs(a - e), initial=0.0)) <= atol + rtol * scale, (a, e)


def _rng():
    return np.random.default_rng(0)


def away(*shape, rng=None):
    """|x| in [0.2, 1.2], random sign: away from every kink at 0."""
    rng = rng or _rng()
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 1.2, shape)


def positive(*shape):
    return _rng().uniform(0.5, 2.0, shape)


def total(y, seed=1):
    """sum(c · y²), c random: a readout whose second derivative is not a constant multiple of
    the identity (so the rules' use of g is checked at second order)."""
    c = np.random.default_rng(seed).uniform(0.5, 1.5, jnp.shape(y))
    return ops.sum(y * y * c)


# name -> (f, args, argnums): every op of the table that is twice differentiable at the point.
def op_cases():
    x, y = away(2, 3), away(2, 3, rng=np.random.default_rng(5))
    distinct = np.arange(24.0).reshape(2, 3, 4)[..., _rng().permutation(4)] / 10 - 1.1
    return {
        "add": (lambda a, b: total(ops.sin(a) + b * b), (x, y), (0, 1)),
        "subtract": (lambda a, b: total(a - ops.cos(b)), (x, y), (0, 1)),
        "multiply": (lambda a, b: total(a * b), (x, y), (0, 1)),
        "divide": (lambda a, b: total(a / (b + 2.0)), (x, y), (0, 1)),
        "negative": (lambda a: total(-a * a), (x,), 0),
        "power_constant": (lambda a: ops.sum(a ** 3 + ops.power(a * a, 1.5)), (x,), 0),
        "power_arrays": (lambda a, b: total(a ** b), (positive(2, 3), y), (0, 1)),
        "power_constant_base": (lambda a: total(1.5 ** a), (x,), 0),
        "matmul": (lambda a, b: total(a @ b), (x, away(3, 4)), (0, 1)),
        "matmul_vector": (lambda v, m: total(v @ m @ v), (away(3), away(3, 3)), (0, 1)),
        "matmul_batch": (lambda a, b: total(a @ b), (away(2, 3, 4), away(4, 2)), (0, 1)),
        "exp": (lambda a: total(ops.exp(a)), (x,), 0),
        "log": (lambda a: total(ops.log(a)), (positive(2, 3),), 0),
        "log1p": (lambda a: total(ops.log1p(a * a)), (x,), 0),
        "expm1": (lambda a: total(ops.expm1(a)), (x,), 0),
        "sin": (lambda a: total(ops.sin(a)), (x,), 0),
        "cos": (lambda a: total(ops.cos(a)), (x,), 0),
        "sqrt": (lambda a: total(ops.sqrt(a)), (positive(2, 3),), 0),
        "square": (lambda a: total(ops.square(a)), (x,), 0),
        "abs": (lambda a: total(ops.abs(a) * a), (x,), 0),
        "tanh": (lambda a: total(ops.tanh(a)), (x,), 0),
        "sigmoid": (lambda a: total(ops.sigmoid(a)), (x,), 0),
        "softplus": (lambda a: total(ops.softplus(a)), (x,), 0),
        "relu": (lambda a: total(ops.relu(a) * a), (x,), 0),
        "leaky_relu": (lambda a: total(ops.leaky_relu(a, 0.1) * a), (x,), 0),
        "maximum": (lambda a, b: total(ops.maximum(a, b) * a), (x, y), (0, 1)),
        "minimum": (lambda a, b: total(ops.minimum(a, b) * b), (x, y), (0, 1)),
        "where": (lambda a, b: total(ops.where(a > 0, a * b, b)), (x, y), (0, 1)),
        "clip": (lambda a, lo, hi: total(ops.clip(a, lo, hi) * a),
                 (np.array([-1.0, 0.1, 2.0]), np.full(3, -0.5), np.full(3, 0.5)), (0, 1, 2)),
        "binary_cross_entropy": (lambda p, t: ops.sum(ops.binary_cross_entropy(ops.sigmoid(p), ops.sigmoid(t))),
                                 (x, y), (0, 1)),
        "sum": (lambda a: total(ops.sum(a, axis=1, keepdims=True) * a) + total(ops.sum(a, axis=0)), (x,), 0),
        "mean": (lambda a: total(ops.mean(a, axis=(0, 2))) + total(ops.mean(a)), (away(2, 3, 4),), 0),
        "var": (lambda a: total(ops.var(a, axis=(0, 2), ddof=1)) + total(ops.var(a)), (away(2, 3, 4),), 0),
        "max": (lambda a: total(ops.max(a, axis=2)) + total(ops.max(a)), (distinct,), 0),
        "min": (lambda a: total(ops.min(a, axis=1, keepdims=True) * a), (distinct,), 0),
        "logsumexp": (lambda a: total(ops.logsumexp(a, axis=-1)) + total(ops.logsumexp(a)), (x,), 0),
        "softmax": (lambda a: total(ops.softmax(a, axis=0)), (x,), 0),
        "log_softmax": (lambda a: total(ops.log_softmax(a)), (x,), 0),
        "reshape_transpose": (lambda a: total(ops.reshape(a, (3, -1)) * ops.transpose(a, (1, 0)) @ a),
                              (away(2, 3),), 0),
        "transpose_axes": (lambda a: total(ops.transpose(a, (2, 0, 1)) * ops.transpose(a, (2, 0, 1))[::-1]),
                           (away(2, 3, 4),), 0),
        "expand_squeeze": (lambda a: total(ops.squeeze(ops.expand_dims(a, 0) * a[None], 0) * a), (x,), 0),
        "astype": (lambda a: total(ops.astype(a, jnp.float64) * a), (x,), 0),
        "getitem": (lambda a: total(a[1:, ::2] * a[:-1, 1:3]) + total(a[np.array([0, 0, 1])] * a[..., 0:1]),
                    (away(3, 4),), 0),
        "concatenate": (lambda a, b: total(ops.concatenate([a, b * a, a], axis=1)), (x, y), (0, 1)),
        "stack": (lambda a, b: total(ops.stack([a * b, b], axis=1) * ops.stack([a, a], axis=1)), (x, y), (0, 1)),
        "conv2d": (lambda a, w, b: total(ops.conv2d(a, w, b, stride=(2, 1), padding=1, dilation=(1, 2))),
                   (away(1, 2, 4, 5), away(2, 2, 3, 2), away(2)), (0, 1, 2)),
        "conv2d_groups": (lambda a, w: total(ops.conv2d(a, w, padding="same", groups=2)),
                          (away(1, 2, 3, 4), away(2, 1, 2, 3)), (0, 1)),
        "conv1d": (lambda a, w: total(ops.conv1d(a, w, stride=2)), (away(2, 7), away(2, 2, 3)), (0, 1)),
        "max_pool2d": (lambda a: total(ops.max_pool2d(a * a, 3, 2, 1)),
                       (_rng().permutation(2 * 5 * 6).reshape(1, 2, 5, 6) / 50.0 + 0.1,), 0),
        "avg_pool2d": (lambda a: total(ops.avg_pool2d(a * a, (2, 3), (1, 2), (1, 1))), (away(1, 2, 4, 5),), 0),
        "erf": (lambda a: total(ops.erf(a)), (x,), 0),
        "gelu": (lambda a: total(ops.gelu(a)), (x,), 0),
        "gelu_tanh": (lambda a: total(ops.gelu(a, approximate="tanh")), (x,), 0),
        "silu": (lambda a: total(ops.silu(a)), (x,), 0),
        "take": (lambda a: total(ops.take(a * a, np.array([[2, 0], [2, 2]]), axis=1)), (away(2, 3, 4),), 0),
    }


OP_CASES = op_cases()


@pytest.mark.slow  # ~21 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_every_op_hessian_matches_jax(name, x64):
    """One jitted program per case (eager dispatch would compile every primitive per shape)."""
    f, args, argnums = OP_CASES[name]
    args = tuple(jnp.asarray(a) for a in args)
    both = jax.jit(lambda *a: (fdl.autodiff.hessian(f, argnums)(*a), jax.hessian(f, argnums)(*a)))
    actual, expected = both(*args)
    assert_close(actual, expected)


# conv2d's and max_pool2d's eager Hessians are the heavy ones (their rules are checked under
# jit above): slow, so the floor run (-m "not slow") leaves them to `make test`.
@pytest.mark.parametrize("name", ["exp", "matmul", pytest.param("conv2d", marks=pytest.mark.slow),
                                  pytest.param("max_pool2d", marks=pytest.mark.slow), "softmax",
                                  "getitem", "var"])
def test_eager_hessian(name, x64):
    f, args, argnums = OP_CASES[name]
    args = tuple(jnp.asarray(a) for a in args)
    assert_close(fdl.autodiff.hessian(f, argnums)(*args), jax.hessian(f, argnums)(*args))


def test_grad_of_grad_has_no_jax_in_between(x64):
    f = lambda x: ops.sin(x) * x * x  # noqa: E731
    x = jnp.asarray(0.7)
    d1 = fdl.autodiff.grad(f)
    d2 = fdl.autodiff.grad(d1)
    d3 = fdl.autodiff.grad(d2)
    s, c = np.sin(0.7), np.cos(0.7)
    np.testing.assert_allclose(d1(x), 2 * 0.7 * s + 0.49 * c, rtol=1e-14)
    np.testing.assert_allclose(d2(x), 2 * s + 4 * 0.7 * c - 0.49 * s, rtol=1e-14)
    np.testing.assert_allclose(d3(x), 6 * c - 6 * 0.7 * s - 0.49 * c, rtol=1e-13)
    np.testing.assert_allclose(jax.jit(d3)(x), 6 * c - 6 * 0.7 * s - 0.49 * c, rtol=1e-13)


def test_perturbation_confusion(x64):
    """d/dx [x · d/dy (x + y)] = 1 (Siskind & Pearlmutter): the inner tape must not take x as
    its own; also with the inner point independent of x."""
    x = jnp.asarray(2.0)
    inner = lambda x: x * fdl.autodiff.grad(lambda y: x + y)(x)  # noqa: E731
    assert float(fdl.autodiff.grad(inner)(x)) == 1.0
    independent = lambda x: fdl.autodiff.grad(lambda y: x * y)(jnp.asarray(3.0))  # = x  # noqa: E731
    assert float(fdl.autodiff.grad(independent)(x)) == 1.0
    both = lambda x: fdl.autodiff.grad(lambda y: x * y * y)(x)  # 2 x y at y = x: 2 x²  # noqa: E731
    assert float(fdl.autodiff.grad(both)(x)) == 8.0


def test_grad_of_a_user_tensor_records_on_its_tape(x64):
    """`grad` of a leaf Tensor returns a Tensor of the user's tape: backward through it gives
    second order (PyTorch's create_graph=True)."""
    x = Tensor(jnp.array([0.5, -1.0]))
    g = fdl.autodiff.grad(lambda x: ops.sum(x ** 3))(x)  # 3 x²
    assert isinstance(g, Tensor)
    ops.sum(g).backward()
    np.testing.assert_allclose(x.grad, 6 * np.array([0.5, -1.0]), rtol=1e-15)


def _mlp_loss(params, x, labels):
    hidden = ops.tanh(x @ params["w1"] + params["b1"])
    logits = ops.gelu(hidden) @ params["w2"] + params["b2"]
    targets = ops.one_hot(labels, 3, dtype=jnp.float64)
    return -ops.mean(ops.sum(targets * ops.log_softmax(logits, axis=1), axis=1))


def _mlp_problem():
    params = {"w1": away(4, 5) / 2, "b1": away(1, 5), "w2": away(5, 3), "b2": away(1, 3)}
    return jax.tree_util.tree_map(jnp.asarray, params), jnp.asarray(away(6, 4)), jnp.array([0, 2, 1, 2, 0, 1])


@pytest.mark.slow  # ~21 s: the slow tier (`make test-slow`, run by CI)
def test_mlp_softmax_cross_entropy_hessian_and_hvp(x64):
    params, x, labels = _mlp_problem()
    assert_close(jax.jit(fdl.autodiff.hessian(_mlp_loss))(params, x, labels), jax.hessian(_mlp_loss)(params, x, labels))
    v = jax.tree_util.tree_map(lambda p: jnp.asarray(away(*p.shape, rng=np.random.default_rng(3))), params)
    f = lambda p: _mlp_loss(p, x, labels)  # noqa: E731
    expected = jax.jvp(jax.grad(f), (params,), (v,))[1]
    assert_close(fdl.autodiff.hvp(f, (params,), (v,)), (expected,))
    assert_close(jax.jit(lambda p, v: fdl.autodiff.hvp(f, (p,), (v,)))(params, v), (expected,))


def _cnn_loss(params, x, labels):
    h = ops.relu(ops.conv2d(x, params["c1"], params["b1"], padding=1))
    h = ops.max_pool2d(h, 2)
    h = ops.avg_pool2d(ops.tanh(ops.conv2d(h, params["c2"], stride=1)), 2, 1)
    logits = ops.reshape(h, (h.shape[0], -1)) @ params["w"]
    return -ops.mean(ops.sum(ops.one_hot(labels, 3, dtype=jnp.float64) * ops.log_softmax(logits), axis=1))


@pytest.mark.slow  # ~58 s: the slow tier (`make test-slow`, run by CI)
def test_small_cnn_hvp_and_hessian(x64):
    rng = np.random.default_rng(7)
    params = {"c1": rng.normal(size=(3, 1, 3, 3)) / 3, "b1": rng.normal(size=(3,)) / 3,
              "c2": rng.normal(size=(2, 3, 2, 2)) / 3, "w": rng.normal(size=(2, 3))}
    params = jax.tree_util.tree_map(jnp.asarray, params)
    x, labels = jnp.asarray(rng.normal(size=(1, 1, 6, 6))), jnp.array([2])
    f = lambda p: _cnn_loss(p, x, labels)  # noqa: E731
    v = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
    expected = jax.jvp(jax.grad(f), (params,), (v,))[1]
    assert_close(fdl.autodiff.hvp(f, (params,), (v,)), (expected,))
    # the Hessian with respect to the second conv's kernel, and to the input (conv's rules of
    # x at second order)
    c2 = lambda c2: f({**params, "c2": c2})  # noqa: E731
    assert_close(jax.jit(fdl.autodiff.hessian(c2))(params["c2"]), jax.hessian(c2)(params["c2"]))
    g = lambda x: _cnn_loss(params, x, labels)  # noqa: E731
    assert_close(jax.jit(fdl.autodiff.hessian(g))(x), jax.hessian(g)(x))


def test_hvp_of_several_primals_matches_jax(x64):
    f = lambda a, b: ops.sum(ops.sin(a @ b) * a[:, :1])  # noqa: E731
    a, b = jnp.asarray(away(2, 3)), jnp.asarray(away(3, 2))
    va, vb = jnp.asarray(away(2, 3, rng=np.random.default_rng(1))), jnp.asarray(away(3, 2, rng=np.random.default_rng(2)))
    expected = jax.jvp(jax.grad(f, (0, 1)), (a, b), (va, vb))[1]
    result = fdl.autodiff.hvp(f, (a, b), (va, vb))
    assert isinstance(result, tuple) and len(result) == 2
    assert_close(result, expected)


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_jacobian_matches_jacrev(x64):
    f = lambda x, w: ops.softmax(x @ w) * ops.sum(x)  # noqa: E731
    x, w = jnp.asarray(away(2, 3)), jnp.asarray(away(3, 4))
    assert_close(fdl.autodiff.jacobian(f)(x, w), jax.jacrev(f)(x, w))
    assert_close(fdl.autodiff.jacobian(f, (0, 1))(x, w), jax.jacrev(f, (0, 1))(x, w))
    p = {"a": x, "b": [w]}
    g = lambda p: ops.tanh(p["a"] @ p["b"][0])  # noqa: E731
    assert_close(fdl.autodiff.jacobian(g)(p), jax.jacrev(g)(p))
    assert_close(jax.jit(fdl.autodiff.jacobian(g))(p), jax.jacrev(g)(p))


def test_vjp_matches_jax(x64):
    f = lambda a, b: {"y": ops.exp(a) @ b, "z": ops.sum(a * a)}  # noqa: E731
    a, b = jnp.asarray(away(2, 3)), jnp.asarray(away(3,))
    out, pull = fdl.autodiff.vjp(f, a, b)
    out_j, pull_j = jax.vjp(f, a, b)
    assert_close(out, out_j)
    cotangent = {"y": jnp.array([1.0, -2.0]), "z": jnp.asarray(0.5)}
    result = pull(cotangent)
    assert isinstance(result, tuple) and len(result) == 2
    assert_close(result, pull_j(cotangent))
    assert_close(pull(cotangent), pull_j(cotangent))  # a second call gives the same


# ---- kinks: PyTorch's first derivatives, and its second derivatives -------------------------
def kink_cases():
    """name -> f(x) with fdl.ops; the generator writes the same functions with torch."""
    return {
        "relu_at_0": lambda x: ops.sum(ops.relu(x) * x),
        "abs_at_0": lambda x: ops.sum(ops.abs(x) * x),
        "leaky_relu_at_0": lambda x: ops.sum(ops.leaky_relu(x, 0.1) * x),
        "max_ties": lambda x: ops.max(x) * ops.max(x),
        "max_axis_ties": lambda x: ops.sum(ops.max(x, axis=1) * ops.max(x, axis=1)),
        "maximum_ties": lambda x: ops.sum(ops.maximum(x, x[::-1]) * x),
        "clip_at_bounds": lambda x: ops.sum(ops.clip(x, -0.5, 0.5) * x),
        "sqrt_at_0": lambda x: ops.sum(ops.sqrt(x * x + 1.0) * x),
        "power_base_0": lambda x: ops.sum(x ** 3),
    }


def test_kinks_match_pytorch(x64):
    golden = json.loads(GOLDEN.read_text())
    cases = kink_cases()
    assert set(golden["cases"]) == set(cases)
    for name, f in cases.items():
        case = golden["cases"][name]
        x = jnp.asarray(case["x"], jnp.float64)
        np.testing.assert_allclose(fdl.autodiff.grad(f)(x), np.asarray(case["grad"], np.float64),
                                   rtol=1e-12, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(fdl.autodiff.hessian(f)(x), np.asarray(case["hessian"], np.float64),
                                   rtol=1e-12, atol=1e-14, err_msg=name)


def test_power_of_zero_second_derivative_is_nan_as_pytorch(x64):
    """d²(0 ** y)/dy² is NaN in PyTorch (its rule multiplies by log 0 inside where's other
    branch at second order): the tape gives NaN there too, and no crash."""
    golden = json.loads(GOLDEN.read_text())["nan_cases"]["power_zero_base"]
    f = lambda x, y: ops.sum(x ** y)  # noqa: E731
    x, y = jnp.asarray(golden["x"]), jnp.asarray(golden["y"])
    hessian = fdl.autodiff.hessian(f, (0, 1))(x, y)
    expected = golden["hessian"]
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(np.asarray(hessian[i][j]), np.asarray(expected[i][j], np.float64),
                                       rtol=1e-12, err_msg=f"block {i}{j}")


# ---- errors ---------------------------------------------------------------------------------
ERRORS = [
    ("hessian of a non-scalar", lambda: fdl.autodiff.hessian(lambda x: x * 2.0)(jnp.ones(3)), ValueError,
     r"`f` passed to hessian must return a scalar \(shape \(\)\), got shape \(3,\)"),
    ("hvp of a non-scalar", lambda: fdl.autodiff.hvp(lambda x: x * 2.0, (jnp.ones(3),), (jnp.ones(3),)),
     ValueError, r"`f` passed to hvp must return a scalar"),
    ("hvp tangents of another structure", lambda: fdl.autodiff.hvp(
        lambda p: ops.sum(p["a"]), ({"a": jnp.ones(2)},), ({"b": jnp.ones(2)},)), ValueError,
     r"`tangents` must have the structure of `primals`"),
    ("hvp tangents of another shape", lambda: fdl.autodiff.hvp(
        lambda x: ops.sum(x * x), (jnp.ones(2),), (jnp.ones(3),)), ValueError,
     r"`tangents` must have the shapes of `primals`: expected \(2,\), got \(3,\)"),
    ("hvp primals not a tuple", lambda: fdl.autodiff.hvp(lambda x: ops.sum(x), jnp.ones(2), (jnp.ones(2),)),
     TypeError, r"`primals` must be a tuple of arguments \(as in jax.jvp\), got ArrayImpl"),
    ("jacobian of a pytree", lambda: fdl.autodiff.jacobian(lambda x: {"a": x * 2.0})(jnp.ones(2)), TypeError,
     r"`f` passed to jacobian must return one array, got a pytree"),
    ("vjp cotangent of another structure", lambda: fdl.autodiff.vjp(lambda x: x * 2.0, jnp.ones(2))[1](
        (jnp.ones(2),)), ValueError, r"`cotangent` must have the structure of the function's output"),
    ("hessian argnums", lambda: fdl.autodiff.hessian(lambda x: ops.sum(x), argnums=1.5)(jnp.ones(2)), TypeError,
     r"`argnums` must be an int or a non-empty tuple of ints"),
]


@pytest.mark.parametrize("what, call, exception, match", ERRORS, ids=[e[0] for e in ERRORS])
def test_error(what, call, exception, match):
    with pytest.raises(exception, match=match):
        call()


@pytest.mark.slow  # ~14 s: the slow tier (`make test-slow`, run by CI)
def test_every_python_block_of_the_guide_runs_alone():
    guide = pathlib.Path(__file__).resolve().parents[1] / "docs" / "guides" / "verifying-gradients.md"
    text = guide.read_text()  # the second-order section's blocks (the others run in test_readme)
    blocks = re.findall(r"```python\n(.*?)```", text[text.index("## Second order"):], re.S)
    assert len(blocks) >= 4
    for code in blocks:
        exec(compile(code, str(guide), "exec"), {"__name__": "__guide__"})
