"""`scan`: `lax.scan`'s loop, for both autodiffs.

On arrays it is `jax.lax.scan` itself (so `jax.grad` differentiates it as jax does). When a
`fdl.autodiff.Tensor` is involved (in `init`, in `xs`, or closed over by `f`, as a cell's
weights are), it is ONE node of the tape whatever the length: its forward is a `lax.scan`
that also stores what the step's rules read, and its VJP rule is the reverse `lax.scan` of
the step's backward pass (`funcdl/autodiff/scan_rule.py`). The tape does not grow with the
sequence, and under `jax.jit` the program holds one loop each way instead of T copies of the
step.
"""
import operator
from typing import Any, Callable

import jax
import jax.numpy as jnp

from funcdl.autodiff import Tensor, apply
from funcdl.autodiff import scan_rule
from funcdl.autodiff.tensor import leaf, new_level, strip

__all__ = ["scan"]


def _is_tensor(x):
    return isinstance(x, Tensor)


def _as_array(x):
    return x if isinstance(x, Tensor) else jnp.asarray(x)


def _is_float(x):
    return jnp.issubdtype(jnp.result_type(strip(x)), jnp.floating)


def _length(xs_leaves, length):
    if length is not None:
        if isinstance(length, bool):
            raise TypeError(f"`length` must be None or an int >= 0, got {length!r}")
        try:
            length = operator.index(length)
        except TypeError:
            raise TypeError(f"`length` must be None or an int >= 0, got {length!r}") from None
        if length < 0:
            raise ValueError(f"`length` must be None or an int >= 0, got {length}")
    sizes = set()
    for x in xs_leaves:
        if jnp.ndim(strip(x)) == 0:
            raise ValueError("every leaf of `xs` needs a leading axis to scan over, got a "
                             "scalar")
        sizes.add(jnp.shape(strip(x))[0])
    if len(sizes) > 1:
        raise ValueError(f"the leaves of `xs` must share their leading size, got {sorted(sizes)}")
    if sizes and length is not None and length != next(iter(sizes)):
        raise ValueError(f"`length` is {length} but the leaves of `xs` have leading size "
                         f"{next(iter(sizes))}")
    if not sizes and length is None:
        raise ValueError("`length` must be given when `xs` is None (or has no leaves)")
    return next(iter(sizes)) if sizes else length


def scan(f: Callable, init: Any, xs: Any = None, length: int | None = None,
         reverse: bool = False) -> tuple[Any, Any]:
    """Loop `f` over the leading axis of `xs`, carrying a state: `jax.lax.scan`'s semantics.

        carry = init
        for t in range(T):                 # T - 1 down to 0 with reverse=True
            carry, ys[t] = f(carry, xs[t])
        return carry, ys                   # ys stacked on a new leading axis T

    f: `(carry, x) -> (carry, y)`, written with `fdl.ops`; it returns a carry with the
    structure, shapes and dtypes of `init`, and it may close over arrays and Tensors (its
    weights: `fdl.autodiff` differentiates those too). init: a pytree of arrays or Tensors.
    xs: a pytree whose leaves share the leading size T, or None with `length=T`.
    Returns `(carry, ys)`; `ys` has the structure of f's y with a leading axis T.

    Under `fdl.autodiff` it is one node of the tape; float outputs get gradients (integer
    carries and ys, such as a step counter, are carried without one).

    Raises:
      TypeError: `f` not callable, or a step that does not return `(carry, y)` with init's
        structure.
      ValueError: xs leaves without a common leading axis, `length` disagreeing with them,
        or neither given.

    Examples:
        >>> import jax.numpy as jnp, funcdl as fdl
        >>> def f(total, x):
        ...     total = total + x
        ...     return total, total * 2.0
        >>> fdl.ops.scan(f, jnp.float32(0.0), jnp.arange(1.0, 4.0))
        (Array(6., dtype=float32), Array([ 2.,  6., 12.], dtype=float32))
        >>> w = jnp.float32(0.5)
        >>> loss = lambda w: fdl.ops.scan(lambda h, x: (h * w + x, None), jnp.float32(1.0),
        ...                               jnp.ones(3))[0]
        >>> import jax
        >>> float(fdl.autodiff.grad(loss)(w)), float(jax.grad(loss)(w))
        (2.75, 2.75)
    """
    if not callable(f):
        raise TypeError(f"`f` must be a function (carry, x) -> (carry, y), got {type(f).__name__}")
    if not isinstance(reverse, bool):
        raise TypeError(f"`reverse` must be a bool, got {reverse!r}")
    init_leaves, init_tree = jax.tree_util.tree_flatten(init, is_leaf=_is_tensor)
    xs_leaves, xs_tree = jax.tree_util.tree_flatten(xs, is_leaf=_is_tensor)
    T = _length(xs_leaves, length)
    init_leaves, xs_leaves = [_as_array(v) for v in init_leaves], [_as_array(v) for v in xs_leaves]
    if not any(isinstance(v, Tensor) for v in init_leaves + xs_leaves):
        try:
            return jax.lax.scan(lambda c, x: scan_rule.call_rebound(scan_rule.Refuse(), f, c, x),
                                init, xs, length=T, reverse=reverse)
        except scan_rule.NeedsTape:
            pass  # f closes over a Tensor: the tape path
    return _tape_scan(f, init_leaves, init_tree, xs_leaves, xs_tree, T, reverse)


