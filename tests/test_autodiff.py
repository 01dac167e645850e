"""fdl.autodiff: the Tensor API, `grad` / `value_and_grad` against `jax.grad`, every error, the deep
chain, jit, higher order, pytrees, has_aux, argnums, and seed 000 (the adaptive linear unit) written
in the seed's graph style. Each gradient is computed twice, by funcdl and by jax (micrograd's
test_engine habit); the per-op checks against PyTorch are in tests/test_ops.py.
"""
import os
import pathlib
import subprocess
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fdl
from funcdl import ops
from funcdl.autodiff import Tensor

FUNCDL_PARENT = pathlib.Path(fdl.__file__).parents[1]  # the funcdl under test, for subprocesses


def assert_trees_equal(result, expected, rtol=1e-12, atol=1e-14):
    """Same pytree structure; each leaf has the same shape, dtype and (to rtol) values."""
    assert jax.tree_util.tree_structure(result) == jax.tree_util.tree_structure(expected)
    for got, want in zip(jax.tree_util.tree_leaves(result), jax.tree_util.tree_leaves(expected), strict=True):
        assert isinstance(got, jax.Array) and not isinstance(got, Tensor)
        assert got.shape == jnp.shape(want) and got.dtype == jnp.result_type(want)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


# ---- the Tensor API ------------------------------------------------------------------------------
def test_tensor_leaf_attributes():
    value = jnp.arange(6.0).reshape(2, 3)
    x = Tensor(value)
    assert x.value is value and x.grad is None
    assert (x.shape, x.ndim, x.dtype, len(x)) == ((2, 3), 2, jnp.float32, 2)
    assert isinstance(x.T, Tensor) and x.T.shape == (3, 2)
    np.testing.assert_array_equal(x.T.value, value.T)
    assert isinstance(x[0], Tensor) and x[0].shape == (3,)


def test_tensor_accepts_numpy_arrays_and_python_floats(x64):
    assert isinstance(Tensor(np.ones(3)).value, jax.Array) and Tensor(np.ones(3)).dtype == jnp.float64
    assert Tensor(np.ones(3, np.float32)).dtype == jnp.float32
    assert Tensor(2.5).shape == () and float(Tensor(2.5).value) == 2.5


def test_backward_fills_grad_of_every_leaf_and_accumulates():
    x, w = Tensor(jnp.array([1.0, -2.0, 3.0])), Tensor(jnp.array([0.5, 0.25, -1.0]))
    loss = ops.sum(x * w + x * x)
    loss.backward()
    np.testing.assert_allclose(x.grad, w.value + 2 * x.value)
    np.testing.assert_allclose(w.grad, x.value)
    ops.sum(x * 3.0).backward()  # a second backward adds to .grad, as in PyTorch
    np.testing.assert_allclose(x.grad, w.value + 2 * x.value + 3.0)
    np.testing.assert_allclose(w.grad, x.value)  # w was not reached this time
    x.grad = None
    ops.sum(x * 3.0).backward()
    np.testing.assert_allclose(x.grad, jnp.full(3, 3.0))


def test_backward_twice_on_the_same_graph_doubles_grad():
    x = Tensor(jnp.array([1.0, 2.0]))
    y = ops.sum(ops.square(x))
    y.backward()
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * (2 * x.value))


def test_backward_with_a_gradient_for_a_non_scalar():
    x = Tensor(jnp.array([1.0, 2.0, 3.0]))
    unreached = Tensor(jnp.array(1.0))
    (x * x).backward(jnp.array([1.0, 0.0, -2.0]))
    np.testing.assert_allclose(x.grad, [2.0, 0.0, -12.0])
    assert unreached.grad is None
    assert x.grad.dtype == x.dtype


def test_comparisons_return_plain_boolean_arrays():
    x, y = Tensor(jnp.array([1.0, 2.0, 3.0])), Tensor(jnp.array([3.0, 2.0, 1.0]))
    for mask, expected in ((x < 2.0, [True, False, False]), (x <= 2.0, [True, True, False]),
                           (x > y, [False, False, True]), (x >= y, [False, True, True]),
                           (2.0 < x, [False, False, True]), (np.full(3, 2.0) >= x, [True, True, False]),
                           (x < jnp.full(3, 2.5), [True, True, False])):
        assert isinstance(mask, jax.Array) and not isinstance(mask, Tensor) and mask.dtype == jnp.bool_
        np.testing.assert_array_equal(mask, expected)
    # a mask from a Tensor drives `where` without a gradient of its own
    np.testing.assert_allclose(fdl.autodiff.grad(lambda v: ops.sum(ops.where(v > 1.5, v, 0.0)))(x.value),
                               [0.0, 1.0, 1.0])


def test_equality_gives_masks_and_tensors_hash_by_identity():
    a, b = Tensor(jnp.array([1.0, 2.0])), Tensor(jnp.array([1.0, 3.0]))
    for mask, expected in ((a == b, [True, False]), (a != b, [False, True]), (a == 2.0, [False, True]),
                           (np.array([1.0, 0.0]) == a, [True, False]), (jnp.array([1.0, 0.0]) != a, [False, True])):
        assert isinstance(mask, jax.Array) and not isinstance(mask, Tensor) and mask.dtype == jnp.bool_
        np.testing.assert_array_equal(mask, expected)
    assert {a: "a", b: "b"}[b] == "b" and len({a, b, a}) == 2 and hash(a) == hash(a) != hash(b)


