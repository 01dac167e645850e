"""Per-leaf rules: `masked`, `set_to_zero`, `multi_transform` and `freeze`, with optax's names
and semantics.

A mask is a pytree of Python bools with the params' structure, or a prefix of it (one bool for
a whole subtree), or a function `params -> mask`. `masked(inner, mask)` runs `inner` on the
masked-in leaves only and passes the other updates through unchanged; the masked-out leaves are
replaced by an empty `MaskedNode` before `inner` sees them, so `inner` keeps no buffers for
them (as `optax.masked`). Because the other updates pass through, optax's weight-decay idiom
ports as it is:

    chain(masked(add_decayed_weights(1e-4), decay_mask), adam(1e-3))

decays only the leaves where `decay_mask` is True, then runs Adam on all of them.
`multi_transform({label: transform}, labels)` runs each transform on the leaves of its label
(`optax.multi_transform`, now `optax.partition`); `freeze(optimizer, trainable)` is
`multi_transform({"train": optimizer, "frozen": set_to_zero()}, ...)`, and its frozen leaves
have no gradient in `fdl.train` (`funcdl/optim/frozen.py`).
"""
from typing import Any, Callable, Mapping, NamedTuple, Union

import jax
import jax.numpy as jnp

from funcdl.construction import recorded
from funcdl.optim.base import EmptyState, Optimizer, check_state

Mask = Union[Any, Callable[[Any], Any]]  # a pytree (or prefix) of bools, or params -> one


class MaskedNode(NamedTuple):
    """The placeholder of a masked-out leaf: a node without children, so jax's tree functions
    skip it (no buffer, no update) in the inner transform."""


class MaskedState(NamedTuple):
    """The state of `masked`: the inner transform's, over the leaves the mask selects."""
    inner_state: Any  # the inner transform's state over the masked-in leaves only


class MultiTransformState(NamedTuple):
    """The state of `multi_transform`: one `MaskedState` per label."""
    inner_states: Mapping[str, MaskedState]  # label -> that label's masked state


def mask_of(mask: Mask, tree) -> Any:
    """The mask pytree of `mask` for `tree`: `mask(tree)` for a function, else `mask`."""
    return mask(tree) if callable(mask) else mask


def _describe(node) -> str:
    """A pytree node in words: its type and its keys or length (a leaf: its type)."""
    children = _children(node)
    if children is None:
        return f"a leaf ({type(node).__name__})"
    if isinstance(node, Mapping):
        return f"a {type(node).__name__} with keys {sorted(map(str, node))}"
    return f"a {type(node).__name__} of length {len(children)}"


def _children(node):
    """`[(key, child)]` one level down, or None for a leaf (None itself is an empty node)."""
    if node is not None and jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(node)):
        return None
    return [(path[0], child) for path, child in
            jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda n: n is not node)[0]]


def _first_mismatch(prefix, full, path=()):
    """`(path, prefix_node, full_node)` where `prefix` stops being a prefix of `full`'s
    structure, or None. A leaf of `prefix` stands for the whole subtree of `full` there."""
    prefix_children = _children(prefix)
    if prefix_children is None:
        return None
    structure = lambda node: jax.tree_util.tree_structure(  # noqa: E731 (one level)
        node, is_leaf=lambda n: n is not node)
    if _children(full) is None or structure(prefix) != structure(full):
        return path, prefix, full
    for (key, child), (_, full_child) in zip(prefix_children, _children(full)):
        found = _first_mismatch(child, full_child, path + (key,))
        if found is not None:
            return found
    return None


def structure_error(what: str, prefix, tree, error: Exception) -> ValueError:
    """The ValueError for a `what` (a mask or labels) that is not a prefix of the params'
    structure: where they first differ, with both nodes described."""
    found = _first_mismatch(prefix, tree)
    if found is None:
        detail = str(error)
    else:
        path, node, full = found
        where = "params" + jax.tree_util.keystr(path)
        detail = (f"at {where} the params have {_describe(full)} and `{what}` has "
                  f"{_describe(node)}")
    return ValueError(f"`{what}` must have the structure of the params (or a prefix of it: "
                      f"one value for a whole subtree): {detail}")


def check_mask(mask_tree, tree, what: str) -> None:
    """ValueError unless `mask_tree` is a prefix of `tree`'s structure with bool leaves."""
    try:
        jax.tree_util.tree_map(lambda m, _: m, mask_tree, tree)
    except ValueError as error:
        raise structure_error(what, mask_tree, tree, error) from None
    for leaf in jax.tree_util.tree_leaves(mask_tree):
        if not isinstance(leaf, bool):
            raise TypeError(f"`{what}` must hold Python bools (True: apply the transform), got "
                            f"a leaf of type {type(leaf).__name__}: {leaf!r}")


