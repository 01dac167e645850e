"""Check `fdl.autodiff` against `jax.grad` and central finite differences, leaf by leaf.

    >>> import jax.numpy as jnp, funcdl as fdl
    >>> from funcdl.gradcheck import check_grads
    >>> f = lambda p, x: fdl.ops.sum(fdl.ops.tanh(x @ p["w"] + p["b"]))
    >>> p = {"w": jnp.ones((3, 2)), "b": jnp.zeros((1, 2))}
    >>> report = check_grads(f, (p, jnp.full((4, 3), 0.1)))
    >>> report.passed, [leaf.path for leaf in report.leaves]
    (True, ["argument 0['b']", "argument 0['w']"])

Everything runs in float64 (inputs are cast, inside a local `jax.enable_x64(True)`), so the
two autodiffs agree to rounding and finite differences are accurate to about 1e-9 relative.
Finite differences are taken per leaf, as HIPS autograd's `check_vjp` does: for one random
unit direction v (fixed seed) the directional derivative (f(x + hv) - f(x - hv)) / 2h is
compared with <grad, v>, one scalar per leaf; leaves of at most `max_elementwise` elements are
also differenced element by element, so the report gives per-element maximum errors.
Second order (`order=2`): per differentiated leaf, its rows of the Hessian by `fdl.autodiff`
(fdl in fdl: `fdl.autodiff.hessian`, the tape's backward pass differentiated by the tape)
against `jax.hessian`, and both applied to a random unit direction v against central
differences of jax's gradient, (∇f(x + hv) - ∇f(x - hv)) / 2h ≈ H v.

Finite differences are wrong across a kink (abs, relu, clip, maximum, ... at their switching
points): check such functions away from their kinks, or with `finite_differences=False`.
"""
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import funcdl.autodiff

__all__ = ["check_grads", "GradcheckReport", "LeafReport", "Errors", "format_reports", "kink_hint"]


class Errors(NamedTuple):
    """One comparison of a gradient with its reference; `nan` where it was not made."""
    max_abs: float  # max |gradient - reference|
    max_rel: float  # max_abs / the reference's scale (see `check_grads`)
    passed: bool


NOT_CHECKED = Errors(float("nan"), float("nan"), True)


class LeafReport(NamedTuple):
    """The checks of one differentiated leaf, e.g. path "argument 0['w']"."""
    path: str
    shape: tuple
    dtype: str  # the dtype the caller passed (checked in float64 regardless)
    fdl_vs_jax: Errors  # every element of the two gradients
    fdl_vs_fd: Errors  # the directional check, and the per-element one when made
    jax_vs_fd: Errors
    fd_method: str  # "dir" (directional only), "dir+elem" (and per element) or "none"

    @property
    def passed(self):
        return self.fdl_vs_jax.passed and self.fdl_vs_fd.passed and self.jax_vs_fd.passed


class GradcheckReport(NamedTuple):
    """One row per differentiated leaf, with the tolerances used; `str()` gives a table."""
    leaves: tuple
    rtol: float
    atol: float
    autodiff_rtol: float
    autodiff_atol: float
    hints: tuple = ()  # the likely cause of a failure, one line each (see `kink_hint`)
    order: int = 1  # 2: the rows of the Hessian and H v (see `check_grads`)

    @property
    def passed(self):
        return all(leaf.passed for leaf in self.leaves)

    def __str__(self):
        failed = sum(not leaf.passed for leaf in self.leaves)
        verdict = "all passed" if not failed else f"{failed} FAILED"
        what = "" if self.order == 1 else ", second order"
        return (f"gradcheck{what}: {len(self.leaves)} leaves, {verdict} (fdl vs jax: rtol "
                f"{self.autodiff_rtol:g}, atol {self.autodiff_atol:g}; vs finite differences: "
                f"rtol {self.rtol:g}, atol {self.atol:g})\n" + format_reports({"": self})
                + "".join("\nhint: " + hint for hint in self.hints))


_HEADER = ("leaf", "shape", "dtype", "fdl-jax abs", "rel", "fdl-FD abs", "rel",
           "jax-FD abs", "rel", "FD", "ok")