def test_masks_from_equality_mean_the_same_in_both_autodiffs(x64):
    """Issue 9.1: `where(p == 0, ...)` and `x * (x != 0)` must not compare identities."""
    p = jnp.array([0.0, 0.25, 0.5, 0.0])
    entropy = lambda p: ops.sum(ops.where(p == 0, 0.0, p * ops.log(ops.where(p == 0, 1.0, p))))
    masked = lambda x: ops.sum(x * (x != 0).astype(x.dtype) * 3.0 + ops.where(x == 0.25, x, 0.0))
    for f in (entropy, masked):
        np.testing.assert_allclose(fdl.autodiff.value_and_grad(f)(p)[0], jax.value_and_grad(f)(p)[0], rtol=1e-15)
        np.testing.assert_allclose(fdl.autodiff.grad(f)(p), jax.grad(f)(p), rtol=1e-15)
    assert np.isfinite(fdl.autodiff.value_and_grad(entropy)(p)[0])


def test_numpy_and_jax_arrays_on_the_left_stay_on_the_tape():
    assert Tensor.__array_ufunc__ is None and not hasattr(Tensor, "__array__")
    x = Tensor(jnp.array([[1.0, 2.0], [3.0, 4.0]]))
    left = np.array([[1.0, -1.0], [0.5, 2.0]], np.float32)
    for result in (left * x, left @ x, left - x, left / x, left ** x, jnp.asarray(left) * x, jnp.asarray(left) @ x):
        assert isinstance(result, Tensor)
    ops.sum(left @ x + jnp.asarray(left) * x).backward()
    np.testing.assert_allclose(x.grad, left.sum(axis=0)[:, None] * np.ones((1, 2)) + left)


def test_seed_style_graph_build_forward_backward_update():
    """The seed's loop: build the graph, forward, backward, update the leaves' values, clear."""
    w, b = Tensor(jnp.array(0.0)), Tensor(jnp.array(0.0))
    loss = ops.abs(5.0 - (2.0 * w + b))
    loss.backward()
    assert (float(w.grad), float(b.grad)) == (-2.0, -1.0)
    w.value, b.value = w.value - 0.05 * w.grad, b.value - 0.1 * b.grad
    assert (float(w.value), float(b.value)) == pytest.approx((0.1, 0.1))
    assert w.value.dtype == jnp.float32 and w.grad.dtype == jnp.float32


# ---- grad / value_and_grad: jax's calling convention ----------------------------------------------
def f3(x, y, z):
    return ops.sum(ops.tanh(x) * y) + ops.sum(ops.exp(z) * ops.square(y))


X3 = (np.array([0.3, -1.2, 0.8]), np.array([1.5, 0.5, -2.0]), np.array([0.1, 0.2, -0.3]))


@pytest.mark.parametrize("argnums", [0, 1, 2, -1, -3, (0,), (0, 2), (2, 0), (-1, 1), (0, 1, 2)])
def test_argnums_as_jax(argnums, x64):
    args = tuple(jnp.asarray(a) for a in X3)
    result = fdl.autodiff.grad(f3, argnums=argnums)(*args)
    assert isinstance(result, tuple) == isinstance(argnums, tuple)
    assert_trees_equal(result, jax.grad(f3, argnums=argnums)(*args))
    value, result = fdl.autodiff.value_and_grad(f3, argnums=argnums)(*args)
    jax_value, expected = jax.value_and_grad(f3, argnums=argnums)(*args)
    assert_trees_equal(result, expected)
    assert isinstance(value, jax.Array) and value.shape == () and float(value) == pytest.approx(float(jax_value))


class Layer(NamedTuple):
    w: jax.Array
    b: jax.Array


def mlp(params, x):
    h = x
    for layer in params["layers"]:
        h = ops.tanh(h @ layer.w + layer.b)
    scale, unused = params["head"]
    return ops.mean(ops.square(h * scale[0] - params["target"]))


def test_pytree_arguments_as_jax(x64, allow_rank_promotion):
    rng = np.random.RandomState(0)
    params = {
        "layers": [Layer(jnp.asarray(rng.normal(size=(3, 4))), jnp.asarray(rng.normal(size=4))),
                   Layer(jnp.asarray(rng.normal(size=(4, 2))), jnp.asarray(rng.normal(size=2)))],
        "head": ([jnp.array(1.5)], (None, jnp.array(7.0))),  # None is an empty subtree, as in jax
        "target": jnp.asarray(rng.normal(size=(5, 2))),
    }
    x = jnp.asarray(rng.normal(size=(5, 3)))
    result = fdl.autodiff.grad(mlp)(params, x)
    assert_trees_equal(result, jax.grad(mlp)(params, x))
    assert isinstance(result["layers"][0], Layer) and result["head"][1][0] is None
    np.testing.assert_array_equal(result["head"][1][1], 0.0)  # an unused leaf gets zeros
    assert_trees_equal(fdl.autodiff.grad(mlp, argnums=(0, 1))(params, x), jax.grad(mlp, argnums=(0, 1))(params, x))


def test_has_aux_returns_plain_arrays(x64):
    def f(x, y):
        h = x * y
        return ops.sum(h), {"h": h, "pair": [x, jnp.asarray(2.0)], "mean": ops.mean(h)}

    x, y = jnp.array([1.0, 2.0]), jnp.array([3.0, -1.0])
    grads, aux = fdl.autodiff.grad(f, has_aux=True)(x, y)
    jax_grads, jax_aux = jax.grad(f, has_aux=True)(x, y)
    assert_trees_equal(grads, jax_grads)
    assert_trees_equal(aux, jax_aux)  # the Tensors h, x and mean(h) come back as arrays
    (value, aux), grads = fdl.autodiff.value_and_grad(f, argnums=(0, 1), has_aux=True)(x, y)
    (jax_value, jax_aux), jax_grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(x, y)
    assert float(value) == float(jax_value) == 1.0
    assert_trees_equal(aux, jax_aux)
    assert_trees_equal(grads, jax_grads)


