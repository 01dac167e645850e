"""Tests for `funcdl/optim/masking.py`: masked, set_to_zero, multi_transform and freeze.

References: the same optimizers run by hand on the leaves they own (a sub-pytree, or the
gradient with the weight decay added by hand), optax's own `masked`/`multi_transform` where
optax is installed (the bench extra; skipped with the reason otherwise), and the bit patterns
of the frozen params.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fdl
from funcdl import optim
from train_reference import counting_compilations

RNG = np.random.default_rng(0)
PARAMS = {"dense": {"w": jnp.asarray(RNG.normal(size=(3, 2)), jnp.float32),
                    "b": jnp.asarray([-0.0, 0.5], jnp.float32)},
          "head": {"w": jnp.asarray(RNG.normal(size=(2, 1)), jnp.float32),
                   "b": jnp.asarray([-0.0], jnp.float32)}}
GRADS = [jax.tree_util.tree_map(lambda p: jnp.asarray(RNG.normal(size=p.shape), p.dtype), PARAMS)
         for _ in range(4)]
DECAY_MASK = {"dense": {"w": True, "b": False}, "head": {"w": True, "b": False}}


def run(opt, params=PARAMS, grads=GRADS):
    """`opt` applied to `grads` one after the other; the final params and state."""
    state = opt.init(params)
    for g in grads:
        updates, state = opt.update(g, state, params)
        params = optim.apply_updates(params, updates)
    return params, state


def bits(tree):
    return [np.asarray(leaf).view(np.uint32).tolist() for leaf in jax.tree_util.tree_leaves(tree)]


def test_masked_weight_decay_is_decay_added_by_hand_to_the_masked_leaves():
    wd = 0.1
    opt = optim.chain(optim.masked(optim.add_decayed_weights(wd), DECAY_MASK), optim.adam(1e-2))
    got, _ = run(opt)

    # by hand: Adam on g + wd * p for the weights, on g alone for the biases
    reference = optim.adam(1e-2)
    params, state = PARAMS, reference.init(PARAMS)
    for g in GRADS:
        g = jax.tree_util.tree_map(lambda m, gi, p: gi + wd * p if m else gi, DECAY_MASK, g, params)
        updates, state = reference.update(g, state, params)
        params = optim.apply_updates(params, updates)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, params)


def test_masked_passes_the_other_updates_through_and_keeps_no_buffers_for_them():
    opt = optim.masked(optim.trace(0.9), {"dense": True, "head": False})  # a prefix mask
    state = opt.init(PARAMS)
    buffers = [leaf for leaf in jax.tree_util.tree_leaves(state) if leaf.ndim]  # not counts
    assert [b.shape for b in buffers] == [(2,), (3, 2)]  # dense's b and w only
    updates, _ = opt.update(GRADS[0], state, PARAMS)
    for name in ("w", "b"):  # untouched: the very gradient
        np.testing.assert_array_equal(updates["head"][name], GRADS[0]["head"][name])
        np.testing.assert_array_equal(updates["dense"][name], GRADS[0]["dense"][name])  # b_1 = g


def test_masked_accepts_a_function_of_the_params():
    by_rank = optim.masked(optim.add_decayed_weights(0.5), lambda p: jax.tree_util.tree_map(
        lambda leaf: leaf.ndim == 2, p))
    by_tree = optim.masked(optim.add_decayed_weights(0.5), DECAY_MASK)
    a, b = run(by_rank)[0], run(by_tree)[0]
    assert bits(a) == bits(b)


def test_freeze_keeps_frozen_params_bitwise_and_trains_the_rest_as_alone():
    trainable = {"dense": False, "head": True}
    got, state = run(optim.freeze(optim.adam(0.05), trainable))
    assert bits(got["dense"]) == bits(PARAMS["dense"])  # -0.0 stays -0.0 too
    alone, _ = run(optim.adam(0.05), PARAMS["head"], [g["head"] for g in GRADS])
    assert bits(got["head"]) == bits(alone)
    # no Adam buffers for the frozen layer: mu and nu of the head's two leaves only
    shapes = sorted(leaf.shape for leaf in jax.tree_util.tree_leaves(state) if leaf.ndim)
    assert shapes == [(1,), (1,), (2, 1), (2, 1)]


def test_multi_transform_runs_each_label_as_its_own_optimizer():
    labels = {"dense": {"w": "adam", "b": "sgd"}, "head": "sgd"}
    opt = optim.multi_transform({"adam": optim.adam(1e-2), "sgd": optim.sgd(0.1, momentum=0.9)},
                                labels)
    got, _ = run(opt)
    w_alone, _ = run(optim.adam(1e-2), PARAMS["dense"]["w"], [g["dense"]["w"] for g in GRADS])
    assert bits(got["dense"]["w"]) == bits(w_alone)
    rest = lambda t: (t["dense"]["b"], t["head"])
    rest_alone, _ = run(optim.sgd(0.1, momentum=0.9), rest(PARAMS), [rest(g) for g in GRADS])
    assert bits(rest(got)) == bits(rest_alone)


def test_the_same_optax_idioms_give_optaxs_numbers():
    optax = pytest.importorskip("optax", reason="optax (the bench extra) is not installed")
    mask = {"dense": {"w": True, "b": False}, "head": {"w": True, "b": False}}
    ours = optim.chain(optim.masked(optim.add_decayed_weights(1e-2), mask), optim.sgd(0.1))
    theirs = optax.chain(optax.masked(optax.add_decayed_weights(1e-2), mask), optax.sgd(0.1))
    labels = {"dense": "a", "head": "b"}
    ours_multi = optim.multi_transform({"a": optim.sgd(0.1), "b": optim.sgd(0.3)}, labels)
    theirs_multi = optax.multi_transform({"a": optax.sgd(0.1), "b": optax.sgd(0.3)}, labels)
    for mine, other in ((ours, theirs), (ours_multi, theirs_multi)):
        expected, state = PARAMS, other.init(PARAMS)
        for g in GRADS:
            updates, state = other.update(g, state, expected)
            expected = optax.apply_updates(expected, updates)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
                               run(mine)[0], expected)


def test_rebuilt_masks_and_labels_give_equal_optimizers():
    make = lambda: optim.freeze(optim.adam(1e-3), {"dense": False, "head": True})
    assert make() == make() and hash(make()) == hash(make())
    assert make() != optim.freeze(optim.adam(1e-3), {"dense": True, "head": True})
    labels = {"dense": "a", "head": "b"}
    assert (optim.multi_transform({"a": optim.sgd(0.1), "b": optim.sgd(0.2)}, dict(labels))
            == optim.multi_transform({"a": optim.sgd(0.1), "b": optim.sgd(0.2)}, dict(labels)))


def test_fit_with_a_frozen_layer_leaves_it_bitwise_unchanged():
    model = fdl.nn.Sequential(fdl.nn.Linear(4), fdl.nn.Tanh(), fdl.nn.Linear(1))
    x = jnp.asarray(RNG.normal(size=(32, 3)), jnp.float32)
    y = jnp.asarray(RNG.normal(size=(32, 1)), jnp.float32)
    params = model.init(jax.random.key(0), x)
    trainable = [False, {}, True]  # the Tanh's params are {}
    opt = optim.freeze(optim.adam(1e-2), trainable)
    new, opt_state, history = fdl.train.fit(model, params, fdl.losses.mse_loss, opt, x, y,
                                            epochs=3, batch_size=8, key=jax.random.key(1),
                                            progress=False)
    assert bits(new[0]) == bits(params[0])
    assert bits(new[2]) != bits(params[2])
    assert history["loss"][-1] < history["loss"][0]


@pytest.mark.parametrize("make, error, match", [
    (lambda: optim.masked(optim.identity(), {"dense": True}), ValueError,
     r"`mask` must have the structure of the params \(or a prefix of it.*\): at params the "
     r"params have a dict with keys \['dense', 'head'\] and `mask` has a dict with keys "
     r"\['dense'\]"),
    (lambda: optim.masked(optim.identity(), {"dense": {"w": True}, "head": True}), ValueError,
     r"at params\['dense'\] the params have a dict with keys \['b', 'w'\] and `mask` has a "
     r"dict with keys \['w'\]"),
    (lambda: optim.masked(optim.identity(), [True, False]), ValueError,
     r"at params the params have a dict with keys \['dense', 'head'\] and `mask` has a list "
     r"of length 2"),
    (lambda: optim.multi_transform({"a": optim.sgd(0.1)}, {"dense": "a", "head": {"w": "a"}}),
     ValueError, r"`param_labels` must have the structure of the params .*at params\['head'\] "
                 r"the params have a dict with keys \['b', 'w'\] and `param_labels` has a dict "
                 r"with keys \['w'\]"),
    (lambda: optim.freeze(optim.sgd(0.1), {"dense": [True, True], "head": True}), ValueError,
     r"`trainable` must have the structure of the params .*at params\['dense'\] the params "
     r"have a dict with keys \['b', 'w'\] and `trainable` has a list of length 2"),
    (lambda: optim.freeze(optim.sgd(0.1), lambda p: {"dense": True}), ValueError,
     r"`trainable` must have the structure of the params .*at params the params have a dict "
     r"with keys \['dense', 'head'\] and `trainable` has a dict with keys \['dense'\]"),
    (lambda: optim.masked(optim.identity(), {"dense": jnp.array(True), "head": False}), TypeError,
     r"`mask` must hold Python bools"),
    (lambda: optim.multi_transform({"a": optim.sgd(0.1)}, {"dense": "a", "head": "b"}),
     ValueError, r"`param_labels` has labels without a transform: \['b'\]"),
    (lambda: optim.freeze(optim.sgd(0.1), {"dense": 1, "head": True}), TypeError,
     r"`trainable` must hold Python bools"),
])
def test_bad_masks_and_labels_name_the_argument(make, error, match):
    with pytest.raises(error, match=match):
        make().init(PARAMS)


def test_a_mask_of_another_structure_is_named_before_fit_or_sweep_compile():
    model = fdl.nn.Sequential(fdl.nn.Linear(4), fdl.nn.Tanh(), fdl.nn.Linear(1))
    x = jnp.asarray(RNG.normal(size=(16, 3)), jnp.float32)
    y = jnp.asarray(RNG.normal(size=(16, 1)), jnp.float32)
    params = model.init(jax.random.key(0), x)

    def fit(opt):
        return fdl.train.fit(model, params, fdl.losses.mse_loss, opt, x, y, epochs=1,
                             batch_size=8, progress=False)

    fit(optim.freeze(optim.sgd(0.1), [False, {}, True]))  # the eager helpers compiled once
    bad = [lambda: optim.freeze(optim.sgd(0.1), [False, True]),
           lambda: optim.chain(optim.masked(optim.add_decayed_weights(1e-4),
                                            [{"w": True}, {}, True]), optim.sgd(0.1)),
           lambda: optim.multi_transform({"a": optim.sgd(0.1)}, ["a", "a", "a", "a"])]
    messages = [r"`trainable` .*at params the params have a list of length 3 and `trainable` "
                r"has a list of length 2",
                r"`mask` .*at params\[0\] the params have a dict with keys \['b', 'w'\] and "
                r"`mask` has a dict with keys \['w'\]",
                r"`param_labels` .*at params the params have a list of length 3 and "
                r"`param_labels` has a list of length 4"]
    for make in bad:  # their numbers' eager stacking compiled once, outside the count
        optim.hyperparams.as_data(make())
    with counting_compilations() as compiled:
        for make, message in zip(bad, messages):
            with pytest.raises(ValueError, match=message):
                fit(make())
            with pytest.raises(ValueError, match=message):  # make_train_step's user's init
                make().init(params)
    assert compiled == []
    with pytest.raises(ValueError, match=messages[0]):
        fdl.train.sweep(model, params, fdl.losses.mse_loss,
                        lambda lr: optim.freeze(optim.sgd(lr), [False, True]),
                        {"lr": [0.1, 0.2]}, x, y, epochs=1, progress=False)


def test_multi_transform_needs_a_dict_of_transforms():
    with pytest.raises(TypeError, match=r"`transforms` must be a non-empty dict"):
        optim.multi_transform([optim.sgd(0.1)], {"dense": 0, "head": 0})


def test_learning_rates_are_read_from_the_construction():
    cosine = optim.schedules.cosine_decay(0.1, 100)
    assert optim.learning_rates(optim.adamw(cosine)) == {"lr": cosine}
    assert optim.learning_rates(optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.5))) == {
        "lr": 0.5}
    assert optim.learning_rates(optim.freeze(optim.rmsprop(0.01), {"dense": False,
                                                                    "head": True})) == {
        "lr": 0.01}
    multi = optim.multi_transform({"a": optim.sgd(0.1), "b": optim.adam(cosine)},
                                  {"dense": "a", "head": "b"})
    assert optim.learning_rates(multi) == {"lr/a": 0.1, "lr/b": cosine}
    assert optim.learning_rates(optim.Optimizer(lambda p: (), lambda g, s, p=None: (g, s))) == {}
    assert optim.learning_rates(optim.clip_by_global_norm(1.0)) == {}
    # the value at a step is the schedule's, computed independently here
    for step in (0, 37, 100):
        expected = 0.1 * 0.5 * (1 + np.cos(np.pi * step / 100))
        assert optim.learning_rate_value(cosine, step) == pytest.approx(expected, rel=1e-6)
    assert optim.learning_rate_value(0.5, 3) == 0.5
