"""`vjp`, `jacobian`, `hessian` and `hvp` on funcdl's own tape, with jax's calling conventions.

All four are reverse mode, made of the tape's backward pass; `hessian` and `hvp` nest it
(reverse over reverse: the inner backward pass records on the outer tape, see `tensor.py`).
They run eagerly and under `jax.jit`, and compose with `grad` and with each other.

- `vjp(f, *primals) -> (out, vjp_fn)`: out = f(*primals) (any pytree of arrays);
  `vjp_fn(cotangent)` (the structure and shapes of out) is a tuple, one cotangent per primal,
  each with that primal's structure, as `jax.vjp`.
- `jacobian(f, argnums=0)(*args)`: f returns ONE array of shape S; the Jacobian of it with
  respect to an argument leaf of shape A has shape S + A (one backward pass per element of
  the output), with the argument's structure (a tuple of them for a tuple `argnums`), as
  `jax.jacrev`.
- `hessian(f, argnums=0)(*args)`: f returns a scalar; H[i][j] = d²f / dx_i dx_j has shape
  x_i.shape + x_j.shape, nested as `jax.hessian` nests it (the argument's structure, each leaf
  holding the argument's structure again).
- `hvp(f, primals, tangents)`: H·v, the Hessian of scalar f at `primals` (a tuple of pytrees,
  every argument differentiated) applied to `tangents` (a tuple of the same structure), with
  the structure of `primals`: a tuple, one entry per primal. Computed as the gradient of
  x -> <grad f(x), v>: two backward passes, no Hessian built.
"""
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcdl.autodiff import rule_ops
from funcdl.autodiff.backward import backward_pass_many
from funcdl.autodiff.grad import _check_argnums, as_leaves, grad
from funcdl.autodiff.tensor import Tensor, new_level


def _is_tensor(x):
    return isinstance(x, Tensor)


def _is_array(x):
    return isinstance(x, (Tensor, jax.Array, np.ndarray, np.generic, float)) and not isinstance(x, bool)


def _pullback(level, arg_leaves, out_leaves):
    """`pull(seeds) -> per-argument pytrees`: the backward pass of level `level` from
    {index of an output leaf: its cotangent}."""
    def pull(seeds):
        roots = {}
        for k, g in seeds.items():
            o = out_leaves[k]
            if isinstance(o, Tensor) and o._level == level:
                roots[o._node] = g if o._node not in roots else roots[o._node] + g
        grads = backward_pass_many(roots) if roots else {}

        def grad_of(x):
            g = grads.get(x._node)
            return jnp.zeros(x.shape, x.dtype) if g is None else g

        return tuple(jax.tree_util.tree_map(grad_of, a, is_leaf=_is_tensor) for a in arg_leaves)
    return pull


def _trace(f, args, positions, caller):
    """Run f with the arguments at `positions` as leaves of a new level.

    Returns (level, argument leaves, output leaves, output treedef, output values)."""
    level, args = new_level(), list(args)
    arg_leaves = []
    for i in positions:
        args[i] = as_leaves(args[i], i, level)
        arg_leaves.append(args[i])
    out = f(*args)
    out_leaves, out_tree = jax.tree_util.tree_flatten(out, is_leaf=_is_tensor)
    values = []
    for path_leaf in out_leaves:
        if not _is_array(path_leaf) or not jnp.issubdtype(jnp.result_type(
                path_leaf.dtype if isinstance(path_leaf, Tensor) else path_leaf), jnp.floating):
            raise TypeError(f"{caller}: the function's output must be floating-point arrays or "
                            f"Tensors, got {type(path_leaf).__name__}")
        values.append(path_leaf._value if isinstance(path_leaf, Tensor) and path_leaf._level == level
                      else path_leaf)
    return level, arg_leaves, out_leaves, out_tree, values


def vjp(f: Callable, *primals: Any) -> tuple[Any, Callable]:
    """`(f(*primals), vjp_fn)` as `jax.vjp`, by funcdl's tape (see the module's docstring)."""
    if not primals:
        raise TypeError("`primals`: vjp needs at least one primal argument")
    level, arg_leaves, out_leaves, out_tree, values = _trace(f, primals, range(len(primals)), "vjp")
    pull = _pullback(level, arg_leaves, out_leaves)

    def vjp_fn(cotangent):
        leaves, tree = jax.tree_util.tree_flatten(cotangent, is_leaf=_is_tensor)
        if tree != out_tree:
            raise ValueError(f"`cotangent` must have the structure of the function's output, "
                             f"{out_tree}, got {tree}")
        for v, c in zip(values, leaves):
            if jnp.shape(c) != jnp.shape(v):
                raise ValueError(f"`cotangent` must have the output's shapes: expected "
                                 f"{jnp.shape(v)}, got {jnp.shape(c)}")
        return pull(dict(enumerate(leaves)))

    return jax.tree_util.tree_unflatten(out_tree, values), vjp_fn


def _positions(argnums, args):
    positions = _check_argnums(argnums)
    for i in positions:
        if not -len(args) <= i < len(args):
            raise ValueError(f"`argnums` {argnums!r} is out of range for a call with "
                             f"{len(args)} positional argument(s)")
    positions = tuple(i % len(args) for i in positions)
    if len(set(positions)) != len(positions):
        raise ValueError(f"`argnums` {argnums!r} names the same argument twice")
    return positions


