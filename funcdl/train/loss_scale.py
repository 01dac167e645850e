"""Dynamic loss scaling for float16 training, with `torch.amp.GradScaler`'s rule and defaults.

float16 has 10 mantissa bits and a smallest normal of 2**-14 (about 6.1e-5): gradients
smaller than about 6e-8 become 0 in a float16 backward pass, and those between the two lose
their precision. So with `compute_dtype=float16` the loss is multiplied by a scale `s` before
it is differentiated; every cotangent of the backward pass is then `s` times larger, and the
gradients, which arrive in the params' dtype (float32 master params), are divided by `s`
again before the optimizer sees them::

    g = grad(lambda p: s * loss_fn(apply(p, x), y))(params) * (1 / s)   # in float32

A scale too large makes the float16 backward overflow to inf; the step is then skipped and
the scale halved. Per step (torch's `GradScaler.update`, `_amp_update_scale_`)::

    if any g is inf or NaN:  params, inner state unchanged;  s = s * 0.5;  good_steps = 0
    else:                    inner optimizer update;  good_steps += 1
                             if good_steps == 2000:  good_steps = 0
                                                     s = s * 2 if s * 2 is finite (float32)

starting from `s = 2**16`, `good_steps = 0`. The scale and the count are part of the optimizer
state, `LossScaleState(inner, scale, good_steps)`, so they are returned by `fit` as its
`opt_state`, saved in its checkpoint and restored by `resume`. bfloat16 (float32's exponent
range) needs no scaling and gets none.

The non-finite check is made on the unscaled gradients (torch makes it on the scaled ones):
the two agree for every scale >= 1; below 1, a finite scaled gradient whose unscaled value
overflows float32 skips the step here, where torch would apply an inf update.
"""
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcdl.optim.base import apply_updates

INIT_SCALE = 2.0 ** 16
GROWTH_FACTOR = 2.0
BACKOFF_FACTOR = 0.5
GROWTH_INTERVAL = 2000


class LossScaleState(NamedTuple):
    """The optimizer state of a float16 run: the user's optimizer's own state and the scale."""
    inner: Any  # the state of the user's optimizer (`optimizer.init(params)`)
    scale: jax.Array  # float32 (): the loss is multiplied by it before differentiation
    good_steps: jax.Array  # int32 (): finite steps since the scale last changed (torch's
    #                        growth tracker)


def uses_loss_scaling(compute_dtype) -> bool:
    """True for `compute_dtype` float16 (the only dtype that is scaled)."""
    return compute_dtype is not None and jnp.dtype(compute_dtype) == jnp.dtype(jnp.float16)


def wrap(inner, scale=INIT_SCALE, good_steps=0) -> LossScaleState:
    """`inner` (an optimizer state) with a fresh scale (2**16) and count (0)."""
    return LossScaleState(inner, jnp.asarray(scale, jnp.float32),
                          jnp.asarray(good_steps, jnp.int32))


@functools.partial(jax.jit, static_argnames=("optimizer",))
def init_scaled(optimizer, params) -> LossScaleState:
    """`LossScaleState(optimizer.init(params), 2**16, 0)`, in one dispatch."""
    return wrap(optimizer.init(params))


def prepare(optimizer, params, opt_state, compute_dtype):
    """The optimizer state a step with `compute_dtype` uses, from the one the caller gave.

    float16: None becomes `init_scaled(optimizer, params)`, a plain state of the optimizer is
    wrapped with a fresh scale, a `LossScaleState` is kept (its scale as float32, its count as
    int32). Any other dtype: the state is returned as given; a `LossScaleState` is a TypeError
    (only float16 is scaled: pass its `.inner`)."""
    if not uses_loss_scaling(compute_dtype):
        if isinstance(opt_state, LossScaleState):
            raise TypeError(
                "`opt_state` is a LossScaleState (the state of a float16 run with dynamic loss "
                "scaling), but only compute_dtype=float16 scales the loss; got compute_dtype="
                f"{None if compute_dtype is None else jnp.dtype(compute_dtype)}: pass "
                "`opt_state.inner` to continue without loss scaling")
        return opt_state
    if opt_state is None:
        return init_scaled(optimizer, params)
    if isinstance(opt_state, LossScaleState):
        for name, value in (("scale", opt_state.scale), ("good_steps", opt_state.good_steps)):
            if jnp.shape(value) != ():
                raise ValueError(f"`opt_state.{name}` must be a scalar, got shape "
                                 f"{jnp.shape(value)}")
        return wrap(opt_state.inner, opt_state.scale, opt_state.good_steps)
    return wrap(opt_state)


def scale_of(state) -> jax.Array:
    """`state.scale`; TypeError unless `state` is a `LossScaleState`."""
    if not isinstance(state, LossScaleState):
        raise TypeError("with compute_dtype=float16 the optimizer state must be a "
                        f"LossScaleState (see `prepare`), got {type(state).__name__}")
    return state.scale


def unscale(grads, scale):
    """`g * (1 / scale)` for every gradient, computed in float32 at least (float64 stays
    float64) and returned in the gradient's own dtype."""
    inv_scale = jnp.float32(1) / scale

    def one(g):
        wide = jnp.promote_types(g.dtype, jnp.float32)
        return (g.astype(wide) * inv_scale.astype(wide)).astype(g.dtype)
    return jax.tree_util.tree_map(one, grads)


def next_scale(scale, good_steps, found_inf):
    """`(scale, good_steps)` after a step (torch's rule, module docstring); all traced."""
    grown = scale * jnp.float32(GROWTH_FACTOR)
    counted = good_steps + 1
    grow = counted == GROWTH_INTERVAL
    new_scale = jnp.where(found_inf, scale * jnp.float32(BACKOFF_FACTOR),
                          jnp.where(grow & jnp.isfinite(grown), grown, scale))
    new_good = jnp.where(found_inf | grow, jnp.int32(0), counted)
    return new_scale.astype(jnp.float32), new_good.astype(jnp.int32)


def any_non_finite(grads) -> jax.Array:
    """bool (): some element of some gradient is inf or NaN."""
    finite = [jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]
    return ~functools.reduce(jnp.logical_and, finite, jnp.array(True))


def scaled_update(optimizer, params, state: LossScaleState, scaled_grads):
    """`(new_params, new_state, skipped)` from the gradients of `state.scale * loss`.

    The gradients are unscaled; if any is not finite the step is skipped (`skipped` True: the
    params and the inner state come back unchanged, selected with `jnp.where`) and the scale
    halves; otherwise the optimizer's update is applied. Then `next_scale`."""
    grads = unscale(scaled_grads, state.scale)
    skipped = any_non_finite(grads)
    updates, inner = optimizer.update(grads, state.inner, params)
    stepped = apply_updates(params, updates)
    keep = lambda new, old: jnp.where(skipped, old, new)  # noqa: E731
    new_params = jax.tree_util.tree_map(keep, stepped, params)
    inner = jax.tree_util.tree_map(keep, inner, state.inner)
    scale, good_steps = next_scale(state.scale, state.good_steps, skipped)
    return new_params, LossScaleState(inner, scale, good_steps), skipped