def format_reports(reports: Mapping[str, "GradcheckReport"]) -> str:
    """A markdown table of the leaves of several reports: {function name: report} -> str.

    The first column is "name: leaf path" (just the path for the name "").
    """
    rows = [_HEADER]
    for name, report in reports.items():
        for leaf in report.leaves:
            errors = (leaf.fdl_vs_jax, leaf.fdl_vs_fd, leaf.jax_vs_fd)
            rows.append((f"{name}: {leaf.path}" if name else leaf.path, str(leaf.shape), leaf.dtype,
                         *(f"{x:.1e}" for e in errors for x in e[:2]),
                         leaf.fd_method, "ok" if leaf.passed else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def check_grads(f: Callable[..., Any], args: tuple, *, argnums: int | tuple[int, ...] = 0,
                order: int = 1, rtol: float = 1e-6, atol: float = 1e-9,
                autodiff_rtol: float = 1e-10, autodiff_atol: float = 1e-12, step: float = 1e-6,
                max_elementwise: int = 64, finite_differences: bool = True, jit: bool = True,
                seed: int = 0) -> GradcheckReport:
    """Compare the gradients of `f` by `fdl.autodiff`, `jax.grad` and central differences.

    f: a function of the positional `args` (a tuple of pytrees of arrays) returning a scalar,
    written with Python operators and `fdl.ops`. argnums: int or tuple of ints, the arguments
    differentiated (their leaves must be floating point). Every floating-point leaf of `args`
    is cast to float64 and everything runs inside a local `jax.enable_x64(True)`.

    Per leaf, with g the gradient under test and r its reference:
    - fdl vs jax: max|g - r| <= autodiff_atol + autodiff_rtol * max|r|. Two correct reverse
      modes in float64 differ only by rounding, ~1e-14 relative, so 1e-10 leaves room for
      cancellation yet catches a rule that loses precision (e.g. a float32 cast, ~1e-7).
    - each vs finite differences with step h = `step` along a random unit direction v:
      |<g, v> - d| <= atol + rtol * max(|d|, Σ|gᵢvᵢ|), d = (f(x + hv) - f(x - hv)) / 2h (the
      Σ keeps cancellation in <g, v> from shrinking the scale); for leaves of at most
      `max_elementwise` elements also per element: max|g - d| <= atol + rtol * max|d|.
      In float64 with h = 1e-6 the rounding error of d is ~1e-16 |f| / h = 1e-10 |f| and the
      truncation error ~h² f''' = 1e-12 f''', hence rtol = 1e-6 and atol = 1e-9 with a
      margin of 100 for functions whose value is large next to their gradient.
    "rel" in the report is the error divided by that scale. finite_differences=False skips
    the comparisons with finite differences (for functions with kinks at the point).

    jit: trace both autodiffs and the finite differences into one `jax.jit` program (one
    compile, several times faster than op-by-op dispatch for small functions); False runs
    them eagerly. The non-differentiated arguments are constants of that program. f is
    evaluated under `jax.vmap` for the finite differences, so it must be traceable (as it must
    be for `jax.grad`). seed: for the random directions.

    order: 1 (gradients, above) or 2: per leaf x_i, its rows of the Hessian, H[i, :], by
    `fdl.autodiff.hessian` against `jax.hessian` (same tolerances as the gradients), and
    (H v)_i of each against central differences of `jax.grad` along one random unit
    direction v over all the differentiated leaves, (∇f(x + hv) - ∇f(x - hv))_i / 2h, with the
    directional tolerances above (fd_method "dir"; `max_elementwise` is not used).

    Returns a `GradcheckReport` (print it for a table); raises `AssertionError(report)` when
    any leaf fails.
    """
    if not isinstance(args, tuple):
        raise TypeError(f"`args` must be a tuple of positional arguments, got {type(args).__name__}")
    if isinstance(order, bool) or order not in (1, 2):
        raise ValueError(f"`order` must be 1 or 2, got {order!r}")
    positions = _positions(argnums, len(args))
    dtypes = [jax.tree_util.tree_map(lambda x: str(jnp.result_type(x)), a) for a in args]
    for i in positions:
        for path, x in jax.tree_util.tree_flatten_with_path(args[i])[0]:
            if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
                raise TypeError(f"`args`: argument {i}{jax.tree_util.keystr(path)} must be "
                                f"floating-point to be differentiated, got {jnp.result_type(x)}")
    if order == 2:
        return _check_second_order(f, args, positions, dtypes, rtol, atol, autodiff_rtol,
                                   autodiff_atol, step, finite_differences, jit, seed)
    with jax.enable_x64(True):
        args = tuple(jax.tree_util.tree_map(_as_float64, a) for a in args)
        flat = {i: jax.tree_util.tree_flatten_with_path(args[i]) for i in positions}
        rng = np.random.default_rng(seed)
        leaf_keys = [(i, k) for i in positions for k in range(len(flat[i][0]))]
        directions = [_directions(flat[i][0][k][1], rng, max_elementwise) for i, k in leaf_keys]

        def gradients_and_slopes(diff_args, directions):
            full = list(args)
            for i, arg in zip(positions, diff_args):
                full[i] = arg
            slopes = [_central_differences(f, full, i, k, d, step, batched=jit)
                      for (i, k), d in zip(leaf_keys, directions)] if finite_differences else None
            return (funcdl.autodiff.grad(f, argnums=positions)(*full),
                    jax.grad(f, argnums=positions)(*full), slopes)

        # One compile for all three beats op-by-op dispatch, which compiles every primitive.
        run = jax.jit(gradients_and_slopes) if jit else gradients_and_slopes
        grads_fdl, grads_jax, slopes = run(tuple(args[i] for i in positions), directions)
    leaves = []
    for n, (i, k) in enumerate(leaf_keys):
        (path, x), treedef = flat[i][0][k], flat[i][1]
        name = f"argument {i}{jax.tree_util.keystr(path)}"
        gf = treedef.flatten_up_to(grads_fdl[positions.index(i)])[k]
        gj = treedef.flatten_up_to(grads_jax[positions.index(i)])[k]
        if jnp.shape(gf) != jnp.shape(x):
            raise AssertionError(f"fdl.autodiff's gradient for {name} has shape {jnp.shape(gf)}, "
                                 f"expected {jnp.shape(x)}")
        gf, gj = np.asarray(gf, np.float64), np.asarray(gj, np.float64)
        fd = None if slopes is None else (directions[n][0], np.asarray(slopes[n], np.float64))
        method = "none" if fd is None else "dir" if len(fd[1]) == 1 else "dir+elem"
        leaves.append(LeafReport(name, tuple(jnp.shape(x)), treedef.flatten_up_to(dtypes[i])[k],
                                 _compare(gf, gj, autodiff_rtol, autodiff_atol),
                                 _compare_fd(gf, fd, rtol, atol), _compare_fd(gj, fd, rtol, atol),
                                 method))
    hints = tuple(hint for leaf, (i, k) in zip(leaves, leaf_keys)
                  if (hint := kink_hint(leaf, np.asarray(flat[i][0][k][1]))) is not None)
    report = GradcheckReport(tuple(leaves), rtol, atol, autodiff_rtol, autodiff_atol, hints)
    if not report.passed:
        raise AssertionError(report)
    return report


def kink_hint(leaf: LeafReport, x: np.ndarray) -> str | None:
    """The likely cause when fdl.autodiff and jax.grad differ on a leaf whose input `x` holds
    exact zeros or tied values (a kink), else None: there the tape takes PyTorch's derivative,
    while plain jax.numpy on jax arrays (the builtin `abs()`, `**`, `jnp.maximum`) takes jax's."""
    if leaf.fdl_vs_jax.passed or x.size == 0:
        return None
    zeros, ties = int(np.sum(x == 0)), int(x.size - np.unique(x).size)
    if not zeros and not ties:
        return None
    found = " and ".join(text for count, text in ((zeros, f"{zeros} exact zero(s)"),
                                                  (ties, f"{ties} tied value(s)")) if count)
    return (f"{leaf.path}: fdl.autodiff and jax.grad differ and the input holds {found}, a kink: the "
            "tape takes PyTorch's derivative there (d|x|/dx = 0 at 0, ties share), while plain "
            "jax.numpy on the jax path takes jax's own (the builtin abs() on a jax array has slope 1 "
            "at 0, `**` is jnp.power); write fdl.ops.abs / fdl.ops.power / fdl.ops.maximum to get "
            "PyTorch's in both, or check away from the kink")


def _positions(argnums, n_args):
    """`argnums` as a tuple of non-negative positions into the `n_args` arguments."""
    ints = (argnums,) if isinstance(argnums, int) else argnums
    if (isinstance(argnums, bool) or not isinstance(ints, tuple) or not ints
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ints)):
        raise TypeError(f"`argnums` must be an int or a non-empty tuple of ints, got {argnums!r}")
    if not all(-n_args <= i < n_args for i in ints):
        raise ValueError(f"`argnums` must index the {n_args} positional argument(s) in `args`, "
                         f"got {argnums!r}")
    return tuple(i % n_args for i in ints)


def _as_float64(x):
    """Floating-point leaves (and Python floats) as float64 jax arrays; other leaves as given."""
    if isinstance(x, float) or (hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)):
        return jnp.asarray(x, dtype=jnp.float64)
    return x