def test_keyword_arguments_are_passed_through(x64):
    def f(x, y, *, scale, power=2.0):
        return ops.sum(scale * x ** power * y)

    x, y = jnp.array([1.0, 2.0]), jnp.array([0.5, -1.0])
    for kwargs in ({"scale": 3.0}, {"scale": jnp.array(3.0), "power": 3.0}):
        assert_trees_equal(fdl.autodiff.grad(f, argnums=(0, 1))(x, y, **kwargs),
                           jax.grad(f, argnums=(0, 1))(x, y, **kwargs))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_output_not_depending_on_the_input_gives_zeros(dtype, x64):
    x, y = jnp.ones((2, 3), dtype), jnp.ones(3, dtype)
    for f in (lambda x, y: 1.5, lambda x, y: ops.sum(y * 2.0), lambda x, y: jnp.asarray(2.0, dtype)):
        value, result = fdl.autodiff.value_and_grad(f)(x, y)
        jax_value, expected = jax.value_and_grad(f)(x, y)
        assert_trees_equal(result, expected)
        assert float(value) == float(jax_value)


def test_fan_out_accumulates(x64):
    def f(x):
        h = x * x  # h is used three times, x five times
        return ops.sum(h * h + h * x + ops.exp(h) - x)

    x = jnp.array([0.5, -1.0, 2.0])
    assert_trees_equal(fdl.autodiff.grad(f)(x), jax.grad(f)(x))
    assert_trees_equal(fdl.autodiff.grad(lambda x: ops.sum(x + x + x))(x), jnp.full(3, 3.0))


def test_python_floats_and_numpy_arrays_as_arguments(x64):
    f = lambda x, y: ops.sum(x * y + ops.square(x))  # noqa: E731
    for args in ((3.0, 2.0), (np.float64(3.0), 2.0), (np.array([3.0, 1.0]), np.array([2.0, -1.0])),
                 (np.array([3.0], np.float32), np.array([2.0], np.float32))):
        assert_trees_equal(fdl.autodiff.grad(f, argnums=(0, 1))(*args), jax.grad(f, argnums=(0, 1))(*args))


def test_dtypes_are_kept_with_and_without_x64(request):
    f = lambda x: ops.sum(ops.exp(x) * 2.0 + x ** 2 - ops.mean(x) / 3.0)  # noqa: E731
    x32 = jnp.array([0.5, -1.0], jnp.float32)
    assert fdl.autodiff.grad(f)(x32).dtype == jnp.float32 and fdl.autodiff.grad(f)(1.0).dtype == jnp.float32
    request.getfixturevalue("x64")
    value, result = fdl.autodiff.value_and_grad(f)(x32)
    assert value.dtype == result.dtype == jnp.float32  # constants are weak: float32 stays float32
    np.testing.assert_allclose(result, jax.grad(f)(x32), rtol=1e-6)
    assert fdl.autodiff.grad(f)(jnp.asarray(x32, jnp.float64)).dtype == jnp.float64
    assert fdl.autodiff.grad(f)(1.0).dtype == jax.grad(f)(1.0).dtype == jnp.float64


# ---- jit and higher order --------------------------------------------------------------------------
def loss_with_everything(params, x):
    h = ops.relu(x @ params["w"] + params["b"])
    return ops.mean(ops.logsumexp(h, axis=-1)) + 0.1 * ops.sum(ops.abs(params["w"])), ops.max(h)


def test_jit_equals_eager_equals_jax(x64, allow_rank_promotion):
    rng = np.random.RandomState(1)
    params = {"w": jnp.asarray(rng.normal(size=(3, 4))), "b": jnp.asarray(rng.normal(size=4))}
    x = jnp.asarray(rng.normal(size=(6, 3)))
    eager = fdl.autodiff.value_and_grad(loss_with_everything, has_aux=True)(params, x)
    traces = []

    def counted(params, x):
        traces.append(1)
        return loss_with_everything(params, x)

    jitted_fn = jax.jit(fdl.autodiff.value_and_grad(counted, has_aux=True))
    jitted = jitted_fn(params, x)
    assert_trees_equal(jitted, eager)
    assert_trees_equal(eager, jax.value_and_grad(loss_with_everything, has_aux=True)(params, x))
    # a second call traces nothing new and builds no stale tape: new values, right gradients
    params2 = jax.tree_util.tree_map(lambda p: p * -0.5, params)
    assert_trees_equal(jitted_fn(params2, x), jax.value_and_grad(loss_with_everything, has_aux=True)(params2, x))
    assert len(traces) == 1


def smooth(x):
    return ops.sum(ops.tanh(x) ** 3.0 + ops.exp(x[0] * x) + ops.softplus(x) * ops.sigmoid(x))


def test_second_derivatives_through_the_tape_equal_jax_hessian(x64):
    x = jnp.array([0.3, -0.7, 1.1])
    hessian = jax.jit(jax.hessian(smooth))(x)
    row = jax.grad(lambda x: fdl.autodiff.grad(smooth)(x)[1])(x)  # eager: jax.grad of one gradient component
    np.testing.assert_allclose(row, hessian[1], rtol=1e-12)
    for transform in (jax.jacfwd, jax.jacrev):
        np.testing.assert_allclose(jax.jit(transform(fdl.autodiff.grad(smooth)))(x), hessian, rtol=1e-12, atol=1e-14)


def test_vmap_over_grad(x64):
    xs = jnp.array([[0.3, -0.7, 1.1], [1.0, 2.0, -3.0]])
    np.testing.assert_allclose(jax.vmap(fdl.autodiff.grad(smooth))(xs), jax.vmap(jax.grad(smooth))(xs), rtol=1e-12)


