"""Which leaves an optimizer freezes: `frozen_leaves(optimizer, params)`, read from the calls
that built it.

`freeze(optimizer, trainable)` means PyTorch's `requires_grad=False`: a frozen leaf has no
gradient. `fdl.train` (`fit`, `sweep`, `make_train_step`, gradient accumulation) asks this
module which leaves those are and does not differentiate them: their gradients are exact
zeros, so XLA computes nothing for them and a NaN that would only reach a frozen leaf's
gradient is no non-finite step. The answer comes from the construction record
(`funcdl.construction`), walked through the combinators, so `Optimizer` stays the 2-field
NamedTuple `(init, update)`:

- `freeze(inner, trainable)`: the leaves where `trainable` is False, and those `inner`
  freezes among the trainable ones (a nested freeze);
- `chain(first, *rest)`: the leaves `first` freezes. Only `first` sees the gradients (the
  rest see its updates, zeros for a leaf it freezes whatever its gradient); a freeze further
  on is not used, since a transform before it (`clip_by_global_norm`) reads every gradient,
  frozen ones included, as optax's `multi_transform` with `set_to_zero` has it;
- `masked(inner, mask)`, `multi_transform(transforms, labels)`: what each inner transform
  freezes among its own leaves;
- anything else (`set_to_zero()` among them: optax's semantics, the gradient is computed and
  its update zeroed; an optimizer built by hand): nothing.
"""
from typing import Any, List

import jax

from funcdl.construction import constructed_by
from funcdl.optim import masking
from funcdl.optim.base import Optimizer, chain


def _broadcast(mask_tree, tree) -> List[bool]:
    """A mask (a prefix of `tree`'s structure) as one bool per leaf of `tree`, in
    `jax.tree_util.tree_leaves` order."""
    full = jax.tree_util.tree_map(  # a MaskedNode (hidden by an outer mask) has no leaves
        lambda m, sub: jax.tree_util.tree_map(lambda _: m, sub), mask_tree, tree)
    return [bool(m) for m in jax.tree_util.tree_leaves(full)]


def _within(inner, mask_tree, tree) -> List[bool]:
    """The leaves `inner` freezes when it runs on the leaves of `tree` that `mask_tree`
    selects (as `masked` runs it); False for the others."""
    selected = _broadcast(mask_tree, tree)
    found = iter(_walk(inner, masking.select(mask_tree, tree)))
    return [next(found) if chosen else False for chosen in selected]


def _walk(optimizer, tree) -> List[bool]:
    """One bool per leaf of `tree`: True where `optimizer` freezes it (module docstring)."""
    n_leaves = len(jax.tree_util.tree_leaves(tree))
    record = constructed_by(optimizer)
    if record is None:
        return [False] * n_leaves
    arguments = record.arguments()
    if record.constructor is masking.freeze:
        mask_tree = masking.mask_of(arguments["trainable"], tree)
        masking.check_mask(mask_tree, tree, "trainable")
        trainable = _broadcast(mask_tree, tree)
        inner = _within(arguments["optimizer"], mask_tree, tree)
        return [not t or i for t, i in zip(trainable, inner)]
    if record.constructor is chain:
        parts = arguments["transforms"]
        return _walk(parts[0], tree) if parts else [False] * n_leaves
    if record.constructor is masking.masked:
        mask_tree = masking.mask_of(arguments["mask"], tree)
        masking.check_mask(mask_tree, tree, "mask")
        return _within(arguments["inner"], mask_tree, tree)
    if record.constructor is masking.multi_transform:
        transforms = arguments["transforms"]
        labels = masking.labels_of(arguments["param_labels"], tree, transforms)
        frozen = [False] * n_leaves
        for label, part in transforms.items():
            mine = jax.tree_util.tree_map(lambda other, label=label: other == label, labels)
            frozen = [a or b for a, b in zip(frozen, _within(part, mine, tree))]
        return frozen
    return [False] * n_leaves


def frozen_leaves(optimizer: Optimizer, params: Any) -> Any:
    """A pytree of Python bools with the structure of `params`: True where `optimizer` freezes
    the leaf (`fdl.optim.freeze`: no gradient), False elsewhere.

    params: the pytree the optimizer updates (arrays, tracers or `jax.ShapeDtypeStruct`s:
    only its structure, and what a callable mask reads from it, is used).

    Examples:
        >>> import jax.numpy as jnp
        >>> from funcdl import optim
        >>> params = {"body": jnp.ones(2), "head": jnp.ones(2)}
        >>> frozen_leaves(optim.freeze(optim.adam(0.1), {"body": False, "head": True}), params)
        {'body': True, 'head': False}
        >>> zeroed = optim.multi_transform({"a": optim.adam(0.1), "z": optim.set_to_zero()},
        ...                                {"body": "z", "head": "a"})
        >>> frozen_leaves(zeroed, params)  # set_to_zero is not freeze: the gradient is taken
        {'body': False, 'head': False}
    """
    flags = _walk(optimizer, params)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), flags)
