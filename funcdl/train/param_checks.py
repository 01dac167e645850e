"""What training needs of `params`, checked before anything compiles: floating-point leaves,
and no array object at two paths.

Integer or bool leaves: a step differentiates every leaf of `params`, and a gradient exists
only for floating-point (or complex) values; a counter or an index belongs outside `params`
(in the closure of `apply`, or in a model's state). Integer leaves of the optimizer state
(Adam's step count) are fine: nothing differentiates them.

One array at two paths (`{"encoder": w, "decoder": w}` with the same `w`): in PyTorch a module
that reuses a `Parameter` holds ONE parameter, whose gradient sums both uses. A pytree has
two leaves there: each would get its own gradient and its own update, and the two would stop
being equal after the first step, so the weights would silently stop being tied (and a
donating step would hand XLA the same buffer twice). Both `fit` and `make_train_step` refuse
it: tie weights by keeping ONE leaf and using it at both places in `apply`; for two
independent parameters that merely start equal, pass a copy (`jnp.copy(w)`).
"""
import jax
import jax.numpy as jnp
import numpy as np

from funcdl.nn.state import Variables


def leaf_name(name: str, path) -> str:
    """`params['layer']['w']`: the argument's name and the leaf's path, as Python indexes it."""
    return name + jax.tree_util.keystr(path)


def check_float_params(params, name: str = "params", where: str = "fit"):
    """TypeError naming the first integer or bool leaf of the differentiated params (a
    `Variables`' `.params`; its `.state` is not differentiated) and its dtype."""
    differentiated, prefix = ((params.params, f"{name}.params") if isinstance(params, Variables)
                              else (params, name))
    for path, leaf in jax.tree_util.tree_flatten_with_path(differentiated)[0]:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None:
            dtype = jnp.result_type(leaf)
        if jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_):
            raise TypeError(
                f"{where}: `{leaf_name(prefix, path)}` has dtype {jnp.dtype(dtype)}: every leaf "
                "of `params` is differentiated, so each must be floating-point; keep integer or "
                "bool values (counters, indices, masks) outside `params`, e.g. in the closure "
                "of `apply`, or cast them (`.astype(jnp.float32)`) if they are to be trained")


def _is_concrete_array(leaf) -> bool:
    return isinstance(leaf, np.ndarray) or (isinstance(leaf, jax.Array)
                                            and not isinstance(leaf, jax.core.Tracer))


def repeated_arrays(named_trees):
    """`[(first_path, second_path), ...]`: array objects (jax or NumPy, not tracers) found at
    two paths of the trees `{name: tree}`, the paths written `name[...]`."""
    seen, pairs = {}, []
    for name, tree in named_trees.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            if not _is_concrete_array(leaf):
                continue
            here = leaf_name(name, path)
            if id(leaf) in seen:
                pairs.append((seen[id(leaf)], here))
            else:
                seen[id(leaf)] = here
    return pairs


def tied_message(pairs, where: str) -> str:
    both = "; ".join(f"`{a}` and `{b}`" for a, b in pairs)
    return (f"{where}: the same array object is at {both}. These are two leaves, so each would "
            "get its own gradient and update and they would stop being equal after one step "
            "(PyTorch's tied weights are ONE parameter). To tie weights keep one leaf and use "
            "it at both places in `apply`; for independent parameters that start equal, pass "
            "a copy (jnp.copy)")


def check_distinct(params, name: str = "params", where: str = "fit"):
    """ValueError naming both paths when one array object appears twice in `params`."""
    pairs = repeated_arrays({name: params})
    if pairs:
        raise ValueError(tied_message(pairs, where))


def check_trainable(params, where: str = "fit"):
    """Both checks above: floating-point leaves, no array object at two paths."""
    check_float_params(params, where=where)
    check_distinct(params, where=where)