def _one_hot(size, k, shape, dtype):
    return jnp.zeros((size,), dtype).at[k].set(1).reshape(shape)


def _stack_rows(rows, out_shape, leaf_shape):
    """Rows (one per output element, each of `leaf_shape`) as one array of out_shape + leaf_shape."""
    if not rows:
        return jnp.zeros(tuple(out_shape) + tuple(leaf_shape))
    if not any(isinstance(r, Tensor) for r in rows):
        return jnp.reshape(jnp.stack(rows), tuple(out_shape) + tuple(leaf_shape))
    return rule_ops.reshape(rule_ops.stack(rows), tuple(out_shape) + tuple(leaf_shape))


def _jacobian_of_tree(f, argnums, args, caller, allow_tree):
    positions = _positions(argnums, args)
    level, arg_leaves, out_leaves, out_tree, values = _trace(f, args, positions, caller)
    if not allow_tree and (out_tree.num_leaves != 1 or not jax.tree_util.treedef_is_leaf(out_tree)):
        raise TypeError(f"`f` passed to {caller} must return one array, got a pytree "
                        f"{out_tree} (take the Jacobian of each output, or use fdl.autodiff.vjp)")
    pull = _pullback(level, arg_leaves, out_leaves)
    per_output = []
    for k, v in enumerate(values):
        shape, dtype = jnp.shape(v), jnp.result_type(v.dtype if isinstance(v, Tensor) else v)
        size = math.prod(shape)
        rows = [pull({k: _one_hot(size, e, shape, dtype)}) for e in range(size)]
        blocks = []
        for a, arg in enumerate(arg_leaves):
            arg_flat, arg_tree = jax.tree_util.tree_flatten(arg, is_leaf=_is_tensor)
            columns = [jax.tree_util.tree_leaves(row[a], is_leaf=_is_tensor) for row in rows]
            blocks.append(jax.tree_util.tree_unflatten(arg_tree, [
                _stack_rows([c[j] for c in columns], shape, x.shape) for j, x in enumerate(arg_flat)]))
        per_output.append(blocks[0] if isinstance(argnums, int) else tuple(blocks))
    return jax.tree_util.tree_unflatten(out_tree, per_output)


def jacobian(f: Callable, argnums: int | tuple[int, ...] = 0) -> Callable:
    """The Jacobian of `f` (one array out) by reverse mode, as `jax.jacrev`; see the module."""
    _check_argnums(argnums)

    @functools.wraps(f)
    def jacobian_f(*args):
        return _jacobian_of_tree(f, argnums, args, "jacobian", allow_tree=False)

    return jacobian_f


def _scalar_output(f, caller):
    """f, checked to return a scalar (the error names `f` and the caller)."""
    @functools.wraps(f)
    def checked(*args, **kwargs):
        out = f(*args, **kwargs)
        if not _is_array(out) or jnp.shape(out) != ():
            what = f"shape {jnp.shape(out)}" if _is_array(out) else type(out).__name__
            raise ValueError(f"`f` passed to {caller} must return a scalar (shape ()), got {what}")
        return out
    return checked


def hessian(f: Callable, argnums: int | tuple[int, ...] = 0) -> Callable:
    """The Hessian of scalar `f`, reverse over reverse, as `jax.hessian`; see the module."""
    _check_argnums(argnums)
    grad_f = grad(_scalar_output(f, "hessian"), argnums)

    @functools.wraps(f)
    def hessian_f(*args):
        return _jacobian_of_tree(grad_f, argnums, args, "hessian", allow_tree=True)

    return hessian_f


def hvp(f: Callable, primals: tuple | list, tangents: tuple | list) -> Any:
    """H·v of scalar `f` at `primals` along `tangents`, structured as `primals`; see the module."""
    for name, value in (("primals", primals), ("tangents", tangents)):
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"`{name}` must be a tuple of arguments (as in jax.jvp), got "
                            f"{type(value).__name__}")
    primals, tangents = tuple(primals), tuple(tangents)
    if not primals:
        raise TypeError("`primals`: hvp needs at least one primal argument")
    p_leaves, p_tree = jax.tree_util.tree_flatten(primals, is_leaf=_is_tensor)
    t_leaves, t_tree = jax.tree_util.tree_flatten(tangents, is_leaf=_is_tensor)
    if p_tree != t_tree:
        raise ValueError(f"`tangents` must have the structure of `primals`, {p_tree}, got {t_tree}")
    for p, t in zip(p_leaves, t_leaves):
        if jnp.shape(p) != jnp.shape(t):
            raise ValueError(f"`tangents` must have the shapes of `primals`: expected {jnp.shape(p)}, "
                             f"got {jnp.shape(t)}")
    everything = tuple(range(len(primals)))
    grad_f = grad(_scalar_output(f, "hvp"), everything)

    def directional(*xs):
        total = None
        for g, t in zip(jax.tree_util.tree_leaves(grad_f(*xs), is_leaf=_is_tensor), t_leaves):
            term = rule_ops.sum(g * t)
            total = term if total is None else total + term
        return total

    return grad(directional, everything)(*primals)