def _compare(g, reference, rtol, atol):
    """Elementwise: max|g - reference| against atol + rtol * max|reference|."""
    if g.size == 0:
        return Errors(0.0, 0.0, True)
    with np.errstate(invalid="ignore"):  # inf - inf: nan, which fails below as it should
        max_abs = float(np.max(np.abs(g - reference)))
    scale = float(np.max(np.abs(reference)))
    return Errors(max_abs, max_abs / scale if scale else (0.0 if max_abs == 0 else float("inf")),
                  bool(max_abs <= atol + rtol * scale))  # False for nan


def _directions(x, rng, max_elementwise):
    """`(m, *x.shape)` float64: a random unit direction, then (small leaves) each unit vector."""
    v = rng.standard_normal(x.shape)
    rows = [(v / (np.linalg.norm(v) or 1.0)).reshape(1, *x.shape)]
    if 0 < x.size <= max_elementwise:
        rows.append(np.eye(x.size).reshape(x.size, *x.shape))
    return np.concatenate(rows)


def _central_differences(f, args, i, k, directions, step, batched):
    """`(m,)`: (f(x + h d) - f(x - h d)) / 2h for each direction d of leaf k of argument i.

    batched: evaluate all 2m points in one `jax.vmap(f)` (one copy of f in a jitted
    program); else call f on each point (eagerly, that reuses f's compiled primitives).
    """
    flat, treedef = jax.tree_util.tree_flatten(args[i])

    def f_of_leaf(leaf):
        new_arg = jax.tree_util.tree_unflatten(treedef, flat[:k] + [leaf] + flat[k + 1:])
        return f(*args[:i], new_arg, *args[i + 1:])

    m = directions.shape[0]
    if batched:
        x = flat[k][None]  # explicit rank, so strict rank promotion holds
        values = jax.vmap(f_of_leaf)(jnp.concatenate([x + step * directions, x - step * directions]))
    else:  # NumPy arithmetic: no new shapes for jax to compile
        x = np.asarray(flat[k])[None]
        points = np.concatenate([x + step * directions, x - step * directions])
        values = np.array([float(f_of_leaf(jnp.asarray(p))) for p in points])
    return (values[:m] - values[m:]) / (2 * step)