def select(mask_tree, tree):
    """`tree` with every masked-out leaf (or subtree) replaced by `MaskedNode()`."""
    return jax.tree_util.tree_map(lambda m, t: t if m else MaskedNode(), mask_tree, tree)


@recorded
def masked(inner: Optimizer, mask: Mask) -> Optimizer:
    """Apply `inner` to the leaves where `mask` is True; pass the other updates through.

    Args:
      inner: the transform (or optimizer) to apply to the masked-in leaves.
      mask: a pytree of Python bools with the params' structure or a prefix of it, or a
        function `params -> mask` (called with the params in `init` and with the updates in
        `update`, as optax does).

    The state is `MaskedState(inner_state)`, where `inner_state` has buffers for the
    masked-in leaves only. The masked-out updates come back unchanged (not zeroed: use
    `set_to_zero`, `multi_transform` or `freeze` for that).

    Raises:
      ValueError: `mask` does not have the params' structure (or a prefix of it).
      TypeError: a leaf of `mask` is not a bool (a traced or array mask cannot choose the
        state's structure).

    Examples:
        >>> import jax.numpy as jnp
        >>> from funcdl.optim import add_decayed_weights, masked
        >>> params = {"w": jnp.ones(2), "b": jnp.ones(2)}
        >>> decay = masked(add_decayed_weights(0.5), {"w": True, "b": False})
        >>> updates, _ = decay.update({"w": jnp.zeros(2), "b": jnp.zeros(2)},
        ...                           decay.init(params), params)
        >>> updates["w"].tolist(), updates["b"].tolist()
        ([0.5, 0.5], [0.0, 0.0])
    """

    def init(params):
        mask_tree = mask_of(mask, params)
        check_mask(mask_tree, params, "mask")
        return MaskedState(inner_state=inner.init(select(mask_tree, params)))

    def update(updates, state, params=None):
        check_state(state, MaskedState, "masked")
        mask_tree = mask_of(mask, updates)
        check_mask(mask_tree, updates, "mask")
        inner_params = None if params is None else select(mask_tree, params)
        new_updates, inner_state = inner.update(select(mask_tree, updates),
                                                state.inner_state, inner_params)
        merged = jax.tree_util.tree_map(lambda m, new, old: new if m else old,
                                        mask_tree, new_updates, updates,
                                        is_leaf=lambda node: isinstance(node, MaskedNode))
        return merged, MaskedState(inner_state=inner_state)

    return Optimizer(init, update)


@recorded
def set_to_zero() -> Optimizer:
    """Every update becomes zero (optax's `set_to_zero`): the params stay as they are.

    The zeros are negative zeros, `-0.0`, because `p + (-0.0)` is `p` bit for bit for every
    `p`, including `p = -0.0` (where `-0.0 + 0.0` would give `+0.0`); they compare equal to 0.
    No state (`EmptyState()`).

    Examples:
        >>> import jax.numpy as jnp
        >>> from funcdl.optim import apply_updates, set_to_zero
        >>> opt = set_to_zero()
        >>> params = {"w": jnp.array([-0.0, 1.5])}
        >>> updates, _ = opt.update({"w": jnp.array([3.0, 4.0])}, opt.init(params), params)
        >>> updates["w"].tolist(), apply_updates(params, updates)["w"].tolist()
        ([-0.0, -0.0], [-0.0, 1.5])
    """

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        check_state(state, EmptyState, "set_to_zero")
        return jax.tree_util.tree_map(lambda u: jnp.full_like(u, -0.0), updates), state

    return Optimizer(init, update)


def labels_of(labels, tree, transforms) -> Any:
    label_tree = labels(tree) if callable(labels) else labels
    try:
        jax.tree_util.tree_map(lambda label, _: label, label_tree, tree)
    except ValueError as error:
        raise structure_error("param_labels", label_tree, tree, error) from None
    unknown = sorted({str(label) for label in jax.tree_util.tree_leaves(label_tree)
                      if label not in transforms})
    if unknown:
        raise ValueError(f"`param_labels` has labels without a transform: {unknown}; "
                         f"`transforms` has {sorted(map(str, transforms))}")
    return label_tree


