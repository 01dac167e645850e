"""`grad` and `value_and_grad`: jax's calling convention over funcdl's own tape.

Each call records on a tape of its own level (`tensor.new_level`), so calls nest:
`grad(grad(f))` differentiates the inner backward pass, which the rules record on the outer
tape. An argument that is a Tensor of an outer call becomes a leaf of this level holding it;
the gradients and the value come back as Tensors of the outer level then (plain arrays at the
outermost call).
"""
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from funcdl.autodiff.tensor import Tensor, backward_pass, check_float_array, leaf, new_level


def _check_argnums(argnums):
    if isinstance(argnums, int) and not isinstance(argnums, bool):
        return (argnums,)
    if isinstance(argnums, tuple) and argnums and all(
            isinstance(i, int) and not isinstance(i, bool) for i in argnums):
        return argnums
    raise TypeError(f"`argnums` must be an int or a non-empty tuple of ints, got {argnums!r}")


def _unwrap(tree, level):
    """The same pytree with every Tensor of `level` replaced by its value."""
    return jax.tree_util.tree_map(lambda x: x.value if isinstance(x, Tensor) and x._level == level else x,
                                  tree, is_leaf=_is_tensor)


def _is_tensor(x):
    return isinstance(x, Tensor)


def as_leaves(tree, argnum, level):
    """Wrap every leaf of argument `argnum` in a fresh leaf Tensor of `level`, checking it is a
    float array (or a Tensor of an outer call, which the leaf then holds)."""
    def wrap(path, x):
        if isinstance(x, Tensor):
            if not jnp.issubdtype(x.dtype, jnp.floating):
                raise TypeError(f"`argument {argnum}{jax.tree_util.keystr(path)}` must have a "
                                f"floating-point dtype, got {x.dtype}")
            return leaf(x, level)
        return leaf(check_float_array(x, f"argument {argnum}{jax.tree_util.keystr(path)}"), level)
    return jax.tree_util.tree_map_with_path(wrap, tree, is_leaf=_is_tensor)


def _check_output(out, has_aux, level):
    if has_aux:
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError("with `has_aux=True`, the function must return a pair (output, aux), "
                            f"got {type(out).__name__}")
        out, aux = out
    else:
        aux = None
    value = out.value if isinstance(out, Tensor) and out._level == level else out
    if isinstance(value, bool) or not isinstance(value, (float, np.ndarray, np.generic, jnp.ndarray, Tensor)):
        raise TypeError("the function's output must be a floating-point scalar array or Tensor, "
                        f"got {type(value).__name__}")
    if not jnp.issubdtype(jnp.result_type(value), jnp.floating):
        raise TypeError(f"the function's output must be floating-point, got {jnp.result_type(value)}")
    if jnp.shape(value) != ():
        raise ValueError(f"the function's output must be a scalar (shape ()), got {jnp.shape(value)}")
    return out, value, aux


def value_and_grad(f: Callable, argnums: int | tuple[int, ...] = 0,
                   has_aux: bool = False) -> Callable:
    """Like `jax.value_and_grad`, computed by funcdl's reverse-mode tape.

    f: a function written with Python operators and `fdl.ops`, returning a scalar (or, with
    `has_aux`, a pair (scalar, aux)). argnums: an int or tuple of ints; the gradient has the
    structure, shapes and dtypes of those arguments (a tuple of them for a tuple `argnums`).
    Returns a function `(*args, **kwargs) -> (value, grads)`, or `((value, aux), grads)`; aux
    comes back as plain arrays. Works eagerly and inside `jax.jit`.
    """
    positions = _check_argnums(argnums)

    @functools.wraps(f)
    def value_and_grad_f(*args, **kwargs):
        for i in positions:
            if not -len(args) <= i < len(args):
                raise ValueError(f"`argnums` {argnums!r} is out of range for a call with "
                                 f"{len(args)} positional argument(s)")
        if len({i % len(args) for i in positions}) != len(positions):
            raise ValueError(f"`argnums` {argnums!r} names the same argument twice")
        args, level = list(args), new_level()
        leaves = {i: as_leaves(args[i], i, level) for i in positions}
        for i, wrapped in leaves.items():
            args[i] = wrapped
        out, value, aux = _check_output(f(*args, **kwargs), has_aux, level)
        seed = jnp.ones(jnp.shape(value), jnp.result_type(value) if not isinstance(value, Tensor) else value.dtype)
        on_tape = isinstance(out, Tensor) and out._level == level
        grads = backward_pass(out._node, seed) if on_tape else {}

        def grad_of(x):
            g = grads.get(x._node)
            return jnp.zeros(x.shape, x.dtype) if g is None else g

        per_arg = tuple(jax.tree_util.tree_map(grad_of, leaves[i], is_leaf=_is_tensor) for i in positions)
        result = per_arg[0] if isinstance(argnums, int) else per_arg
        if not isinstance(value, Tensor):
            value = jnp.asarray(value)
        return ((value, _unwrap(aux, level)) if has_aux else value), result

    return value_and_grad_f


def grad(f: Callable, argnums: int | tuple[int, ...] = 0, has_aux: bool = False) -> Callable:
    """Like `jax.grad`, computed by funcdl's reverse-mode tape (see `value_and_grad`)."""
    value_and_grad_f = value_and_grad(f, argnums, has_aux)

    @functools.wraps(f)
    def grad_f(*args, **kwargs):
        value_or_pair, grads = value_and_grad_f(*args, **kwargs)
        return (grads, value_or_pair[1]) if has_aux else grads

    return grad_f
