"""The array-API ops of `fdl.ops` (funcdl/ops_array.py, funcdl/ops_shape.py), three ways.

1. Against PyTorch float64 (tests/golden/array_ops.json, written by
   tests/golden/generate_array_ops.py): values and gradients on arrays, on Tensors, by
   `fdl.autodiff.grad`, `Tensor.backward` and `jax.grad`, through `test_ops`'s oracle helper.
2. fdl.autodiff vs jax.grad vs central finite differences in float64: `fdl.gradcheck` over the
   array cases of `funcdl gradcheck`'s built-in set.
3. hypothesis-drawn shapes and axes (size-1 axes included) for the shape ops, fdl.autodiff
   against jax.grad of the same `jax.numpy` function.
Then the bad inputs, each a TypeError / ValueError naming the argument.
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

import funcdl as fdl
from funcdl import ops
from funcdl.autodiff import Tensor
from funcdl.gradcheck import check_grads
from funcdl.gradcheck_array import array_cases
from test_ops import _check_op

GOLDEN_PATH = pathlib.Path(__file__).parent / "golden" / "array_ops.json"
GOLDEN = {case["name"]: case for case in json.loads(GOLDEN_PATH.read_text())["cases"]}


def _pieces(pieces, axis=0):
    return ops.concatenate([p * (i + 1.0) for i, p in enumerate(pieces)], axis=axis)


# name of the golden case -> the same function in funcdl (`<name>_f32` uses `<name>`'s).
ARRAY_OPS = {
    "sign": ops.sign, "floor": ops.floor, "ceil": ops.ceil, "round": ops.round,
    "round_decimals": lambda x: ops.round(x, decimals=1),
    "floor_divide": lambda x, y: x // y, "remainder": lambda x, y: x % y,
    "log2": ops.log2, "log10": ops.log10, "logaddexp": ops.logaddexp, "logaddexp_broadcast": ops.logaddexp,
    "tan": ops.tan, "sinh": ops.sinh, "cosh": ops.cosh, "arcsin": ops.arcsin, "arccos": ops.arccos,
    "arctan": ops.arctan, "arctan2": ops.arctan2, "arctan2_broadcast": ops.arctan2,
    "nan_to_num": ops.nan_to_num,
    "nan_to_num_values": lambda x: ops.nan_to_num(x, nan=1.0, posinf=2.0, neginf=-3.0),
    "std": ops.std, "std_axis1_ddof1": lambda x: ops.std(x, axis=1, ddof=1),
    "std_axes02_keepdims": lambda x: ops.std(x, axis=(0, 2), keepdims=True),
    "prod": ops.prod, "prod_axis1": lambda x: ops.prod(x, axis=1), "prod_axes02": lambda x: ops.prod(x, axis=(0, 2)),
    "prod_axis0_keepdims": lambda x: ops.prod(x, axis=0, keepdims=True),
    "prod_one_zero": lambda x: ops.prod(x, axis=1), "prod_two_zeros": ops.prod,
    "cumsum": lambda x: ops.cumsum(x, axis=1), "cumsum_axis_neg1": lambda x: ops.cumsum(x, axis=-1),
    "cumsum_flat": ops.cumsum,
    "einsum_matmul": lambda a, b: ops.einsum("ij,jk->ik", a, b),
    "einsum_batch": lambda a, b: ops.einsum("bij,bjk->bik", a, b),
    "einsum_implicit": lambda a, b: ops.einsum("ij,jk", a, b),
    "einsum_summed_letter": lambda a: ops.einsum("ij->i", a),
    "einsum_ellipsis": lambda a, b: ops.einsum("...ij,jk->...ik", a, b),
    "einsum_inner": lambda a, b: ops.einsum("i,i->", a, b),
    "einsum_three": lambda a, b, c: ops.einsum("ij,jk,k->i", a, b, c),
    "outer": ops.outer, "tensordot": ops.tensordot,
    "tensordot_pairs": lambda a, b: ops.tensordot(a, b, axes=([1, 0], [0, 2])),
    "dot_matrix": ops.dot, "dot_vector": ops.dot, "dot_nd": ops.dot,
    "diagonal": ops.diagonal, "diagonal_offset": lambda x: ops.diagonal(x, 1),
    "diagonal_negative_offset_axes": lambda x: ops.diagonal(x, -1, 2, 0),
    "trace": ops.trace, "trace_offset": lambda x: ops.trace(x, 1, 1, 2),
    "triu": ops.triu, "triu_k1_batch": lambda x: ops.triu(x, 1), "tril": ops.tril,
    "tril_k_neg1": lambda x: ops.tril(x, k=-1),
    "repeat": lambda x: ops.repeat(x, 2, axis=1), "repeat_flat": lambda x: ops.repeat(x, 3),
    "repeat_counts": lambda x: ops.repeat(x, [1, 0, 3], axis=0),
    "tile": lambda x: ops.tile(x, (2, 3)), "tile_more_reps": lambda x: ops.tile(x, (2, 1, 2)),
    "split_sections": lambda x: _pieces(ops.split(x, 3, axis=1), axis=1),
    "split_indices": lambda x: _pieces(ops.split(x, [1, 3])),
    "pad_constant": lambda x: ops.pad(x, ((1, 0), (2, 1)), constant_values=0.5),
    "pad_reflect": lambda x: ops.pad(x, ((0, 0), (1, 2), (2, 1)), mode="reflect"),
    "pad_edge": lambda x: ops.pad(x, ((0, 0), (1, 2), (2, 1)), mode="edge"),
    "pad_wrap": lambda x: ops.pad(x, ((0, 0), (1, 2), (2, 1)), mode="wrap"),
    "roll": lambda x: ops.roll(x, 2, axis=1), "roll_flat": lambda x: ops.roll(x, -3),
    "roll_two_axes": lambda x: ops.roll(x, (1, -2), axis=(0, 2)),
    "flip": ops.flip, "flip_axis1": lambda x: ops.flip(x, 1),
    "sort": ops.sort, "sort_axis0": lambda x: ops.sort(x, axis=0),
    "sort_descending": lambda x: ops.sort(x, descending=True), "sort_ties": ops.sort,
    "sort_flat": lambda x: ops.sort(x, axis=None), "swapaxes": lambda x: ops.swapaxes(x, 0, 2),
}


@pytest.mark.parametrize("name", list(ARRAY_OPS))
def test_op_matches_torch(name, x64, allow_rank_promotion):
    for golden_name in (name + "_f32", name):
        if golden_name in GOLDEN:
            _check_op(golden_name, ARRAY_OPS[name], GOLDEN[golden_name])


def test_every_golden_case_has_a_funcdl_expression():
    assert {name.removesuffix("_f32") for name in GOLDEN} == set(ARRAY_OPS)
    assert GOLDEN_PATH.stat().st_size < 200_000


CASES = array_cases()


@pytest.mark.parametrize("name", list(CASES))
def test_fdl_jax_and_finite_differences_agree(name):
    f, args, argnums = CASES[name]
    with jax.numpy_rank_promotion("allow"):
        report = check_grads(f, args, argnums=argnums)
    assert report.passed and all(leaf.fd_method == "dir+elem" for leaf in report.leaves)


def test_every_op_is_in_the_built_in_set():
    from funcdl import ops_array, ops_shape
    from funcdl.autodiff.vjps_array import ARRAY_PRIMITIVES
    import inspect
    source = "".join(inspect.getsource(f) for f, _, _ in CASES.values())
    for name in ops_array.__all__ + ops_shape.__all__:
        assert f"ops.{name}(" in source or name in ("remainder", "floor_divide"), name
    assert "%" in source and "//" in source and set(ARRAY_PRIMITIVES) <= set(fdl.autodiff.vjps.PRIMITIVES)


# ---- hypothesis: shapes with size-1 axes, every axis, against jax.grad of jax.numpy -------------
SHAPE_OPS = {  # name -> (funcdl op, jax.numpy op) of (x, axis, k)
    "flip": (lambda x, a, k: ops.flip(x, a), lambda x, a, k: jnp.flip(x, a)),
    "roll": (lambda x, a, k: ops.roll(x, k, a), lambda x, a, k: jnp.roll(x, k, a)),
    "cumsum": (lambda x, a, k: ops.cumsum(x, a), lambda x, a, k: jnp.cumsum(x, a)),
    "sort": (lambda x, a, k: ops.sort(x, a), lambda x, a, k: jnp.sort(x, a)),
    "prod": (lambda x, a, k: ops.prod(x, a), lambda x, a, k: jnp.prod(x, a)),
    "std": (lambda x, a, k: ops.std(x, a), lambda x, a, k: jnp.std(x, a)),
    "repeat": (lambda x, a, k: ops.repeat(x, abs(k), a), lambda x, a, k: jnp.repeat(x, abs(k), a)),
    "pad_symmetric": (lambda x, a, k: ops.pad(x, abs(k), mode="symmetric"),
                    lambda x, a, k: jnp.pad(x, abs(k), mode="symmetric")),
    "diagonal": (lambda x, a, k: ops.diagonal(x, k, a, (a + 1) % x.ndim),
                 lambda x, a, k: jnp.diagonal(x, k, a, (a + 1) % x.ndim)),
    "triu": (lambda x, a, k: ops.triu(x, k), lambda x, a, k: jnp.triu(x, k)),
}


@pytest.mark.slow  # ~69 s: the slow tier (`make test-slow`, run by CI)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@pytest.mark.parametrize("name", list(SHAPE_OPS))
def test_shape_ops_agree_with_jax_on_drawn_shapes(name, data, x64):
    shape = data.draw(st.lists(st.integers(1, 4), min_size=2, max_size=3).map(tuple), label="shape")
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis") % len(shape)
    k = data.draw(st.integers(-3, 3), label="k")
    x = jnp.asarray(np.random.default_rng(len(shape) + k + 3).permutation(int(np.prod(shape))).reshape(shape) / 7 + 0.3)
    ours, theirs = SHAPE_OPS[name]
    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=np.shape(theirs(x, axis, k))))
    np.testing.assert_allclose(ours(x, axis, k), theirs(x, axis, k), rtol=1e-13)
    by_fdl = fdl.autodiff.grad(lambda x: ops.sum(ours(x, axis, k) * cotangent))(x)
    by_jax = jax.grad(lambda x: jnp.sum(theirs(x, axis, k) * cotangent))(x)
    np.testing.assert_allclose(by_fdl, by_jax, rtol=1e-12, atol=1e-14)


# ---- bad input ---------------------------------------------------------------------------------------
x23 = jnp.ones((2, 3))


@pytest.mark.parametrize("call, error, match", [
    (lambda: ops.round(x23, 1.5), TypeError, r"round: `decimals` must be an int, got float"),
    (lambda: ops.std(x23, ddof=0.5), TypeError, r"std: `ddof` must be an int"),
    (lambda: ops.prod(x23, axis=2), ValueError, r"prod: `axis` 2 is out of range for an array of rank 2"),
    (lambda: ops.cumsum(x23, axis=(0, 1)), TypeError, r"cumsum: `axis` must be an int, got tuple"),
    (lambda: ops.nan_to_num(x23, nan="0"), TypeError, r"nan_to_num: `nan` must be a number, got str"),
    (lambda: ops.einsum(3, x23), TypeError, r"einsum: `subscripts` must be a str, got int"),
    (lambda: ops.einsum("ii->i", jnp.ones((2, 2))), ValueError, r"operand 0 repeats a subscript in 'ii'"),
    (lambda: ops.einsum("ij,jk->ik", x23, x23), ValueError, r"subscript 'j' has size 3 in one operand and 2"),
    (lambda: ops.einsum("ijk->i", x23), ValueError, r"einsum: .*do not fit|needs 2 subscripts"),
    (lambda: ops.tensordot(x23, x23, axes=3), ValueError, r"tensordot: `axes` 3 must lie in \[0, 2\]"),
    (lambda: ops.tensordot(x23, x23, axes="x"), TypeError, r"tensordot: `axes` must be an int or a pair"),
    (lambda: ops.diagonal(jnp.ones(3)), ValueError, r"diagonal: `x` must have at least 2 dimensions, got shape \(3,\)"),
    (lambda: ops.diagonal(x23, 0, 1, 1), ValueError, r"`axis1` and `axis2` must differ"),
    (lambda: ops.triu(jnp.ones(3)), ValueError, r"triu: `x` must have at least 2 dimensions"),
    (lambda: ops.repeat(x23, [1, 2], axis=1), ValueError, r"repeat: `repeats` must be a non-negative int or 3"),
    (lambda: ops.repeat(x23, 1.5), TypeError, r"repeat: `repeats` must be an int, got float"),
    (lambda: ops.tile(x23, (-1, 2)), ValueError, r"tile: `reps` must be non-negative"),
    (lambda: ops.split(x23, 2, axis=1), ValueError, r"split: 2 sections do not divide axis 1 of size 3"),
    (lambda: ops.pad(x23, 1, mode="mean"), ValueError, r"pad: `mode` must be one of constant, edge"),
    (lambda: ops.pad(x23, ((1, 2, 3),)), ValueError, r"pad: `pad_width` .* does not fit an array of rank 2"),
    (lambda: ops.pad(x23, -1), ValueError, r"pad: `pad_width` must be non-negative"),
    (lambda: ops.pad(x23, 1.5), TypeError, r"pad: `pad_width` must hold ints"),
    (lambda: ops.pad(x23, 1, constant_values=x23), TypeError, r"pad: `constant_values` must be a number"),
    (lambda: ops.roll(x23, (1, 2), axis=0), ValueError, r"roll: `shift` \(1, 2\) and `axis` 0 must have the same length"),
    (lambda: ops.roll(x23, (1, 2)), ValueError, r"roll: a sequence `shift` \(1, 2\) needs `axis`"),
    (lambda: ops.flip(x23, (0, 0)), ValueError, r"flip: `axis` \(0, 0\) names an axis twice"),
    (lambda: ops.sort(x23, descending=1), TypeError, r"sort: `descending` must be a bool, got int"),
    (lambda: ops.swapaxes(x23, 0, 5), ValueError, r"swapaxes: `axis2` 5 is out of range"),
])
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_tape_and_array_values_are_identical():
    """On a Tensor every op records itself and computes exactly the array path's numbers."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)))
    for f in (lambda a: ops.sort(a), lambda a: ops.einsum("ij,kj->ik", a, a), lambda a: ops.pad(a, 1, mode="wrap")):
        out = f(Tensor(x))
        assert isinstance(out, Tensor)
        np.testing.assert_array_equal(out.value, f(x))


def test_golden_file_is_fresh():
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("generate_array_ops", GOLDEN_PATH.with_name("generate_array_ops.py"))
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    fresh = {case["name"]: case for case in generator.build_cases()["cases"]}
    assert list(fresh) == list(GOLDEN), "rerun tests/golden/generate_array_ops.py"
    for name, case in fresh.items():
        assert json.dumps(case["inputs"]) == json.dumps(GOLDEN[name]["inputs"]), name
        np.testing.assert_allclose(np.asarray(case["value"], float), np.asarray(GOLDEN[name]["value"], float),
                                   rtol=1e-12, err_msg=name)
        for fresh_grad, committed in zip(case["grads"], GOLDEN[name]["grads"], strict=True):
            np.testing.assert_allclose(fresh_grad, committed, rtol=1e-12, atol=1e-15, err_msg=name)