def _compare_fd(g, fd, rtol, atol):
    """The directional check, merged with the per-element one when it was made."""
    if fd is None:
        return NOT_CHECKED
    v, slopes = fd
    slope, per_element = slopes[0], slopes[1:].reshape(v.shape) if len(slopes) > 1 else None
    err = abs(float(np.sum(g * v)) - slope)
    scale = max(abs(slope), float(np.sum(np.abs(g * v))))
    directional = Errors(err, err / scale if scale else (0.0 if err == 0 else float("inf")),
                         bool(err <= atol + rtol * scale))
    if per_element is None:
        return directional
    each = _compare(g, per_element, rtol, atol)
    # np.maximum, unlike max(), keeps a nan from either side
    return Errors(float(np.maximum(directional.max_abs, each.max_abs)),
                  float(np.maximum(directional.max_rel, each.max_rel)),
                  directional.passed and each.passed)


def _hessian_rows(hessian, positions, args):
    """Per differentiated leaf i (in order), its rows H[i, :] as a `(size_i, N)` array.

    `hessian` is nested as `jax.hessian(f, positions)` nests it: per position a, the
    argument's structure, each leaf holding a tuple over positions b of b's structure."""
    trees = [jax.tree_util.tree_structure(args[i]) for i in positions]
    leaves = [x for i in positions for x in jax.tree_util.tree_leaves(args[i])]
    rows = []
    for a, tree in enumerate(trees):
        for per_leaf in tree.flatten_up_to(hessian[a]):
            rows.append([np.asarray(block, np.float64) for b, column_tree in enumerate(trees)
                         for block in column_tree.flatten_up_to(per_leaf[b])])
    return [np.concatenate([block.reshape(np.size(x), np.size(y)) for block, y in zip(blocks, leaves)], axis=1)
            for blocks, x in zip(rows, leaves)]