# ---- the deep chain: the backward pass is iterative ------------------------------------------------
def test_deep_chain_of_100000_ops(x64):
    depth = 100_000
    assert sys.getrecursionlimit() < depth  # a recursive backward pass would fail here

    def chain(x):
        for i in range(depth // 2):
            x = x * 1.000001 + 1e-6
        return x

    start = time.perf_counter()
    value, result = fdl.autodiff.value_and_grad(chain)(0.5)
    elapsed = time.perf_counter() - start
    print(f"deep chain: {depth} ops, value_and_grad in {elapsed:.2f} s")
    np.testing.assert_allclose(result, 1.000001 ** (depth // 2), rtol=1e-9)
    np.testing.assert_allclose(value, chain(0.5), rtol=1e-12)


# ---- errors: TypeError for a wrong type or dtype, ValueError for a wrong shape or value ----------------
def scalar_fn(x):
    return ops.sum(x * 2.0)


ERRORS = [
    # (what, call, exception, message pattern)
    ("non-scalar output", lambda: fdl.autodiff.grad(lambda x: x * 2.0)(jnp.ones(3)), ValueError,
     r"output must be a scalar.*\(3,\)"),
    ("non-scalar output, value_and_grad", lambda: fdl.autodiff.value_and_grad(lambda x: x * 2.0)(jnp.ones(3)),
     ValueError, r"output must be a scalar"),
    ("integer output array", lambda: fdl.autodiff.grad(lambda x: jnp.sum(x > 0))(jnp.ones(3)), TypeError,
     r"output must be floating-point.*int"),
    ("integer input", lambda: fdl.autodiff.grad(scalar_fn)(jnp.arange(3)), TypeError,
     r"`argument 0` must have a floating-point dtype, got int"),
    ("boolean input", lambda: fdl.autodiff.grad(scalar_fn)(jnp.ones(3) > 0), TypeError,
     r"`argument 0` must have a floating-point dtype, got bool"),
    ("complex input", lambda: fdl.autodiff.grad(scalar_fn)(jnp.ones(3, jnp.complex64)), TypeError,
     r"`argument 0` must have a floating-point dtype, got complex"),
    ("Python int argument", lambda: fdl.autodiff.grad(lambda x, y: x * y, argnums=1)(2.0, 3), TypeError,
     r"`argument 1` must be a floating-point array, got the Python int 3"),
    ("string leaf", lambda: fdl.autodiff.grad(lambda p: ops.sum(p["w"]))({"w": jnp.ones(2), "name": "abc"}),
     TypeError, r"`argument 0\['name'\]` must be a floating-point array, got str"),
    ("nested leaf", lambda: fdl.autodiff.grad(lambda p: ops.sum(p[0]["w"]))([{"w": jnp.ones(2), "n": [1.0, 2]}]),
     TypeError, r"`argument 0\[0\]\['n'\]\[1\]` must be a floating-point array, got the Python int 2"),
    ("shapes that do not broadcast", lambda: Tensor(jnp.ones(3)) + jnp.ones(4), ValueError,
     r"`add`: operand shapes \(3,\), \(4,\) do not broadcast"),
    ("shapes that do not broadcast, on arrays", lambda: ops.maximum(jnp.ones((2, 3)), jnp.ones((3, 2))), ValueError,
     r"`maximum`: operand shapes \(2, 3\), \(3, 2\)"),
    ("where shapes", lambda: ops.where(jnp.ones(3) > 0, Tensor(jnp.ones(3)), jnp.ones(2)), ValueError, r"`where`"),
    ("clip shapes", lambda: ops.clip(Tensor(jnp.ones(3)), jnp.zeros(2), 1.0), ValueError, r"`clip`"),
    ("bce shapes", lambda: ops.binary_cross_entropy(Tensor(jnp.ones(3)), jnp.ones(2)), ValueError,
     r"`binary_cross_entropy`"),
    ("matmul contraction", lambda: Tensor(jnp.ones((2, 3))) @ jnp.ones((4, 5)), ValueError,
     r"`matmul`: contraction dimensions differ: `a` \(2, 3\) has 3 columns but `b` \(4, 5\) has 4 rows"),
    ("matmul contraction, 1-D", lambda: ops.matmul(jnp.ones(3), Tensor(jnp.ones(4))), ValueError,
     r"`matmul`: contraction"),
    ("matmul scalar operand", lambda: ops.matmul(Tensor(jnp.ones(3)), jnp.asarray(2.0)), ValueError,
     r"`matmul`: operands must have at least 1 dimension"),
    ("matmul batch", lambda: ops.matmul(Tensor(jnp.ones((2, 3, 4))), jnp.ones((3, 4, 5))), ValueError, r"matmul"),
    ("argnums out of range", lambda: fdl.autodiff.grad(lambda x, y: x * y, argnums=2)(1.0, 2.0), ValueError,
     r"`argnums` 2 is out of range for a call with 2 positional argument"),
    ("negative argnums out of range", lambda: fdl.autodiff.grad(lambda x: x, argnums=(0, -2))(1.0), ValueError,
     r"`argnums` \(0, -2\) is out of range"),
    ("argnums a string", lambda: fdl.autodiff.grad(scalar_fn, argnums="0"), TypeError, r"`argnums` must be an int"),
    ("argnums a float", lambda: fdl.autodiff.value_and_grad(scalar_fn, argnums=0.0), TypeError, r"`argnums`"),
    ("argnums a bool", lambda: fdl.autodiff.grad(scalar_fn, argnums=True), TypeError, r"`argnums`"),
    ("argnums empty", lambda: fdl.autodiff.grad(scalar_fn, argnums=()), TypeError, r"`argnums`.*non-empty"),
    ("argnums with a float", lambda: fdl.autodiff.grad(scalar_fn, argnums=(0, 1.0)), TypeError, r"`argnums`"),
    ("has_aux without a pair", lambda: fdl.autodiff.grad(scalar_fn, has_aux=True)(jnp.ones(2)), TypeError,
     r"`has_aux=True`.*pair \(output, aux\), got Tensor"),
    ("has_aux with a triple", lambda: fdl.autodiff.grad(lambda x: (scalar_fn(x), 1, 2), has_aux=True)(jnp.ones(2)),
     TypeError, r"`has_aux=True`.*got tuple"),
    ("Tensor of a string", lambda: Tensor("abc"), TypeError, r"`value` must be a floating-point array, got str"),
    ("Tensor of a Python int", lambda: Tensor(3), TypeError, r"`value`.*Python int"),
    ("Tensor of integers", lambda: Tensor(jnp.arange(3)), TypeError, r"`value` must have a floating-point dtype"),
    ("backward on a non-scalar", lambda: (Tensor(jnp.ones(3)) * 2.0).backward(), ValueError,
     r"`backward` without `gradient` needs a scalar, got shape \(3,\)"),
    ("backward with a wrong gradient shape", lambda: (Tensor(jnp.ones(3)) * 2.0).backward(jnp.ones(2)), ValueError,
     r"`gradient` must have shape \(3,\), got \(2,\)"),
    ("one_hot of floats", lambda: ops.one_hot(jnp.array([0.0, 1.0]), 3), TypeError,
     r"`labels` must be an integer array.*float"),
    ("one_hot of a Tensor", lambda: ops.one_hot(Tensor(jnp.array([0.0, 1.0])), 3), TypeError, r"`labels`"),
    ("one_hot with 0 classes", lambda: ops.one_hot(jnp.array([0, 1]), 0), ValueError,
     r"`num_classes` must be >= 1, got 0"),
    ("one_hot with -2 classes", lambda: ops.one_hot(jnp.array([0, 1]), -2), ValueError, r"`num_classes`.*-2"),
    ("where with a Tensor condition", lambda: ops.where(Tensor(jnp.ones(2)), jnp.ones(2), jnp.zeros(2)), TypeError,
     r"`cond` must be a boolean array, got a Tensor"),
    ("indexing with a Tensor", lambda: Tensor(jnp.ones(3))[Tensor(jnp.zeros(1))], TypeError,
     r"a Tensor cannot be used as an index"),
    ("indexing with a Tensor in a tuple", lambda: Tensor(jnp.ones((2, 3)))[0, Tensor(jnp.zeros(1))], TypeError,
     r"a Tensor cannot be used as an index"),
    ("concatenate of a Tensor", lambda: ops.concatenate(Tensor(jnp.ones(3))), TypeError,
     r"`xs` must be a non-empty list or tuple"),
    ("concatenate of nothing", lambda: ops.concatenate([]), TypeError, r"`xs` must be a non-empty"),
    ("Python int output", lambda: fdl.autodiff.grad(lambda x: 1)(2.0), TypeError,
     r"output must be a floating-point scalar array or Tensor, got int"),
    ("one_hot with a float num_classes", lambda: ops.one_hot(jnp.array([0, 1]), 3.0), TypeError,
     r"`num_classes` must be an int, got float"),
    ("concatenate shapes", lambda: ops.concatenate([Tensor(jnp.ones((2, 3))), jnp.ones((2, 4))]), ValueError,
     r"`concatenate`: shapes \(2, 3\), \(2, 4\) differ outside axis 0"),
    ("concatenate ranks", lambda: ops.concatenate([Tensor(jnp.ones(3)), jnp.ones((2, 2))]), ValueError,
     r"`concatenate`: all operands must have the same rank"),
    ("reshape size", lambda: ops.reshape(Tensor(jnp.ones(3)), (2, 2)), ValueError,
     r"`reshape`: cannot reshape an array of shape \(3,\) \(size 3\) into shape \(2, 2\)"),
    ("duplicate argnums", lambda: fdl.autodiff.grad(lambda x, y: x * y, argnums=(0, -2))(1.0, 2.0), ValueError,
     r"`argnums` \(0, -2\) names the same argument twice"),
]


@pytest.mark.parametrize("what, call, exception, match", ERRORS, ids=[e[0] for e in ERRORS])
def test_error(what, call, exception, match):
    with pytest.raises(exception, match=match):
        call()


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_errors_survive_python_dash_O():
    script = ("import jax.numpy as jnp, funcdl as fdl\n"
              "for call in (lambda: fdl.autodiff.grad(lambda x: x * 2.0)(3),\n"
              "             lambda: fdl.autodiff.grad(lambda x: x * 2.0)(jnp.ones(3)),\n"
              "             lambda: fdl.ops.one_hot(jnp.array([1]), 0)):\n"
              "    try:\n"
              "        call()\n"
              "    except (TypeError, ValueError) as error:\n"
              "        print(type(error).__name__)\n")
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(FUNCDL_PARENT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True, text=True, env=env,
                            timeout=120, cwd=FUNCDL_PARENT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["TypeError", "ValueError", "ValueError"]


# ---- seed 000: the adaptive linear unit, in the seed's graph style -------------------------------------
def adaline(data, steps=None):
    """Per-sample SGD on |label - (x w + b)|, lr 0.05 for w and 0.1 for b: the (w, b) after each step."""
    w, b = Tensor(0.0), Tensor(0.0)
    history = []
    for x, label in data[:steps]:
        loss = ops.abs(label - (x * w + b))
        loss.backward()
        w.value = w.value - 0.05 * w.grad
        b.value = b.value - 0.1 * b.grad
        w.grad = b.grad = None
        history.append((float(w.value), float(b.value)))
    return np.array(history)


def adaline_by_hand(data, steps):
    """The same updates in plain Python floats: d|l - p|/dw = -x sign(l - p), d/db = -sign(l - p)."""
    w = b = 0.0
    history = []
    for x, label in data[:steps]:
        residual = label - (x * w + b)
        sign = (residual > 0) - (residual < 0)
        w, b = w + 0.05 * x * sign, b + 0.1 * sign
        history.append((w, b))
    return np.array(history)


def adaline_data(n):
    x = np.random.RandomState(0).uniform(-10.0, 10.0, n)
    return [(float(xi), float(2.0 * xi + 1.0)) for xi in x]


def test_adaline_first_steps_equal_the_hand_computation():
    data = adaline_data(50)
    np.testing.assert_allclose(adaline(data), adaline_by_hand(data, 50), rtol=0, atol=1e-5)  # float32 iterates


def test_adaline_first_steps_equal_the_hand_computation_in_float64(x64):
    data = adaline_data(50)
    np.testing.assert_allclose(adaline(data), adaline_by_hand(data, 50), rtol=0, atol=1e-12)


def test_adaline_learns_y_equals_2x_plus_1():
    """Per-sample SGD on an absolute loss never settles (b moves in steps of ±0.1): the mean of the
    second half of the iterates is within 0.1 of (w, b) = (2, 1)."""
    start = time.perf_counter()
    history = adaline(adaline_data(2000))
    print(f"adaline: 2000 steps in {time.perf_counter() - start:.2f} s")
    w, b = history[len(history) // 2:].mean(axis=0)
    assert abs(w - 2.0) < 0.1 and abs(b - 1.0) < 0.1, (w, b)
    assert np.all(np.abs(np.diff(history[:, 1])) == pytest.approx(0.1, abs=1e-5))  # every b step is ±lr


@pytest.mark.parametrize("shape_args, expected", [((6,), (6,)), (((3, 2),), (3, 2)), ((3, -1), (3, 2)),
                                                  (([6],), (6,))])
def test_tensor_reshape_accepts_the_forms_of_jax_arrays(shape_args, expected):
    value = jnp.arange(6.0).reshape(2, 3)
    assert Tensor(value).reshape(*shape_args).shape == value.reshape(*shape_args).shape == expected
    grads = fdl.autodiff.grad(lambda x: ops.sum(x.reshape(*shape_args) * jnp.arange(6.0).reshape(expected)))(value)
    assert jnp.array_equal(grads, jnp.arange(6.0).reshape(2, 3))


# ---- issue 9: where the two autodiffs must agree, and the crashes and errors it found --------------
def test_float16_mean_over_more_than_65504_elements_matches_jax():
    """The count N = 90,000 overflows float16 (max 65,504): it is applied in float32, as jnp.mean."""
    x32 = jax.random.normal(jax.random.PRNGKey(0), (300, 300))
    f = lambda x: ops.mean(x) + ops.mean(ops.mean(x * x, axis=[1])) + ops.var(x) + ops.mean(ops.var(x, (0,), 1))
    for dtype in (jnp.float16, jnp.bfloat16):
        x = x32.astype(dtype)
        by_funcdl, by_jax = jax.jit(fdl.autodiff.grad(f))(x), jax.jit(jax.grad(f))(x)
        assert by_funcdl.dtype == dtype and float(jnp.max(jnp.abs(by_jax.astype(jnp.float32)))) > 0
        np.testing.assert_allclose(np.asarray(by_funcdl, np.float32), np.asarray(by_jax, np.float32),
                                   rtol=2e-2, atol=1e-7)
        np.testing.assert_allclose(np.asarray(fdl.autodiff.grad(ops.mean)(x), np.float32),
                                   np.full((300, 300), 1 / 90_000), rtol=1e-2)  # eagerly too


OUT_OF_BOUNDS = {"scalar": lambda x, i: x[i], "scalar and slice": lambda x, i: x[i, 1:],
                 "array": lambda x, i: x[jnp.stack([i, i - 3, jnp.array(1)])]}


@pytest.mark.parametrize("index", [7, -7, 2])
@pytest.mark.parametrize("kind", list(OUT_OF_BOUNDS))
def test_traced_out_of_bounds_index_follows_jax(kind, index):
    """Traced: a scalar index is clamped (so is its gradient); an array index's is dropped."""
    x = jnp.arange(10.0).reshape(5, 2)
    f = lambda x, i: ops.sum(OUT_OF_BOUNDS[kind](x, i) ** 2.0)
    i = jnp.array(index)
    np.testing.assert_array_equal(jax.jit(fdl.autodiff.grad(f))(x, i), jax.jit(jax.grad(f))(x, i))


@pytest.mark.slow  # ~11 s: the slow tier (`make test-slow`, run by CI)
def test_integer_bounds_and_targets_are_constants_under_every_transform(x64):
    """Issue 9.7: an integer bound, target or exponent gives no float0 tangent."""
    def f(x):
        p = ops.sigmoid(x)
        return ops.sum(ops.clip(x, -1, 1) + ops.clip(x, jnp.array([-1, 0, 1]), 2) + ops.clip(x, 0.0, None)
                       + ops.clip(x, None, 1) + ops.binary_cross_entropy(p, 0)
                       + ops.binary_cross_entropy(p, jnp.array([1, 0, 1]))
                       + ops.power(ops.abs(x) + 1.0, jnp.array([2, 1, 3])) + ops.power(2, x))

    x = jnp.array([-2.0, 0.5, 3.0])
    expected = jax.grad(f)(x)
    np.testing.assert_allclose(fdl.autodiff.grad(f)(x), expected, rtol=1e-14)
    np.testing.assert_allclose(jax.jvp(f, (x,), (jnp.ones(3),))[1], jnp.sum(expected), rtol=1e-14)
    np.testing.assert_allclose(jax.jit(jax.jacfwd(f))(x), expected, rtol=1e-14)
    np.testing.assert_allclose(jax.jit(jax.grad(lambda a: jnp.sum(fdl.autodiff.grad(f)(a))))(x),
                               jax.jit(jax.grad(lambda a: jnp.sum(jax.grad(f)(a))))(x), rtol=1e-12)
    fdl.gradcheck.check_grads(f, (x,))


def _escape_cases():
    lax = jax.lax
    return {
        "jnp.sin": lambda x: jnp.sin(x),
        "jnp.sum": lambda x: jnp.sum(x),
        "jnp.asarray": lambda x: ops.sum(jnp.asarray(x)),
        "lax.scan": lambda x: lax.scan(lambda c, _: (c * 2.0, None), x, None, length=2)[0],
        "lax.fori_loop": lambda x: lax.fori_loop(0, 2, lambda i, c: c * 2.0, x),
        "lax.while_loop": lambda x: lax.while_loop(lambda c: False, lambda c: c, x),
        "lax.cond": lambda x: lax.cond(True, lambda a: a * 2.0, lambda a: a, x),
        "inner vmap": lambda x: jax.vmap(lambda a: a * 2.0)(x),
        "jax.checkpoint": lambda x: jax.checkpoint(lambda a: a * 2.0)(x),
        "inner jit": lambda x: jax.jit(lambda a: a * 2.0)(x),
        "jax.nn.relu": lambda x: jax.nn.relu(x),
    }


@pytest.mark.parametrize("entry", list(_escape_cases()))
def test_tensor_reaching_jax_raises_a_clear_type_error(entry):
    f = _escape_cases()[entry]
    with pytest.raises(TypeError, match=r"fdl\.autodiff\.Tensor reached a jax function.*fdl\.ops.*jax\.grad"):
        fdl.autodiff.grad(lambda x: ops.sum(f(x)))(jnp.ones(3))
    jax.grad(lambda x: ops.sum(f(x)))(jnp.ones(3))  # the same function is fine under jax.grad


@pytest.mark.slow  # ~7 s: the slow tier (`make test-slow`, run by CI)
def test_tensor_methods_and_builtins_equal_jax(x64):
    x = jnp.arange(1.0, 7.0).reshape(2, 3) ** 1.5

    def f(x):
        total = x.sum(axis=[0]).max() + x.mean(axis=1, keepdims=True).min() + abs(-x).sum()
        total = total + x.reshape(np.array([3, 2])).transpose().T.sum() + x.transpose(1, 0)[0].sum()
        return total + x.astype(jnp.float32).astype(jnp.float64).sum() * len(x) + ops.stop_gradient(x).sum()

    np.testing.assert_allclose(fdl.autodiff.grad(f)(x), jax.grad(f)(x), rtol=1e-14)
    assert ops.argmax(Tensor(x), axis=1).dtype == jnp.argmax(x, axis=1).dtype
    assert not isinstance(ops.argmin(Tensor(x)), Tensor) and int(ops.argmin(Tensor(x))) == 0
    assert not isinstance(ops.stop_gradient(Tensor(x)), Tensor)
    assert not isinstance(ops.astype(Tensor(x), jnp.int32), Tensor)


def test_tape_keeps_only_the_values_its_rules_read():
    """A chain of y * c keeps no intermediate values (the rule of x reads c); tanh keeps ans."""
    x = Tensor(jnp.ones(4))
    y = (x * 0.2) * 3.0
    node = y._node
    assert node.ans is None and node.inputs[1] == 3.0
    assert isinstance(node.inputs[0], fdl.autodiff.vjps.Shape) and node.inputs[0].shape == (4,)
    t = ops.tanh(y)
    assert t._node.ans is t.value and isinstance(t._node.inputs[0], fdl.autodiff.vjps.Shape)
    ops.sum(t).backward()
    np.testing.assert_allclose(x.grad, 0.6 * (1 - np.tanh(0.6) ** 2) * np.ones(4), rtol=1e-6)


ISSUE_9_ERRORS = [
    ("leaky_relu with an array slope", lambda: ops.leaky_relu(Tensor(jnp.ones(2)), jnp.array(0.1)), TypeError,
     r"`negative_slope` must be a float \(a constant\), got ArrayImpl"),
    ("leaky_relu with a Tensor slope", lambda: ops.leaky_relu(jnp.ones(2), Tensor(jnp.array(0.1))), TypeError,
     r"`negative_slope` must be a float"),
    ("bce probs above 1", lambda: ops.binary_cross_entropy(jnp.array([0.5, 1.5]), jnp.ones(2)), ValueError,
     r"`probs` must lie in \[0, 1\].*from 0.5 to 1.5"),
    ("bce negative target", lambda: ops.binary_cross_entropy(Tensor(jnp.array([0.5])), jnp.array([-1.0])),
     ValueError, r"`target` must lie in \[0, 1\]"),
    ("bce integer target 2", lambda: ops.binary_cross_entropy(jnp.array([0.5]), 2), ValueError, r"`target`"),
    ("bce NaN probs", lambda: ops.binary_cross_entropy(jnp.array([jnp.nan]), 1.0), ValueError, r"`probs`"),
    ("clip without bounds", lambda: ops.clip(jnp.ones(2), None, None), ValueError, r"`clip`: at least one"),
    ("reshape with floats", lambda: ops.reshape(Tensor(jnp.ones(4)), (2.0, 2.0)), TypeError,
     r"`shape` must be an int or a sequence of ints, got \(2.0, 2.0\)"),
    ("axis a float", lambda: ops.sum(Tensor(jnp.ones(4)), axis=0.5), TypeError,
     r"`axis` must be None, an int or a tuple of ints, got 0.5"),
    ("var ddof a float", lambda: ops.var(jnp.ones(4), ddof=1.0), TypeError, r"`ddof` must be an int, got float"),
    ("stack shapes", lambda: ops.stack([Tensor(jnp.ones(2)), jnp.ones(3)]), ValueError,
     r"`stack`: all operands must have the same shape, got \(2,\), \(3,\)"),
    ("stack of nothing", lambda: ops.stack([]), TypeError, r"`xs` must be a non-empty"),
]


@pytest.mark.parametrize("what, call, exception, match", ISSUE_9_ERRORS, ids=[e[0] for e in ISSUE_9_ERRORS])
def test_issue_9_error(what, call, exception, match):
    with pytest.raises(exception, match=match):
        call()


def test_bce_range_is_not_checked_on_traced_inputs():
    f = lambda p: ops.sum(ops.binary_cross_entropy(p, 1.0))
    assert np.isnan(jax.jit(f)(jnp.array([1.5])))  # nothing can be raised while tracing
    assert jnp.isfinite(jax.grad(f)(jnp.array([0.5])))[0]


def test_reshape_and_one_hot_take_numpy_integers():
    x = Tensor(jnp.arange(6.0))
    assert ops.reshape(x, np.array([2, 3])).shape == (2, 3) == ops.reshape(x.value, np.int64(6)).reshape(2, 3).shape
    np.testing.assert_array_equal(ops.one_hot(jnp.array([0, 2]), np.int64(3)), jax.nn.one_hot(jnp.array([0, 2]), 3))


@pytest.mark.slow  # ~11 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("jit_after", [1, 10**9], ids=["compiled rules", "eager rules"])
def test_rules_compiled_for_long_eager_loops_equal_jax(jit_after, monkeypatch, x64):
    """The tape compiles a rule that repeats on the same shapes; the keys must not collide (a
    0-d array and a `Shape` of (), an int and a bool) and the results equal jax.grad's."""
    monkeypatch.setattr(fdl.autodiff.fused_rules, "JIT_AFTER", jit_after)
    fns = [lambda x: ops.sum(ops.tanh(x) * 0.9 + 0.05), lambda x: ops.mean(x * x) * 2 + ops.max(x) + ops.min(x * 3),
           lambda x: ops.sum(ops.stack([x, ops.sigmoid(x)], axis=0)[1] / (x * x + 1.0))]
    for _ in range(3):
        for shape in ((), (3,), (2, 3)):
            x = jnp.linspace(-1.0, 2.0, int(np.prod(shape))).reshape(shape)
            for f in fns[:2] if shape == () else fns:
                np.testing.assert_allclose(fdl.autodiff.grad(f)(x), jax.grad(f)(x), rtol=1e-14, atol=1e-15)


def test_a_numpy_operand_and_an_unread_tensor_compile_apart(monkeypatch, x64):
    """`c / y` with c a NumPy array and `x / y` with x a Tensor (which the rule of y does not
    read: the node keeps x's `Shape`) once shared a compiled rule: Shape((2, 3), float64)
    equals the pair a NumPy argument entered as, and y's gradient came out -g / y."""
    monkeypatch.setattr(fdl.autodiff.fused_rules, "JIT_AFTER", 1)
    monkeypatch.setattr(fdl.autodiff.fused_rules, "_compiled_rules", {})
    rng = np.random.default_rng(0)
    c, g = rng.normal(size=(2, 3)), jnp.asarray(rng.normal(size=(2, 3)))
    x, y = (jnp.asarray(rng.normal(size=(2, 3)) + 3.0) for _ in range(2))
    a, b = Tensor(x), Tensor(y)
    (a / b).backward(g)  # compiles the rule of y with x's Shape baked in
    np.testing.assert_allclose(b.grad, -g * x / y**2, rtol=1e-14)
    t = Tensor(y)
    (c / t).backward(g)
    np.testing.assert_allclose(t.grad, -g * c / y**2, rtol=1e-14)
    np.testing.assert_allclose(fdl.autodiff.grad(lambda v: ops.sum(c / v * g))(y), -g * c / y**2, rtol=1e-14)


@pytest.mark.slow  # ~6 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("jit_after", [1, 10**9], ids=["compiled chains", "eager rules"])
def test_chains_of_rules_pushed_as_one_call_equal_jax(jit_after, monkeypatch, x64):
    """Runs of nodes that each send their cotangent to one input consumed by nothing else go
    through the backward pass as one (compiled) call per CHAIN_LIMIT links: with broadcasting
    inside the chain, a chain longer than CHAIN_LIMIT, and chains that end where paths meet."""
    monkeypatch.setattr(fdl.autodiff.fused_rules, "JIT_AFTER", jit_after)
    monkeypatch.setattr(fdl.autodiff.fused_rules, "_compiled_rules", {})
    w = jnp.array([[0.5], [1.5]])  # (2, 1): x (1, 3) is broadcast to (2, 3) inside the chain

    def long_chain(x):
        y = x
        for _ in range(2 * fdl.autodiff.backward.CHAIN_LIMIT + 3):
            y = ops.sin(y) * 1.1 - 0.2
        return ops.sum(y)

    def broadcast_in_chain(x):
        return ops.sum(ops.tanh(ops.exp(x) * w) * 2.0)

    def meeting_paths(x):
        h = ops.tanh(x * 0.5)
        return ops.sum(ops.sigmoid(h * 2.0) + ops.exp(-h) * 0.3)

    for _ in range(3):
        x = jnp.linspace(-1.0, 1.0, 3).reshape(1, 3)
        for f in (long_chain, broadcast_in_chain, meeting_paths):
            np.testing.assert_allclose(fdl.autodiff.grad(f)(x), jax.grad(f)(x), rtol=1e-13,
                                       atol=1e-15)
    chains = [key for key in fdl.autodiff.fused_rules._compiled_rules if key[0] == "chain"]
    assert bool(chains) == (jit_after == 1)


def test_a_rule_that_reads_concrete_values_keeps_running_eagerly(monkeypatch):
    """Another module's primitive whose rule needs concrete values (it could not run under
    jax.jit) still works in a long eager loop: compiling it fails once, then it runs as is."""
    from funcdl.autodiff.vjps import PRIMITIVES, Primitive
    monkeypatch.setattr(fdl.autodiff.fused_rules, "JIT_AFTER", 1)
    scale_rule = lambda g, ans, x: g * float(np.asarray(x).max())  # noqa: E731 (concrete only)
    monkeypatch.setitem(PRIMITIVES, "scale_by_max", Primitive(lambda x: x * jnp.max(x), (scale_rule,)))
    for _ in range(3):
        x = Tensor(jnp.array([1.0, 2.0, 4.0]))
        ops.sum(fdl.autodiff.apply("scale_by_max", x)).backward()
        np.testing.assert_allclose(x.grad, [4.0, 4.0, 4.0])
