"""Second order of the array ops (`ops_array.py`, `ops_shape.py`): the tape differentiating its
own backward pass, `fdl.autodiff.hessian`, against `jax.hessian` of the same functions (jax
differentiates the jax.numpy forwards, never the tape's rules), float64, 1e-10 relative.

Tiny shapes, one jitted program per case. Points lie away from every jump (rounding, `%`,
`//`), tie (sort) and domain edge (arcsin, log); at prod's zeros the products of the others
are exact (no division), checked with one and with two zeros.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fdl
from funcdl import ops
from test_autodiff_second_order import assert_close, away, total

def _off_grid(*shape):
    """Values at least 0.1 from an integer (rounding and floor division are flat there)."""
    rng = np.random.default_rng(2)
    return np.round(rng.uniform(-3, 3, shape)) + rng.choice([-1, 1], shape) * rng.uniform(0.1, 0.4, shape)


def _distinct(*shape):
    """No ties and no zeros (sort's permutation is locally constant)."""
    return (np.random.default_rng(3).permutation(int(np.prod(shape))).reshape(shape) - 2.5) / 4


def _with_zeros(count):
    x = away(2, 3).reshape(-1)
    x[[4, 1][:count]] = 0.0
    return x.reshape(2, 3)


def array_cases():
    """name -> (f, args, argnums): every op of ops_array and ops_shape, tiny shapes."""
    x, y = away(2, 2), away(2, 2, rng=np.random.default_rng(5))
    cube = away(2, 2, 2)
    return {
        "rounding": (lambda a: total(a * (ops.sign(a) + ops.floor(a) + ops.ceil(a) + ops.round(a)
                                          + ops.round(a, decimals=1))), (_off_grid(2, 2),), 0),
        "remainder_floor_divide": (lambda a, b: total(a % b + a // b * b + ops.remainder(2.5, b) * a),
                                   (_off_grid(2, 2), np.abs(y) + 0.3), (0, 1)),
        "log2_log10": (lambda a: total(ops.log2(a * a + 0.5) * ops.log10(a * a + 0.5)), (x,), 0),
        "logaddexp": (lambda a, b: total(ops.logaddexp(a, b * 2.0) * a), (x, y), (0, 1)),
        "tan_sinh_cosh": (lambda a: total(ops.tan(a) + ops.sinh(a) * ops.cosh(a * 0.5)), (x,), 0),
        "arcsin_arccos_arctan": (lambda a: total(ops.arcsin(a * 0.7) + ops.arccos(a * 0.6) * ops.arctan(a)),
                                 (x,), 0),
        "arctan2": (lambda a, b: total(ops.arctan2(a, b) * b), (x, y), (0, 1)),
        "nan_to_num": (lambda a: total(ops.nan_to_num(ops.log(a), nan=0.5, neginf=-2.0) * a), (x,), 0),
        "std": (lambda a: total(ops.std(a, axis=(0, 2), ddof=1)) + ops.std(a) * ops.sum(a), (cube,), 0),
        "prod": (lambda a: total(ops.prod(a, axis=1)) + total(ops.prod(a * 0.8, axis=(0, 1), keepdims=True))
                 + ops.prod(a, axis=0) @ a[0], (_distinct(2, 3),), 0),
        "prod_one_zero": (lambda a: total(ops.prod(a, axis=1)) + total(ops.prod(a)), (_with_zeros(1),), 0),
        "cumsum": (lambda a: total(ops.cumsum(a, axis=1) * a) + total(ops.cumsum(a)), (cube,), 0),
        "einsum": (lambda a, b: total(ops.einsum("bij,jk->bik", a, b)) + total(ops.einsum("bij->bj", a * a)),
                   (cube[:, :, :2], y), (0, 1)),
        "tensordot_dot_outer": (lambda a, b: total(ops.tensordot(a, b, axes=([1, 0], [0, 1])))
                                + total(ops.dot(a[0], a[1, 0])) + total(ops.outer(a[0, 0], b[0])),
                                (cube, away(2, 2)), (0, 1)),
        "trace_diagonal": (lambda a: total(ops.trace(a, offset=1, axis1=1, axis2=2) * ops.sum(a))
                           + total(ops.diagonal(a, -1, 2, 0)), (cube,), 0),
        "triu_tril": (lambda a: total(ops.triu(a, 1) * 2.0 + ops.tril(a, -1) * a), (cube,), 0),
        "repeat_tile": (lambda a: total(ops.repeat(a, [1, 0], axis=1) * 1.5) + total(ops.tile(a, (2, 1)) * 0.5)
                        + total(ops.repeat(a, 2)), (x,), 0),
        "split": (lambda a: sum(total(p) * (i + 1.0) for i, p in enumerate(ops.split(a, [1], axis=2)))
                  + total(ops.split(a, 2)[1] * a[0]), (cube,), 0),
        "pad": (lambda a: total(ops.pad(a, ((1, 0), (0, 1)), constant_values=0.5))
                + total(ops.pad(a, 1, mode="reflect")) + total(ops.pad(a, (0, 1), mode="wrap") * 1.5)
                + total(ops.pad(a, 1, mode="edge")) + total(ops.pad(a, 1, mode="symmetric")), (x,), 0),
        "roll_flip": (lambda a: total(ops.roll(a, (1, -2), axis=(0, 2)) * a) + total(ops.flip(a, 1) * a)
                      + total(ops.roll(a, 3)), (cube,), 0),
        "sort": (lambda a: total(ops.sort(a, axis=0) * a) + total(ops.sort(a, descending=True)),
                 (_distinct(2, 3),), 0),
        "swapaxes": (lambda a: total(ops.swapaxes(a, 0, 2) * a.transpose(2, 1, 0)), (cube,), 0),
    }


CASES = array_cases()


@pytest.mark.slow  # ~6 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("name", sorted(CASES))
def test_array_op_hessian_matches_jax(name, x64, allow_rank_promotion):
    f, args, argnums = CASES[name]
    args = tuple(jnp.asarray(a) for a in args)
    both = jax.jit(lambda *a: (fdl.autodiff.hessian(f, argnums)(*a), jax.hessian(f, argnums)(*a)))
    actual, expected = both(*args)
    assert_close(actual, expected)


def test_prod_hessian_at_zeros_is_the_products_of_the_others(x64):
    """d²/dx_i dx_k Π_j x_j = Π_{j≠i,k} x_j (0 on the diagonal), written out: with one zero
    the only nonzero entries are in its row and column, with two zeros only at their pair."""
    one, two = np.array([2.0, 0.0, 3.0, 0.5]), np.array([0.0, 2.0, 0.0, -1.5])
    expected = [np.array([[0.0 if i == k else np.prod([x[j] for j in range(4) if j not in (i, k)])
                           for k in range(4)] for i in range(4)]) for x in (one, two)]
    hessians = jax.jit(jax.vmap(fdl.autodiff.hessian(ops.prod)))(jnp.asarray(np.stack([one, two])))
    np.testing.assert_allclose(hessians, expected, rtol=1e-15)
    assert np.count_nonzero(expected[1]) == 2  # with two zeros, only their pair


def test_prod_rule_is_recorded_by_a_nested_tape():
    """A rule in raw jax.numpy would see a Tensor of the outer tape and raise (or drop it)."""
    x = fdl.autodiff.Tensor(jnp.asarray([1.5, -2.0, 0.5]))
    g = fdl.autodiff.grad(lambda a: ops.prod(a))(x)
    assert isinstance(g, fdl.autodiff.Tensor)
    ops.sum(g).backward()  # Σ_i Π_{j≠i} x_j, differentiated: Σ_{i≠k} Π_{j≠i,k} x_j
    np.testing.assert_allclose(x.grad, [-2.0 + 0.5, 1.5 + 0.5, 1.5 - 2.0], rtol=1e-6)


def test_every_array_op_has_a_second_order_case():
    import inspect
    source = "".join(inspect.getsource(f) for f, _, _ in CASES.values())
    from funcdl import ops_array, ops_shape
    for name in ops_array.__all__ + ops_shape.__all__:
        assert f"ops.{name}(" in source or name in ("remainder", "floor_divide"), name
    assert "%" in source and "//" in source and "ops.remainder(" in source
