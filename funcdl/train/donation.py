"""`make_train_step`'s step donates (consumes) its `params` and `opt_state`: XLA reuses their
buffers for the new ones, so a training loop needs no second copy of the model. This module
wraps the jitted step in a thin function that says so when it matters:

- one array object at two paths of `params` (tied weights): a ValueError naming both paths
  before the call (see `param_checks.py`), instead of XLA's "donate the same buffer twice";
- arrays already donated to an earlier call (the old `params` used again): a RuntimeError
  naming the deleted leaves and saying to use the returned params and state (or to pass a
  copy), instead of XLA's "Buffer has been deleted or donated".

The success path of a training loop costs an `id` comparison and a `try` (see
`donating_step`); errors are diagnosed only after the jitted call has refused them.
"""
import functools

import jax

from funcdl.train.param_checks import leaf_name, repeated_arrays, tied_message

WHERE = "make_train_step's step"


def _deleted_leaves(named_trees) -> list:
    """Paths `name[...]` of the jax arrays of `{name: tree}` whose buffers are deleted."""
    found = []
    for name, tree in named_trees.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            if (isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer)
                    and leaf.is_deleted()):
                found.append(leaf_name(name, path))
    return found


def _explained(params, opt_state, x, y, key):
    """The clearer error for a refused call, or None when no argument was deleted."""
    deleted = _deleted_leaves({"params": params, "opt_state": opt_state, "x": x, "y": y,
                               "key": key})
    if deleted:
        shown = ", ".join(f"`{path}`" for path in deleted[:4])
        more = f" and {len(deleted) - 4} more" if len(deleted) > 4 else ""
        return RuntimeError(
            f"{WHERE}: {shown}{more} were deleted: the step donates (consumes) the `params` "
            "and `opt_state` it is given, so after `params, opt_state, loss = step(params, "
            "opt_state, x, y)` only the returned ones are valid. Use the returned params and "
            "state, or pass copies (jax.tree_util.tree_map(jnp.copy, params)) to keep the "
            "originals")
    return None


def donating_step(jitted):
    """`step(params, opt_state, x, y, key=None)`: `jitted` (a `jax.jit` donating its first two
    arguments) with the checks of the module docstring; `lower`, `trace` and `eval_shape` are
    the jitted function's own.

    In a training loop, `params, opt_state, loss = step(params, opt_state, x, y)`, each call
    receives the very pytree the previous call returned, whose leaves XLA made distinct; the
    step remembers that pytree's `id` (no reference: nothing is kept alive) and flattens
    `params` to look for repeated arrays only when it is handed anything else. A pytree
    changed in place in between (`params["b"] = params["a"]`) is still caught: XLA refuses
    the call, and the refusal is explained the same way."""
    returned = [None]  # id() of the params pytree the last call returned

    @functools.wraps(jitted)
    def step(params, opt_state, x, y, key=None):
        if id(params) != returned[0]:
            _check_distinct(params)
        try:
            out = jitted(params, opt_state, x, y, key)
        except (ValueError, RuntimeError) as error:  # XLA's refusals of donated buffers
            pairs = repeated_arrays({"params": params, "opt_state": opt_state})
            if pairs:
                raise ValueError(tied_message(pairs, WHERE)) from None
            explained = _explained(params, opt_state, x, y, key)
            if explained is None:
                raise
            raise explained from error
        returned[0] = id(out[0])
        return out

    for name in ("lower", "trace", "eval_shape"):
        if hasattr(jitted, name):
            setattr(step, name, getattr(jitted, name))
    return step


def _check_distinct(params):
    leaves = jax.tree_util.tree_leaves(params)
    if len(set(map(id, leaves))) != len(leaves):  # rare: find the paths only then
        pairs = repeated_arrays({"params": params})
        if pairs:
            raise ValueError(tied_message(pairs, WHERE))
