"""PyTorch golden values for the array-API ops of `fdl.ops` and the Tensor methods:
`.venv/bin/python tests/golden/generate_array_ops.py`.

Writes `tests/golden/array_ops.json` in the format of `generate_ops.py` (whose input kinds,
`Case` and `run_case` it reuses): per case the inputs, the cotangent, PyTorch's value and the
gradient of `(value * cotangent).sum()`. `tests/test_array_ops.py` holds the funcdl half
(`ARRAY_OPS[name]`) and `tests/test_tensor_methods.py` the methods' (`METHODS[name]`).
Where PyTorch spells an op differently (`repeat_interleave`, `tensor_split`, `F.pad`'s
reversed widths, `atan2`), the case writes PyTorch's spelling of the same function.
"""
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from generate_ops import Case, fixed, randn, run_case, signed_uniform, uniform  # noqa: E402

OUTPUT = pathlib.Path(__file__).with_name("array_ops.json")


def array_cases(torch, F):
    cases = []

    def case(name, torch_fn, *inputs, float32=False, exact=False):
        cases.append(Case(name, torch_fn, inputs, "float64", exact))
        if float32:
            cases.append(Case(name + "_f32", torch_fn, inputs, "float32", exact))

    # ---- piecewise constant: zero gradient ----------------------------------------------------
    case("sign", torch.sign, fixed([-2.0, 0.0, 0.5, -0.0, 3.0]), exact=True)
    case("floor", torch.floor, randn(2, 3, scale=3.0))
    case("ceil", torch.ceil, randn(2, 3, scale=3.0))
    case("round", torch.round, fixed([0.5, 1.5, 2.5, -0.5, -1.2, 2.7]), exact=True)  # halves to even
    case("round_decimals", lambda x: torch.round(x, decimals=1), randn(2, 3, scale=3.0))
    case("floor_divide", lambda x, y: torch.div(x, y, rounding_mode="floor"), randn(2, 3, scale=3.0),
         signed_uniform(0.5, 2.0, 2, 3))
    case("remainder", torch.remainder, randn(2, 3, scale=3.0), signed_uniform(0.5, 2.0, 2, 3), float32=True)
    # ---- elementwise ----------------------------------------------------------------------------
    case("log2", torch.log2, uniform(0.1, 3.0, 2, 3), float32=True)
    case("log10", torch.log10, uniform(0.1, 3.0, 2, 3))
    case("logaddexp", torch.logaddexp, randn(2, 3, scale=3.0), randn(2, 3, scale=3.0), float32=True)
    case("logaddexp_broadcast", torch.logaddexp, randn(2, 1, 4), randn(1, 3, 4))
    case("tan", torch.tan, uniform(-1.2, 1.2, 2, 3))
    case("sinh", torch.sinh, randn(2, 3, scale=2.0))
    case("cosh", torch.cosh, randn(2, 3, scale=2.0))
    case("arcsin", torch.asin, uniform(-0.9, 0.9, 2, 3))
    case("arccos", torch.acos, uniform(-0.9, 0.9, 2, 3))
    case("arctan", torch.atan, randn(2, 3, scale=2.0))
    case("arctan2", torch.atan2, randn(2, 3), randn(2, 3), float32=True)
    case("arctan2_broadcast", torch.atan2, randn(2, 1, 4), randn(1, 3, 4))
    non_finite = fixed([float("nan"), float("inf"), -float("inf"), 1.5, -2.0])
    case("nan_to_num", torch.nan_to_num, non_finite)
    case("nan_to_num_values", lambda x: torch.nan_to_num(x, nan=1.0, posinf=2.0, neginf=-3.0), non_finite)
    # ---- reductions and scans -----------------------------------------------------------------------
    x = randn(2, 3, 4)
    case("std", lambda x: torch.std(x, correction=0), x, float32=True)
    case("std_axis1_ddof1", lambda x: torch.std(x, dim=1, correction=1), x)
    case("std_axes02_keepdims", lambda x: torch.std(x, dim=(0, 2), correction=0, keepdim=True), x)
    case("prod", torch.prod, uniform(0.5, 1.5, 2, 3))
    case("prod_axis1", lambda x: torch.prod(x, dim=1), randn(2, 3, 4))
    case("prod_axes02", lambda x: torch.prod(torch.prod(x, dim=2), dim=0), randn(2, 3, 4))
    case("prod_axis0_keepdims", lambda x: torch.prod(x, dim=0, keepdim=True), randn(3, 2))
    case("prod_one_zero", lambda x: torch.prod(x, dim=1), fixed([[2.0, 0.0, 3.0], [1.5, -2.0, 0.5]]))
    case("prod_two_zeros", torch.prod, fixed([2.0, 0.0, 3.0, 0.0]))
    case("cumsum", lambda x: torch.cumsum(x, dim=1), randn(2, 3, 4), float32=True)
    case("cumsum_axis_neg1", lambda x: torch.cumsum(x, dim=-1), randn(2, 3, 4))
    case("cumsum_flat", lambda x: torch.cumsum(x.flatten(), dim=0), randn(2, 3))
    # ---- contractions ----------------------------------------------------------------------------
    case("einsum_matmul", lambda a, b: torch.einsum("ij,jk->ik", a, b), randn(2, 3), randn(3, 4), float32=True)
    case("einsum_batch", lambda a, b: torch.einsum("bij,bjk->bik", a, b), randn(2, 3, 4), randn(2, 4, 2))
    case("einsum_implicit", lambda a, b: torch.einsum("ij,jk", a, b), randn(2, 3), randn(3, 4))
    case("einsum_summed_letter", lambda a: torch.einsum("ij->i", a), randn(2, 3))
    case("einsum_ellipsis", lambda a, b: torch.einsum("...ij,jk->...ik", a, b), randn(2, 2, 3), randn(3, 4))
    case("einsum_inner", lambda a, b: torch.einsum("i,i->", a, b), randn(5), randn(5))
    case("einsum_three", lambda a, b, c: torch.einsum("ij,jk,k->i", a, b, c), randn(2, 3), randn(3, 4), randn(4))
    case("outer", torch.outer, randn(3), randn(4))
    case("tensordot", lambda a, b: torch.tensordot(a, b, dims=2), randn(2, 3, 4), randn(3, 4, 2))
    case("tensordot_pairs", lambda a, b: torch.tensordot(a, b, dims=([1, 0], [0, 2])), randn(2, 3, 4),
         randn(3, 5, 2))
    case("dot_matrix", lambda a, b: a @ b, randn(2, 3), randn(3, 4))
    case("dot_vector", lambda a, b: a @ b, randn(2, 3), randn(3))
    case("dot_nd", lambda a, b: torch.tensordot(a, b, dims=([2], [1])), randn(2, 2, 3), randn(2, 3, 4))
    # ---- shape -----------------------------------------------------------------------------------
    case("diagonal", torch.diagonal, randn(3, 4), float32=True)
    case("diagonal_offset", lambda x: torch.diagonal(x, 1), randn(3, 4))
    case("diagonal_negative_offset_axes", lambda x: torch.diagonal(x, -1, 2, 0), randn(3, 2, 4))
    case("trace", torch.trace, randn(3, 3))
    case("trace_offset", lambda x: torch.diagonal(x, 1, 1, 2).sum(-1), randn(2, 3, 4))
    case("triu", torch.triu, randn(3, 4))
    case("triu_k1_batch", lambda x: torch.triu(x, 1), randn(2, 3, 4))
    case("tril", torch.tril, randn(3, 4), float32=True)
    case("tril_k_neg1", lambda x: torch.tril(x, -1), randn(4, 3))
    case("repeat", lambda x: torch.repeat_interleave(x, 2, dim=1), randn(2, 3))
    case("repeat_flat", lambda x: torch.repeat_interleave(x, 3), randn(2, 2))
    case("repeat_counts", lambda x: torch.repeat_interleave(x, torch.tensor([1, 0, 3]), dim=0), randn(3, 2))
    case("tile", lambda x: torch.tile(x, (2, 3)), randn(2, 3))
    case("tile_more_reps", lambda x: torch.tile(x, (2, 1, 2)), randn(2, 3))
    case("split_sections", lambda x: torch.cat([p * (i + 1.0) for i, p in enumerate(torch.chunk(x, 3, 1))], 1),
         randn(2, 6))
    case("split_indices", lambda x: torch.cat([p * (i + 1.0) for i, p in enumerate(torch.tensor_split(x, [1, 3]))]),
         randn(4, 2))
    case("pad_constant", lambda x: F.pad(x, (2, 1, 1, 0), value=0.5), randn(2, 3))
    case("pad_reflect", lambda x: F.pad(x, (2, 1, 1, 2), mode="reflect"), randn(1, 4, 5))
    case("pad_edge", lambda x: F.pad(x, (2, 1, 1, 2), mode="replicate"), randn(1, 3, 4))
    case("pad_wrap", lambda x: F.pad(x, (2, 1, 1, 2), mode="circular"), randn(1, 3, 4))
    case("roll", lambda x: torch.roll(x, 2, 1), randn(2, 5))
    case("roll_flat", lambda x: torch.roll(x, -3), randn(2, 3))
    case("roll_two_axes", lambda x: torch.roll(x, (1, -2), (0, 2)), randn(2, 3, 4))
    case("flip", lambda x: torch.flip(x, (0, 1)), randn(2, 3))
    case("flip_axis1", lambda x: torch.flip(x, (1,)), randn(2, 3, 4))
    case("sort", lambda x: torch.sort(x, dim=-1, stable=True).values, randn(3, 4), float32=True)
    case("sort_axis0", lambda x: torch.sort(x, dim=0, stable=True).values, randn(3, 4))
    case("sort_descending", lambda x: torch.sort(x, descending=True, stable=True).values, randn(2, 5))
    case("sort_ties", lambda x: torch.sort(x, stable=True).values, fixed([[3.0, 1.0, 3.0, 2.0, 1.0]]))
    case("sort_flat", lambda x: torch.sort(x.flatten(), stable=True).values, randn(2, 3))
    case("swapaxes", lambda x: torch.swapaxes(x, 0, 2), randn(2, 3, 4))
    return cases


def build_cases():
    """All golden cases, deterministic (each draws from RandomState(crc32(name)))."""
    import torch
    import torch.nn.functional as F

    cases = array_cases(torch, F)
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
