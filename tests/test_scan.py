"""Tests for `fdl.ops.scan`: values against a hand-written Python loop, gradients of both
autodiffs against `jax.grad` (and `jax.hessian`) of that loop in float64, the tape holding one
node whatever the length, the compiled backward not growing with the length, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fdl
from funcdl import ops
from funcdl.autodiff.backward import reverse_topological_order

T, N, H = 7, 3, 4


def close(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-10, atol=1e-12)


def data():
    rng = np.random.default_rng(0)
    return {"w": jnp.asarray(rng.normal(size=(H, H)) * 0.5), "b": jnp.asarray(rng.normal(size=(1, H))),
            "h0": jnp.asarray(rng.normal(size=(N, H))), "xs": jnp.asarray(rng.normal(size=(T, N, H)))}


def cell(p, h, x):
    """One step written with fdl.ops: a mask read off x (a comparison, off the tape), a
    closed-over weight, two outputs."""
    h = ops.tanh(h @ p["w"] + ops.where(x > 0, x, 0.5 * x) + p["b"])
    return h, ops.sigmoid(h) * x


def cell_jax(p, h, x):
    h = jnp.tanh(h @ p["w"] + jnp.where(x > 0, x, 0.5 * x) + p["b"])
    return h, jax.nn.sigmoid(h) * x


def loss_scan(p, h0, xs, reverse=False):
    h, ys = ops.scan(lambda h, x: cell(p, h, x), h0, xs, reverse=reverse)
    return ops.sum(h * h) + ops.sum(ys * ys)


def loss_loop(p, h0, xs, reverse=False):
    h, ys = h0, [None] * xs.shape[0]
    for t in (range(xs.shape[0] - 1, -1, -1) if reverse else range(xs.shape[0])):
        h, ys[t] = cell_jax(p, h, xs[t])
    return jnp.sum(h * h) + jnp.sum(jnp.stack(ys) ** 2)


@pytest.mark.parametrize("reverse", [False, True])
def test_values_equal_a_python_loop(x64, reverse):
    d = data()
    carry, ys = ops.scan(lambda c, x: ((c[0] + x, c[1] + 1), c[0] * x), (d["h0"], 0), d["xs"],
                         reverse=reverse)
    h, count, expected = d["h0"], 0, [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h, count, expected[t] = h + d["xs"][t], count + 1, h * d["xs"][t]
    close(carry[0], h)
    assert int(carry[1]) == T
    close(ys, jnp.stack(expected))


@pytest.mark.slow  # ~8 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_funcdl_and_jax_gradients_equal_the_loop_s(x64, reverse, jit):
    d = data()
    p = {"w": d["w"], "b": d["b"]}
    expected = jax.grad(loss_loop, argnums=(0, 1, 2))(p, d["h0"], d["xs"], reverse)
    for grad in (fdl.autodiff.grad, jax.grad):
        g = grad(loss_scan, argnums=(0, 1, 2))
        g = jax.jit(g, static_argnums=3) if jit else g
        close(g(p, d["h0"], d["xs"], reverse), expected)


def test_closure_only_and_xs_none_and_integer_carry(x64):
    """Gradient through the consts alone (init and xs plain arrays, xs None with `length`), with
    an integer counter in the carry."""
    d = data()

    def loss(w):
        def f(c, _):
            h, k = c
            return (ops.tanh(h @ w) * 0.9, k + 1), None
        (h, k), _ = ops.scan(f, (d["h0"], jnp.int32(0)), None, length=T)
        assert int(k) == T
        return ops.sum(h)

    def loop(w):
        h = d["h0"]
        for _ in range(T):
            h = jnp.tanh(h @ w) * 0.9
        return jnp.sum(h)

    close(fdl.autodiff.grad(loss)(d["w"]), jax.grad(loop)(d["w"]))


def test_the_tape_holds_one_node_whatever_the_length(x64):
    d = data()
    p = {"w": fdl.autodiff.Tensor(d["w"]), "b": fdl.autodiff.Tensor(d["b"])}
    sizes = []
    for length in (2, 20):
        xs = jnp.ones((length, N, H))
        nodes, _ = reverse_topological_order(loss_scan(p, d["h0"], xs)._node)
        sizes.append(len(nodes))
        assert sum(node.primitive == "scan" for node in nodes) == 1
    assert sizes[0] == sizes[1]


def test_the_compiled_backward_does_not_grow_with_the_length(x64):
    d = data()
    p = {"w": d["w"], "b": d["b"]}
    sizes = [len(jax.make_jaxpr(fdl.autodiff.grad(loss_scan))(p, d["h0"], jnp.ones((n, N, H))).eqns)
             for n in (2, 30)]
    assert sizes[0] == sizes[1]


@pytest.mark.slow  # ~14 s: the slow tier (`make test-slow`, run by CI)
def test_second_order_equals_jax_hessian(x64):
    d = data()
    xs, h0, b = d["xs"][:3, :2, :2], d["h0"][:2, :2], d["b"][:, :2]  # small: the nested rule unrolls

    def f(w):
        return loss_scan({"w": w, "b": b}, h0, xs)

    def f_loop(w):
        return loss_loop({"w": w, "b": b}, h0, xs)

    w = d["w"][:2, :2]
    close(fdl.autodiff.hessian(f)(w), jax.hessian(f_loop)(w))
    close(fdl.autodiff.grad(fdl.autodiff.grad(lambda s: f(w * s)))(1.0),
          jax.grad(jax.grad(lambda s: f_loop(w * s)))(1.0))


@pytest.mark.parametrize("call, exception, match", [
    (lambda: ops.scan(3, 0.0, jnp.ones(3)), TypeError, "`f` must be a function"),
    (lambda: ops.scan(lambda c, x: (c, x), 0.0, [jnp.ones(3), jnp.ones(4)]), ValueError,
     "share their leading size"),
    (lambda: ops.scan(lambda c, x: (c, x), 0.0, jnp.ones(3), length=4), ValueError,
     "`length` is 4"),
    (lambda: ops.scan(lambda c, x: (c, x), 0.0, None), ValueError, "`length` must be given"),
    (lambda: ops.scan(lambda c, x: (c, x), 0.0, jnp.float32(1.0)), ValueError, "leading axis"),
    (lambda: ops.scan(lambda c, x: (c, x), 0.0, jnp.ones(3), reverse=1), TypeError, "`reverse`"),
    (lambda: fdl.autodiff.grad(lambda w: ops.scan(lambda c, x: c * w, 0.0, jnp.ones(3))[0])(1.0),
     TypeError, "must return a pair"),
    (lambda: fdl.autodiff.grad(lambda w: ops.scan(lambda c, x: ((c * w, c), x), 0.0,
                                                  jnp.ones(3))[0])(1.0),
     TypeError, "structure of `init`"),
])
def test_errors_name_the_argument(call, exception, match):
    with pytest.raises(exception, match=match):
        call()
