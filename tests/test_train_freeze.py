"""A frozen leaf (`fdl.optim.freeze`) has no gradient (PyTorch's `requires_grad=False`), and
the NaN guard's two programs share one definition of a finite step, the gradients included.

References: a hand-written loop whose loss sees the frozen leaves through `lax.stop_gradient`
(an independent `jax.grad` and the optimizer's own `update`), the initial params' bit
patterns, and the position of the step that made the NaN.
"""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from funcdl import losses, nn, ops, optim, train

X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(16, 1)
Y = 2 * X
LINEAR = nn.Linear(1)
PARAMS = {"net": LINEAR.init(jax.random.key(0), X), "s": jnp.zeros((), jnp.float32)}
FIT = dict(batch_size=4, shuffle=False, progress=False)


def _nan_grad_apply(p, x):
    """`s` enters as `0 * sqrt(s)` at s = 0: d/ds = 0 * inf = NaN, with a finite loss (fdl.ops,
    so that both gradient backends differentiate it)."""
    return LINEAR.apply(p["net"], x) + 0.0 * ops.sqrt(p["s"])


def _bits(tree):
    return [np.asarray(leaf).view(np.uint32).tolist() for leaf in jax.tree_util.tree_leaves(tree)]


def _assert_equal(a, b):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("grad_backend", ["jax", "funcdl"])
@pytest.mark.parametrize("accumulate", [1, 2])
def test_a_frozen_leafs_nan_gradient_trains_on_in_the_fast_and_the_guarded_program(
        grad_backend, accumulate):
    """Fast program: no stop, the frozen leaf bitwise unchanged. Guarded program (the replay
    that a NaN loss at step 2 starts from the call's inputs): it passes steps 0 and 1, where
    only the frozen leaf's gradient would have been NaN, and stops at step 2 with the state
    after them. (Before: the replay stopped at (0, 0).)"""
    opt = optim.freeze(optim.sgd(0.1), {"net": True, "s": False})
    kw = dict(FIT, grad_backend=grad_backend, accumulate=accumulate)
    new, _, history = train.fit(_nan_grad_apply, PARAMS, losses.mse_loss, opt, X, Y, epochs=2,
                                **kw)
    assert np.all(np.isfinite(history["loss"])) and len(history["loss"]) == 2
    assert _bits(new["s"]) == _bits(PARAMS["s"])
    assert _bits(new["net"]) != _bits(PARAMS["net"])

    bad_x = X.copy()
    bad_x[8] = np.nan  # the first row of step 2 (with accumulate=2: group 1's first batch)
    with pytest.raises(FloatingPointError) as info:
        train.fit(_nan_grad_apply, PARAMS, losses.mse_loss, opt, bad_x, Y, epochs=2, **kw)
    assert (info.value.epoch, info.value.step) == (0, 2)
    before, _, _ = train.fit(_nan_grad_apply, PARAMS, losses.mse_loss, opt, X[:8], Y[:8],
                             epochs=1, **kw)  # the clean steps 0 and 1
    _assert_equal(info.value.params, before)
    assert _bits(info.value.params["s"]) == _bits(PARAMS["s"])


@pytest.mark.parametrize("grad_backend", ["jax", "funcdl"])
@pytest.mark.parametrize("accumulate", [1, 2])
def test_a_set_to_zero_leafs_nan_gradient_stops_the_fast_program_at_its_step(
        grad_backend, accumulate):
    """`multi_transform` with `set_to_zero` is not freeze: the gradient is computed (and its
    update zeroed), so its NaN is a non-finite step, in the fast program too, which leaves no
    trace of it in its final state (before: it trained on). The stop is at (0, 0) with the
    initial params."""
    opt = optim.multi_transform({"train": optim.sgd(0.1), "zero": optim.set_to_zero()},
                                {"net": "train", "s": "zero"})
    with pytest.raises(FloatingPointError) as info:
        train.fit(_nan_grad_apply, PARAMS, losses.mse_loss, opt, X, Y, epochs=2,
                  grad_backend=grad_backend, accumulate=accumulate, **FIT)
    assert (info.value.epoch, info.value.step) == (0, 0)
    assert _bits(info.value.params) == _bits(PARAMS)


def _body_and_head():
    model = nn.Sequential(nn.Linear(4), nn.Tanh(), nn.Linear(1))
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    y = np.sin(x.sum(axis=1, keepdims=True)).astype(np.float32)
    return model, model.init(jax.random.key(0), x), x, y


# The freeze first, then a clip of the updates it passes on (the head's only).
CLIPPED = optim.chain(optim.freeze(optim.sgd(0.5), [False, {}, True]),
                      optim.clip_by_global_norm(0.05))


