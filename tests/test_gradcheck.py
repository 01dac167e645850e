"""fdl.gradcheck.check_grads: passes on correct gradients, FAILS on wrong ones, reports per leaf.

A checker that cannot fail proves nothing, so most tests here break a gradient on purpose:
a VJP rule of the tape (`monkeypatch.setitem` on `PRIMITIVES`), or the forward function that
jax.grad differentiates, and assert which comparisons of the report catch it.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import ops
from funcdl.autodiff.rule_ops import strip
from funcdl.autodiff.vjps import PRIMITIVES
from funcdl.gradcheck import GradcheckReport, check_grads, format_reports


def mlp_loss(params, x, labels):
    """Mean softmax cross-entropy: x `(batch, 3)`, labels `(batch,)` ints in [0, 2)."""
    hidden = ops.tanh(x @ params["layers"][0]["w"] + params["layers"][0]["b"])
    logits = hidden @ params["layers"][1]["w"]
    targets = ops.one_hot(labels, 2, dtype=logits.dtype)
    return -ops.mean(ops.sum(targets * ops.log_softmax(logits, axis=1), axis=1))


def mlp_args(dtype=np.float64):
    rng = np.random.default_rng(1)
    params = {"layers": [{"w": rng.normal(size=(3, 4)), "b": rng.normal(size=(1, 4))},
                         {"w": rng.normal(size=(4, 2))}]}
    params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
    return params, rng.normal(size=(5, 3)).astype(dtype), np.array([0, 1, 1, 0, 1])


def break_rule(monkeypatch, name, *rules):
    """Replace the VJP rules of primitive `name` on the tape for this test."""
    monkeypatch.setitem(PRIMITIVES, name, PRIMITIVES[name]._replace(vjps=rules))


def failure_report(f, args, **kwargs):
    with pytest.raises(AssertionError) as failure:
        check_grads(f, args, **kwargs)
    report = failure.value.args[0]
    assert isinstance(report, GradcheckReport) and not report.passed
    assert "FAIL" in str(failure.value)
    return report


@pytest.mark.parametrize("jit", [True, False])
def test_passes_on_a_pytree_and_reports_every_leaf(jit):
    report = check_grads(mlp_loss, mlp_args(), jit=jit)
    assert report.passed
    assert [leaf.path for leaf in report.leaves] == [
        "argument 0['layers'][0]['b']", "argument 0['layers'][0]['w']", "argument 0['layers'][1]['w']"]
    for leaf in report.leaves:
        assert leaf.fd_method == "dir+elem"
        assert leaf.fdl_vs_jax.max_rel < 1e-13
        assert leaf.fdl_vs_fd.max_rel < 1e-7 and leaf.jax_vs_fd.max_rel < 1e-7


def test_argnums_tuple_and_negative():
    f = lambda a, scale, b: ops.sum(ops.exp(a) * b) * scale
    args = (np.array([[0.5, -1.0]]), 3, np.array([[1.0, 2.0], [0.5, 0.25]]))
    report = check_grads(f, args, argnums=(0, -1))
    assert [leaf.path for leaf in report.leaves] == ["argument 0", "argument 2"]


def test_float32_inputs_are_checked_in_float64_without_touching_the_config():
    x64_before = jax.config.jax_enable_x64
    report = check_grads(mlp_loss, mlp_args(np.float32))
    assert jax.config.jax_enable_x64 == x64_before
    assert {leaf.dtype for leaf in report.leaves} == {"float32"}
    # float32 arithmetic could not reach these: finite differences need float64
    assert max(leaf.fdl_vs_fd.max_rel for leaf in report.leaves) < 1e-7


def test_large_leaves_get_the_directional_check_only():
    w = np.random.default_rng(0).normal(size=(10, 10))
    report = check_grads(lambda w: ops.sum(ops.tanh(w @ w)), (w,), max_elementwise=64)
    assert report.leaves[0].fd_method == "dir"
    report = check_grads(lambda w: ops.sum(ops.tanh(w @ w)), (w,), max_elementwise=100)
    assert report.leaves[0].fd_method == "dir+elem"


def test_a_wrong_vjp_rule_fails_against_jax_and_finite_differences(monkeypatch):
    break_rule(monkeypatch, "tanh", lambda g, ans, x: g * (1 - ans))  # should be 1 - ans²
    report = failure_report(mlp_loss, mlp_args())
    w0 = report.leaves[1]
    assert not w0.fdl_vs_jax.passed and not w0.fdl_vs_fd.passed
    assert w0.jax_vs_fd.passed  # jax.grad is right: the finite differences say so
    assert report.leaves[2].passed  # the last layer's gradient does not go through tanh


def test_a_rule_that_loses_precision_fails_against_jax(monkeypatch):
    # A float32 round trip is within finite-difference accuracy (1e-6), not within 1e-10.
    rounded = lambda g, ans, x: (g * ans).astype(jnp.float32).astype(g.dtype)
    break_rule(monkeypatch, "exp", rounded)
    report = failure_report(lambda x: ops.sum(ops.exp(x) * x), (np.linspace(-1, 1, 5),))
    assert not report.leaves[0].fdl_vs_jax.passed
    assert report.leaves[0].fdl_vs_fd.passed and report.leaves[0].jax_vs_fd.passed


def test_a_wrong_jax_derivative_fails_against_finite_differences(monkeypatch):
    @jax.custom_jvp
    def wrong_square(x):
        return x * x

    wrong_square.defjvp(lambda primals, tangents: (primals[0] ** 2, 3 * primals[0] * tangents[0]))
    monkeypatch.setitem(PRIMITIVES, "square", PRIMITIVES["square"]._replace(forward=wrong_square))
    report = failure_report(lambda x: ops.sum(ops.square(x)), (np.array([0.5, -2.0]),))
    leaf = report.leaves[0]
    assert leaf.fdl_vs_fd.passed and not leaf.jax_vs_fd.passed and not leaf.fdl_vs_jax.passed


def test_a_wrong_broadcast_gradient_is_caught_per_leaf(monkeypatch):
    # The rule for y forgets that y was broadcast: the tape then sums it (unbroadcast) anyway,
    # but scaled wrongly here, only for the broadcast operand.
    break_rule(monkeypatch, "multiply", lambda g, ans, x, y: g * y,
               lambda g, ans, x, y: g * x * (2.0 if jnp.shape(y) != jnp.shape(x) else 1.0))
    args = (np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[0.5, -1.0]]))
    report = failure_report(lambda x, y: ops.sum(x * y), args, argnums=(0, 1))
    assert [leaf.passed for leaf in report.leaves] == [True, False]


def test_non_finite_gradients_fail():
    report = failure_report(lambda x: ops.sum(ops.sqrt(x)), (np.array([0.0, 1.0]),))
    assert not report.leaves[0].fdl_vs_fd.passed


def test_kinks_can_be_checked_without_finite_differences():
    f = lambda x: ops.sum(ops.relu(x) + ops.abs(x))
    x = np.array([0.0, -1.0, 2.0])  # relu'(0) = |.|'(0) = 0 in both; FD would see 1/2 and 0
    with pytest.raises(AssertionError):
        check_grads(f, (x,))
    report = check_grads(f, (x,), finite_differences=False)
    assert report.leaves[0].fd_method == "none" and report.leaves[0].fdl_vs_jax.max_abs == 0


def test_report_prints_as_a_markdown_table():
    report = check_grads(mlp_loss, mlp_args())
    lines = str(report).splitlines()
    assert lines[0].startswith("gradcheck: 3 leaves, all passed (fdl vs jax: rtol 1e-10")
    header, rule, *rows = lines[1:]
    assert header.split("|")[1].strip() == "leaf" and set(rule) <= {"|", "-"}
    assert len(rows) == 3 and all(row.rstrip().endswith("| ok |") for row in rows)
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns
    table = format_reports({"mlp": report, "again": report})
    assert "| mlp: argument 0['layers'][1]['w'] " in table and len(table.splitlines()) == 8


@pytest.mark.parametrize("call, error, match", [
    (functools.partial(check_grads, mlp_loss, [1.0]), TypeError, "`args` must be a tuple"),
    (functools.partial(check_grads, mlp_loss, mlp_args(), argnums=3), ValueError, "`argnums`"),
    (functools.partial(check_grads, mlp_loss, mlp_args(), argnums=(True,)), TypeError, "`argnums`"),
    (functools.partial(check_grads, mlp_loss, mlp_args(), argnums=2), TypeError, "argument 2 must be floating"),
    (functools.partial(check_grads, mlp_loss, mlp_args(), order=3), ValueError, "`order` must be 1 or 2, got 3"),
])
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_mismatch_at_exact_zeros_names_the_kink():
    """The builtin abs() on a jax array is jax's (slope 1 at 0); on a Tensor it is PyTorch's 0."""
    with pytest.raises(AssertionError) as failure:
        check_grads(lambda x: ops.sum(abs(x) * 2.0), (jnp.array([-1.0, 0.0, 2.0]),),
                    finite_differences=False)
    report = failure.value.args[0]
    assert not report.leaves[0].fdl_vs_jax.passed
    assert report.hints == (report.hints[0],) and "1 exact zero(s)" in report.hints[0]
    assert "hint: argument 0: fdl.autodiff and jax.grad differ" in str(report)
    assert "builtin abs() on a jax array has slope 1 at 0" in str(report)


def test_no_hint_when_the_mismatch_is_not_at_a_kink(monkeypatch):
    wrong = PRIMITIVES["tanh"]._replace(vjps=(lambda g, ans, x: g * (1 - ans),))
    monkeypatch.setitem(PRIMITIVES, "tanh", wrong)
    with pytest.raises(AssertionError) as failure:
        check_grads(lambda x: ops.sum(ops.tanh(x)), (jnp.array([0.3, -0.7]),))
    assert failure.value.args[0].hints == () and "hint:" not in str(failure.value.args[0])


# ---- second order --------------------------------------------------------------------------
@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_order_2_passes_on_a_pytree_and_reports_every_leaf():
    report = check_grads(mlp_loss, mlp_args(), order=2)
    assert report.passed and report.order == 2
    assert [leaf.path for leaf in report.leaves] == ["argument 0['layers'][0]['b']", "argument 0['layers'][0]['w']",
                                                     "argument 0['layers'][1]['w']"]
    assert all(leaf.fd_method == "dir" for leaf in report.leaves)
    assert str(report).startswith("gradcheck, second order: 3 leaves, all passed")


def test_order_2_catches_a_rule_that_is_right_only_at_first_order(monkeypatch):
    # tanh's output read as a constant: the gradient is right, its derivative is not
    break_rule(monkeypatch, "tanh", lambda g, ans, x: g * (1 - strip(ans) * strip(ans)))
    check_grads(mlp_loss, mlp_args())  # first order passes
    report = failure_report(mlp_loss, mlp_args(), order=2)
    w0 = report.leaves[1]
    assert not w0.fdl_vs_jax.passed and not w0.fdl_vs_fd.passed and w0.jax_vs_fd.passed


@pytest.mark.slow  # ~6 s: the slow tier (`make test-slow`, run by CI)
def test_order_2_eager_and_without_finite_differences():
    f = lambda a, b: ops.sum(ops.sin(a * b) * a)  # noqa: E731
    args = (np.linspace(0.1, 1.0, 3), np.linspace(-1.0, 0.5, 3))
    report = check_grads(f, args, argnums=(0, 1), order=2, jit=False)
    assert report.passed and len(report.leaves) == 2
    report = check_grads(f, args, argnums=1, order=2, finite_differences=False)
    assert report.leaves[0].fd_method == "none" and report.passed