@recorded
def multi_transform(transforms: Mapping[str, Optimizer], param_labels: Any) -> Optimizer:
    """Run each transform on the leaves of its label (optax's `multi_transform`/`partition`).

    Args:
      transforms: `{label: transform}`.
      param_labels: a pytree of labels with the params' structure (or a prefix of it), or a
        function `params -> labels`.

    Each transform runs as `masked(transform, labels == label)`, one after the other in the
    order of `transforms`; a leaf's update is its own label's transform of its gradient. The
    state is `MultiTransformState({label: MaskedState})`, each with buffers for its own leaves
    only.

    Raises:
      ValueError: a label without a transform (naming them), or labels that do not have the
        params' structure.

    Examples:
        >>> import jax.numpy as jnp
        >>> from funcdl.optim import multi_transform, sgd
        >>> opt = multi_transform({"fast": sgd(1.0), "slow": sgd(0.25)},
        ...                       {"w": "fast", "b": "slow"})
        >>> params = {"w": jnp.zeros(1), "b": jnp.zeros(1)}
        >>> updates, _ = opt.update({"w": jnp.ones(1), "b": jnp.ones(1)}, opt.init(params),
        ...                         params)
        >>> updates["w"].tolist(), updates["b"].tolist()
        ([-1.0], [-0.25])
    """
    if not isinstance(transforms, Mapping) or not transforms:
        raise TypeError(f"`transforms` must be a non-empty dict {{label: transform}}, got "
                        f"{transforms!r}")

    def group(label_tree, label):
        return masked(transforms[label],
                      jax.tree_util.tree_map(lambda other: other == label, label_tree))

    def init(params):
        label_tree = labels_of(param_labels, params, transforms)
        return MultiTransformState({label: group(label_tree, label).init(params)
                                    for label in transforms})

    def update(updates, state, params=None):
        check_state(state, MultiTransformState, "multi_transform")
        label_tree = labels_of(param_labels, updates, transforms)
        inner_states = {}
        for label in transforms:
            updates, inner_states[label] = group(label_tree, label).update(
                updates, state.inner_states[label], params)
        return updates, MultiTransformState(inner_states)

    return Optimizer(init, update)


@recorded
def freeze(optimizer: Optimizer, trainable: Mask) -> Optimizer:
    """Train the leaves where `trainable` is True with `optimizer`; leave the others as they are.

    `= multi_transform({"train": optimizer, "frozen": set_to_zero()}, labels)` with the labels
    taken from `trainable`: frozen params stay bitwise unchanged through `apply_updates` and
    the optimizer keeps no buffers for them (its state covers the trainable leaves only).

    A frozen leaf has no gradient (PyTorch's `requires_grad=False`): `fdl.train` (`fit`,
    `sweep`, `make_train_step`, gradient accumulation) does not differentiate it, so its
    gradient is exact zeros, XLA computes nothing for it, and a NaN that would only reach it
    is no non-finite step. That changes no number (the update of a frozen leaf is zero
    whatever its gradient), so it holds where the freeze sees the gradients first: not after
    a `clip_by_global_norm` in a `chain`, which reads the frozen gradients too (optax's
    semantics). `fdl.optim.frozen.frozen_leaves(optimizer, params)` says which leaves are
    frozen.
    `multi_transform` with an explicit `set_to_zero()` label is not freeze (optax's
    semantics): those gradients are computed and count, so their NaN stops `fit`.

    Args:
      optimizer: the optimizer of the trainable leaves.
      trainable: a pytree of Python bools like the params (or a prefix of it: one bool for a
        whole layer), or a function `params -> such a pytree`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from funcdl.optim import adam, apply_updates, freeze
        >>> params = [{"w": jnp.ones(2)}, {"w": jnp.ones(2)}]  # fine-tune the last layer only
        >>> opt = freeze(adam(0.1), [False, True])
        >>> updates, state = opt.update([{"w": jnp.ones(2)}, {"w": jnp.ones(2)}],
        ...                             opt.init(params), params)
        >>> new = apply_updates(params, updates)
        >>> new[0]["w"].tolist(), [round(v, 4) for v in new[1]["w"].tolist()]
        ([1.0, 1.0], [0.9, 0.9])
    """

    def labels(tree):
        mask_tree = mask_of(trainable, tree)
        check_mask(mask_tree, tree, "trainable")
        return jax.tree_util.tree_map(lambda m: "train" if m else "frozen", mask_tree)

    return multi_transform({"train": optimizer, "frozen": set_to_zero()}, labels)
