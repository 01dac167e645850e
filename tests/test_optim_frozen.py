"""Tests for `funcdl/optim/frozen.py`: which leaves an optimizer freezes (no gradient), read
from its construction through `chain`, `masked`, `multi_transform` and nested `freeze`.

Reference: the leaves each combinator's own documentation names, and, for every optimizer
here, the leaves whose params its `update` leaves bitwise unchanged on random gradients (a
frozen leaf must be one of them; `set_to_zero` ones are too, but are not frozen).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import optim
from funcdl.optim.frozen import frozen_leaves

RNG = np.random.default_rng(0)
PARAMS = {"a": jnp.asarray(RNG.normal(size=(2, 2)), jnp.float32),
          "b": jnp.asarray(RNG.normal(size=(2,)), jnp.float32),
          "c": {"w": jnp.asarray(RNG.normal(size=(3,)), jnp.float32),
                "v": jnp.asarray(RNG.normal(size=(1,)), jnp.float32)}}
GRADS = jax.tree_util.tree_map(lambda p: jnp.asarray(RNG.normal(size=p.shape), p.dtype), PARAMS)
SGD = optim.sgd(0.1)
HIDDEN = optim.freeze(SGD, {"a": False, "b": True, "c": True})
CASES = [
    (SGD, {"a": False, "b": False, "c": {"w": False, "v": False}}),
    (optim.freeze(SGD, {"a": True, "b": False, "c": True}),
     {"a": False, "b": True, "c": {"w": False, "v": False}}),
    (optim.freeze(SGD, lambda p: {"a": True, "b": True, "c": False}),  # a function of params
     {"a": False, "b": False, "c": {"w": True, "v": True}}),
    (optim.freeze(optim.freeze(SGD, {"a": True, "b": False, "c": {"w": True, "v": False}}),
                  {"a": True, "b": True, "c": {"w": True, "v": True}}),  # nested
     {"a": False, "b": True, "c": {"w": False, "v": True}}),
    (optim.freeze(optim.freeze(SGD, {"a": False, "b": True, "c": True}),
                  {"a": True, "b": True, "c": False}),  # the inner one sees c hidden
     {"a": True, "b": False, "c": {"w": True, "v": True}}),
    (optim.chain(optim.freeze(SGD, {"a": False, "b": True, "c": True}),
                 optim.clip_by_global_norm(1.0)),  # the freeze sees the gradients first
     {"a": True, "b": False, "c": {"w": False, "v": False}}),
    (optim.chain(optim.clip_by_global_norm(1.0), optim.freeze(SGD, {"a": False, "b": True,
                                                                    "c": True})),
     {"a": False, "b": False, "c": {"w": False, "v": False}}),  # the clip reads a's too
    (optim.masked(optim.freeze(SGD, {"a": False, "b": True, "c": True}),
                  {"a": True, "b": True, "c": False}),  # c passes through: not frozen
     {"a": True, "b": False, "c": {"w": False, "v": False}}),
    (optim.multi_transform({"f": optim.freeze(optim.adam(0.1), {"a": False, "b": True,
                                                                 "c": True}),
                            "s": SGD}, {"a": "f", "b": "s", "c": "f"}),
     {"a": True, "b": False, "c": {"w": False, "v": False}}),
    (optim.multi_transform({"t": SGD, "z": optim.set_to_zero()},  # set_to_zero: not freeze
                           {"a": "z", "b": "t", "c": "z"}),
     {"a": False, "b": False, "c": {"w": False, "v": False}}),
    (optim.Optimizer(lambda p: HIDDEN.init(p), lambda g, s, p=None: HIDDEN.update(g, s, p)),
     {"a": False, "b": False, "c": {"w": False, "v": False}}),  # by hand: no record, none
]


@pytest.mark.parametrize("opt, expected", CASES)
def test_frozen_leaves_are_the_leaves_each_freeze_names(opt, expected):
    assert frozen_leaves(opt, PARAMS) == expected
    updates, _ = opt.update(GRADS, opt.init(PARAMS), PARAMS)
    new = optim.apply_updates(PARAMS, updates)
    for frozen, before, after in zip(jax.tree_util.tree_leaves(expected),
                                     jax.tree_util.tree_leaves(PARAMS),
                                     jax.tree_util.tree_leaves(new)):
        if frozen:  # a frozen leaf is never updated
            np.testing.assert_array_equal(np.asarray(after), np.asarray(before))


def test_frozen_leaves_reads_shapes_only_and_names_a_bad_mask():
    shapes = jax.tree_util.tree_map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), PARAMS)
    opt = optim.freeze(SGD, {"a": True, "b": False, "c": True})
    assert frozen_leaves(opt, shapes) == frozen_leaves(opt, PARAMS)
    with pytest.raises(ValueError, match="`trainable` must have the structure of the params"):
        frozen_leaves(optim.freeze(SGD, {"a": True}), PARAMS)