def _hand_written(model, params, x, y, steps, batch):
    """`steps` SGD steps of `CLIPPED` over consecutive batches, the body behind
    `lax.stop_gradient` in the loss (PyTorch's `requires_grad=False`)."""
    def loss(p, xb, yb):
        seen = [jax.tree_util.tree_map(lax.stop_gradient, p[0]), p[1], p[2]]
        return losses.mse_loss(model.apply(seen, xb), yb)

    @jax.jit
    def step(p, state, xb, yb):
        updates, state = CLIPPED.update(jax.grad(loss)(p, xb, yb), state, p)
        return optim.apply_updates(p, updates), state

    p, state = jax.tree_util.tree_map(jnp.copy, params), CLIPPED.init(params)
    for b in range(steps):
        rows = slice((b * batch) % len(x), (b * batch) % len(x) + batch)
        p, state = step(p, state, x[rows], y[rows])
    return p


def test_a_frozen_fit_equals_a_hand_written_loop_with_stop_gradient():
    model, params, x, y = _body_and_head()
    new, _, _ = train.fit(model, params, losses.mse_loss, CLIPPED, x, y, epochs=2,
                          **FIT)
    reference = _hand_written(model, params, x, y, steps=8, batch=4)
    for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(reference)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert _bits(new[0]) == _bits(params[0])


def test_make_train_step_does_not_differentiate_frozen_leaves():
    model, params, x, y = _body_and_head()
    step = train.make_train_step(model, losses.mse_loss, CLIPPED)
    p, state = jax.tree_util.tree_map(jnp.copy, params), CLIPPED.init(params)
    for b in range(3):
        p, state, _ = step(p, state, x[4 * b:4 * b + 4], y[4 * b:4 * b + 4])
    reference = _hand_written(model, params, x, y, steps=3, batch=4)
    for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(reference)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    # a frozen leaf's NaN gradient is none: the step trains on
    nan_opt = optim.freeze(optim.sgd(0.1), {"net": True, "s": False})
    nan_step = train.make_train_step(_nan_grad_apply, losses.mse_loss, nan_opt)
    start = jax.tree_util.tree_map(jnp.copy, PARAMS)
    p, _, _ = nan_step(start, nan_opt.init(PARAMS), X[:4], Y[:4])
    assert np.all(np.isfinite(np.asarray(p["net"]["w"])))
    assert _bits(p["s"]) == _bits(PARAMS["s"])


def test_a_sweep_trains_on_past_a_frozen_nan_gradient_and_stops_at_a_set_to_zero_one():
    """Each of the k configurations by the one definition: a frozen leaf's NaN gradient is
    none (no stop, no warning); a `set_to_zero` leaf's is a stop of every configuration at
    (0, 0), with a RuntimeWarning and a NaN history (before: the sweep trained on)."""
    def frozen(lr):
        return optim.freeze(optim.sgd(lr), {"net": True, "s": False})

    def zeroed(lr):
        return optim.multi_transform({"train": optim.sgd(lr), "zero": optim.set_to_zero()},
                                     {"net": "train", "s": "zero"})
    lrs = {"lr": np.array([0.05, 0.1])}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a stopped configuration warns
        params_k, _, history = train.sweep(_nan_grad_apply, PARAMS, losses.mse_loss, frozen,
                                           lrs, X, Y, epochs=2, **FIT)
    assert np.all(np.isfinite(history["loss"]))
    assert np.all(np.asarray(params_k["s"]) == 0.0)
    with pytest.warns(RuntimeWarning):
        params_k, _, history = train.sweep(_nan_grad_apply, PARAMS, losses.mse_loss, zeroed,
                                           lrs, X, Y, epochs=2, **FIT)
    assert np.all(np.isnan(history["loss"]))
    for leaf, start in zip(jax.tree_util.tree_leaves(params_k),
                           jax.tree_util.tree_leaves(PARAMS)):
        np.testing.assert_array_equal(np.asarray(leaf), np.broadcast_to(start, leaf.shape))


def test_a_clip_before_the_freeze_reads_the_frozen_gradients_as_optaxs_set_to_zero():
    """`freeze(opt, trainable)` is `multi_transform({"train": opt, "frozen": set_to_zero()})`
    in `fit` too: a `clip_by_global_norm` chained before it sees the frozen gradients (they are
    computed), so the two optimizers train bitwise alike. The body's gradient is large against
    max_norm, so leaving it out of the norm would clip the head by another factor."""
    model, params, x, y = _body_and_head()
    clip = optim.clip_by_global_norm(0.05)
    frozen = optim.chain(clip, optim.freeze(optim.sgd(0.5), [False, {}, True]))
    zeroed = optim.chain(clip, optim.multi_transform(
        {"train": optim.sgd(0.5), "frozen": optim.set_to_zero()}, ["frozen", {}, "train"]))
    runs = [train.fit(model, params, losses.mse_loss, opt, x, y, epochs=2, **FIT)[0]
            for opt in (frozen, zeroed)]
    assert _bits(runs[0]) == _bits(runs[1])