def _tape_scan(f, init_leaves, init_tree, xs_leaves, xs_tree, T, reverse):
    spec = scan_rule._Spec(f, init_tree, xs_tree, [_is_float(v) for v in init_leaves],
                           [_is_float(v) and isinstance(v, Tensor) for v in xs_leaves], T, reverse)
    level = new_level()
    discover = scan_rule.Rebind({}, discover_level=level)
    y_tree = []

    def probe(carry, x):
        carry_leaves = [leaf(v, level) if fl else v for v, fl in zip(carry, spec.carry_float)]
        x_leaves = [leaf(v, level) if fl else v for v, fl in zip(x, spec.xs_leafy)]
        out = scan_rule.call_rebound(
            discover, f, jax.tree_util.tree_unflatten(init_tree, carry_leaves),
            jax.tree_util.tree_unflatten(xs_tree, x_leaves))
        leaves = scan_rule.out_leaves(out, init_tree)
        y_tree.append(jax.tree_util.tree_structure(out[1], is_leaf=_is_tensor))
        return [jnp.asarray(strip(discover.mapping.get(id(o), o) if isinstance(o, Tensor) else o))
                for o in leaves]

    structs = jax.eval_shape(
        probe, [jax.ShapeDtypeStruct(jnp.shape(strip(v)), jnp.result_type(strip(v))) for v in init_leaves],
        [jax.ShapeDtypeStruct(jnp.shape(strip(v))[1:], jnp.result_type(strip(v))) for v in xs_leaves])
    n = len(init_leaves)
    spec.consts = tuple(discover.found)
    spec.outputs = [(tuple(s.shape) if k < n else (T,) + tuple(s.shape), s.dtype,
                     jnp.issubdtype(s.dtype, jnp.floating)) for k, s in enumerate(structs)]
    floats = [dtype for _, dtype, is_float in spec.outputs if is_float]
    if not floats:  # nothing to differentiate: the loop on the plain values
        plain = scan_rule.Rebind({id(c): strip(c) for c in spec.consts})
        return jax.lax.scan(lambda c, x: scan_rule.call_rebound(plain, f, c, x),
                            jax.tree_util.tree_unflatten(init_tree, [strip(v) for v in init_leaves]),
                            jax.tree_util.tree_unflatten(xs_tree, [strip(v) for v in xs_leaves]),
                            length=T, reverse=reverse)
    spec.pack_dtype = jnp.result_type(*floats)
    packed = apply("scan", *init_leaves, *xs_leaves, *spec.consts, spec=spec)
    pieces = scan_rule.unpack(packed, spec)
    integers = iter(spec.integer_outputs)
    pieces = [next(integers) if p is None else p for p in pieces]
    return (jax.tree_util.tree_unflatten(init_tree, pieces[:n]),
            jax.tree_util.tree_unflatten(y_tree[0], pieces[n:]))