def _check_second_order(f, args, positions, dtypes, rtol, atol, autodiff_rtol, autodiff_atol,
                        step, finite_differences, jit, seed):
    with jax.enable_x64(True):
        args = tuple(jax.tree_util.tree_map(_as_float64, a) for a in args)
        flat = {i: jax.tree_util.tree_flatten_with_path(args[i]) for i in positions}
        rng = np.random.default_rng(seed)
        leaves = [x for i in positions for _, x in flat[i][0]]
        v = [rng.standard_normal(np.shape(x)) for x in leaves]
        norm = np.sqrt(sum(float(np.sum(d * d)) for d in v)) or 1.0
        v = [d / norm for d in v]

        def hessians_and_differences(diff_args, v):
            full = list(args)
            for i, arg in zip(positions, diff_args):
                full[i] = arg

            def jax_gradient(points):
                moved = list(full)
                for i, arg in zip(positions, points):
                    moved[i] = arg
                return jax.tree_util.tree_leaves(jax.grad(f, argnums=positions)(*moved))

            differences = None
            if finite_differences:
                trees = [flat[i][1] for i in positions]
                offsets, k = [], 0
                for tree in trees:
                    offsets.append(jax.tree_util.tree_unflatten(tree, v[k:k + tree.num_leaves]))
                    k += tree.num_leaves
                plus = tuple(jax.tree_util.tree_map(lambda x, d: x + step * d, a, o)
                             for a, o in zip(diff_args, offsets))
                minus = tuple(jax.tree_util.tree_map(lambda x, d: x - step * d, a, o)
                              for a, o in zip(diff_args, offsets))
                differences = [(p - m) / (2 * step) for p, m in zip(jax_gradient(plus), jax_gradient(minus))]
            return (funcdl.autodiff.hessian(f, argnums=positions)(*full),
                    jax.hessian(f, argnums=positions)(*full), differences)

        run = jax.jit(hessians_and_differences) if jit else hessians_and_differences
        h_fdl, h_jax, differences = run(tuple(args[i] for i in positions), v)
        rows_fdl = _hessian_rows(h_fdl, positions, args)
        rows_jax = _hessian_rows(h_jax, positions, args)
    direction = np.concatenate([d.reshape(-1) for d in v])
    reports, n = [], 0
    for i in positions:
        for k, (path, x) in enumerate(flat[i][0]):
            name = f"argument {i}{jax.tree_util.keystr(path)}"
            hf, hj = rows_fdl[n], rows_jax[n]
            fd = None if differences is None else np.asarray(differences[n], np.float64).reshape(-1)
            reports.append(LeafReport(
                name, tuple(jnp.shape(x)), flat[i][1].flatten_up_to(dtypes[i])[k],
                _compare(hf, hj, autodiff_rtol, autodiff_atol),
                _compare_hv(hf, direction, fd, rtol, atol), _compare_hv(hj, direction, fd, rtol, atol),
                "none" if fd is None else "dir"))
            n += 1
    report = GradcheckReport(tuple(reports), rtol, atol, autodiff_rtol, autodiff_atol, order=2)
    if not report.passed:
        raise AssertionError(report)
    return report


def _compare_hv(rows, v, fd, rtol, atol):
    """(H v)_i against its finite differences: max|Hv - d| <= atol + rtol * max(max|d|,
    max Σ_j |H_ij v_j|) (the Σ keeps cancellation in H v from shrinking the scale)."""
    if fd is None:
        return NOT_CHECKED
    hv = rows @ v
    err = float(np.max(np.abs(hv - fd), initial=0.0))
    scale = max(float(np.max(np.abs(fd), initial=0.0)), float(np.max(np.abs(rows) @ np.abs(v), initial=0.0)))
    return Errors(err, err / scale if scale else (0.0 if err == 0 else float("inf")),
                  bool(err <= atol + rtol * scale))
