"""The optimizer protocol: `Optimizer(init, update)`, `chain`, `identity` and `apply_updates`.

An optimizer is a pair of pure functions over pytrees::

    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = apply_updates(params, updates)

`updates` are what gets added to the parameters (already negated and scaled by the learning
rate), so `p_new = p + u`. Params are pytrees of floating-point arrays; grads have the params'
structure, shapes and dtypes. Every leaf of every update keeps its param's shape and dtype.
"""
import contextlib
import math
from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp

from funcdl.construction import recorded, recorded_eq, recorded_hash, recorded_ne
Params = Any  # a pytree of floating-point arrays
Updates = Any  # a pytree with the params' structure, shapes and dtypes
State = Any  # a pytree of arrays (NamedTuples, tuples, None)
Schedule = Callable[[jax.Array], jax.Array]  # number of updates already applied -> lr
ScalarOrSchedule = Union[float, Schedule]


class Optimizer(NamedTuple):
    """A gradient transformation: `init(params) -> state`,
    `update(grads, state, params=None) -> (updates, state)`.

    Exactly the 2-field NamedTuple: `init, update = opt` works. An optimizer built by an
    `fdl.optim` constructor (an alias, a transform, `chain`, `clip_by_global_norm`, with a
    schedule from `fdl.optim.schedules` as `lr`) equals and hashes as any optimizer built by
    the same call again, `adam(1e-3) == adam(lr=1e-3)`, so `jax.jit` caches (`fit`'s compiled
    programs) reuse what they compiled for it; numbers, strings and tuples compare by value,
    optimizers and schedules by their own construction, arrays and other functions by
    identity (see `funcdl.construction`, whose `constructed_by(opt)` returns the call).
    `Optimizer(init, update)` built by hand compares by its two functions.

    Examples:
      >>> from funcdl.optim import adam, chain, clip_by_global_norm, schedules
      >>> adam(1e-3) == adam(), adam(1e-3) == adam(1e-2)
      (True, False)
      >>> lr = schedules.cosine_decay
      >>> chain(clip_by_global_norm(1.0), adam(lr(0.1, 100))) == chain(clip_by_global_norm(1.0),
      ...                                                              adam(lr(0.1, 100)))
      True
    """

    init: Callable[[Params], State]
    update: Callable[..., tuple]

    # By the call that built the optimizer (funcdl.construction); by the functions otherwise.
    __eq__ = recorded_eq
    __ne__ = recorded_ne
    __hash__ = recorded_hash


class EmptyState(NamedTuple):
    """The state of a transformation that keeps nothing between steps."""


@recorded
def identity() -> Optimizer:
    """The transformation that returns the gradients unchanged.

    Examples:
      >>> import jax.numpy as jnp
      >>> opt = identity()
      >>> updates, _ = opt.update({"w": jnp.ones(2)}, opt.init({"w": jnp.zeros(2)}))
      >>> updates["w"].tolist()
      [1.0, 1.0]
    """

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        check_state(state, EmptyState, "identity")
        return updates, state

    return Optimizer(init, update)


@recorded
def chain(*transforms: Optimizer) -> Optimizer:
    """Apply `transforms` one after the other; the state is the tuple of their states.

    `chain(clip_by_global_norm(1.0), adam(1e-3))` clips the gradients, then runs Adam on them.

    Examples:
      >>> import jax.numpy as jnp
      >>> from funcdl.optim import chain, clip_by_global_norm, sgd
      >>> opt = chain(clip_by_global_norm(1.0), sgd(lr=0.5))
      >>> params = {"w": jnp.zeros(2)}
      >>> updates, state = opt.update({"w": jnp.array([3.0, 4.0])}, opt.init(params), params)
      >>> # the gradient is clipped to norm 1, then scaled by -0.5
      >>> [round(v, 4) for v in updates["w"].tolist()]
      [-0.3, -0.4]
    """

    def init(params):
        return tuple(transform.init(params) for transform in transforms)

    def update(updates, state, params=None):
        check_state(state, (), "chain")
        if params is not None:
            check_matches(updates, params, "params")
        if len(state) != len(transforms):
            raise ValueError(
                f"`state` must hold one entry per transform ({len(transforms)}), "
                f"got {len(state)}"
            )
        new_state = []
        for transform, transform_state in zip(transforms, state):
            updates, transform_state = transform.update(updates, transform_state, params)
            new_state.append(transform_state)
        return updates, tuple(new_state)

    return Optimizer(init, update)


def apply_updates(params: Params, updates: Updates) -> Params:
    """`p + u` for every leaf p of `params` and u of `updates` (the same structure), in the
    param's dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> new = apply_updates({"w": jnp.ones(2, jnp.float32)}, {"w": jnp.full(2, -0.25)})
      >>> new["w"].tolist(), new["w"].dtype
      ([0.75, 0.75], dtype('float32'))
    """

    check_matches(updates, params, "params", name="updates")

    def add(param, update):
        param = jnp.asarray(param)
        return param + jnp.asarray(update).astype(param.dtype)

    return jax.tree_util.tree_map(add, params, updates)


def learning_rate_at(lr: ScalarOrSchedule, count: jax.Array):
    """lr_t for the update that follows `count` applied updates (0 for the first update).

    A float is returned as it is, so that it stays a weakly typed Python scalar and multiplies
    a float32 leaf in float32; a schedule is called with `count`.
    """
    return lr(count) if callable(lr) else lr


def default_float_dtype():
    """float64 when x64 is enabled, else float32: the dtype of per-step scalars (bias
    corrections, scheduled learning rates) before they are cast to each leaf's dtype.

    Computing them in float64 where available matches PyTorch, which computes them in Python
    floats (double) and rounds once to the parameter's dtype.
    """
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def cast_scalar(value, like: jax.Array):
    """`value` in the dtype of the leaf `like`; a Python number stays a weak Python number."""
    if isinstance(value, (int, float)):
        return value
    return jnp.asarray(value).astype(like.dtype)


def require_params(params, transform_name: str) -> None:
    """Raise if a transform that reads the parameters was given none."""
    if params is None:
        raise ValueError(f"`params` must be given to `update` for {transform_name}, got None")


def _describe(value) -> str:
    """What a wrong `state` argument is, in plain words (with the likely mistake)."""
    if value is None:
        return "None"
    if callable(value) and not hasattr(value, "_fields"):
        name = getattr(value, "__name__", type(value).__name__)
        hint = " (the function opt.init itself, not its result)" if name == "init" else ""
        return f"the function `{name}`{hint}"
    if isinstance(value, (dict, list, jax.Array)) or hasattr(value, "shape"):
        return f"a {type(value).__name__} (the params or the grads?)"
    return f"a {type(value).__name__}"


def check_state(state, state_type, transform_name: str) -> None:
    """TypeError unless `state` is what this transform's `init` returns (a `state_type`)."""
    if isinstance(state_type, tuple) and not state_type:  # chain: a tuple (or list) of states
        valid = isinstance(state, tuple) and not hasattr(state, "_fields")
        expected = "a tuple with one state per transform"
    else:
        valid = isinstance(state, state_type)
        expected = state_type.__name__
    if not valid:
        raise TypeError(
            f"`state` must be the state that `opt.init(params)` returns ({expected}, for "
            f"{transform_name}), got {_describe(state)}: call `state = opt.init(params)` once "
            f"before the first update and pass that state: `opt.update(grads, state, params)`")


def check_matches(updates, reference, reference_name: str, name: str = "grads") -> None:
    """ValueError naming the leaf (by its path, `jax.tree_util.keystr`) where `updates` differ in
    structure or shape from `reference` (the params, or a state buffer shaped like them)."""
    flat_updates, updates_def = jax.tree_util.tree_flatten_with_path(updates)
    flat_reference, reference_def = jax.tree_util.tree_flatten_with_path(reference)
    if updates_def != reference_def:
        keystr = jax.tree_util.keystr
        update_paths = [keystr(path) for path, _ in flat_updates]
        reference_paths = [keystr(path) for path, _ in flat_reference]
        missing = [path for path in reference_paths if path not in update_paths]
        extra = [path for path in update_paths if path not in reference_paths]
        detail = "; ".join(f"{what} leaves {', '.join(paths[:5])}"
                           for what, paths in (("missing", missing), ("unexpected", extra)) if paths)
        raise ValueError(
            f"`{name}` must have the structure of the {reference_name}: "
            f"{detail or f'expected {reference_def}, got {updates_def}'}")
    for (path, update), (_, ref) in zip(flat_updates, flat_reference):
        update_shape, ref_shape = jnp.shape(update), jnp.shape(ref)
        if update_shape != ref_shape:
            raise ValueError(
                f"`{name}` leaf {jax.tree_util.keystr(path)} must have shape {ref_shape}, as in "
                f"the {reference_name}, got {update_shape}")


# ---------------------------------------------------------------- hyperparameters as data
# Inside a compiled program that takes the numeric hyperparameters as arguments
# (`funcdl.optim.hyperparams`), a hyperparameter is a traced scalar. The checks below skip
# traced values (the concrete ones were checked), zero stays a Python 0.0 (it changes the
# state's structure, so it is never data), and the values that PyTorch derives in double
# precision, 1 - beta and log(beta), come with the data, computed on the host in double:
# `complement` and `log_of` find them there, so they round as today's Python-float path.
_DERIVED = {}  # id(traced value) -> (the value, its complement, its log)


def is_data(value) -> bool:
    """True for a hyperparameter given as an array (a traced argument), not a Python number."""
    return isinstance(value, (jax.Array, jax.core.Tracer))


@contextlib.contextmanager
def derived_values(entries):
    """While building an optimizer from traced hyperparameters: `entries` are triples
    `(value, 1 - value, log(value))` of traced scalars, the last two computed on the host in
    double precision; `complement` and `log_of` return them for `value`."""
    saved = dict(_DERIVED)
    for value, one_minus, log in entries:
        _DERIVED[id(value)] = (value, one_minus, log)
        _DERIVED.setdefault(id(one_minus), (one_minus, value, None))
    try:
        yield
    finally:
        _DERIVED.clear()
        _DERIVED.update(saved)


def _derived(value):
    entry = _DERIVED.get(id(value))
    return entry if entry is not None and entry[0] is value else None


def complement(value):
    """1 - value: in Python doubles for a number (as PyTorch computes it), the host's double
    value for a traced hyperparameter (else 1 - value traced)."""
    entry = _derived(value) if is_data(value) else None
    return entry[1] if entry is not None else 1 - value


def log_of(value):
    """log(value), in double for a number; the host's double log for a traced hyperparameter."""
    if not is_data(value):
        return math.log(value)
    entry = _derived(value)
    return entry[2] if entry is not None and entry[2] is not None else jnp.log(value)


def is_zero(value) -> bool:
    """value == 0 for a number; False for data (zero is never made data)."""
    return not is_data(value) and value == 0


def check_non_negative(value, name: str) -> None:
    """PyTorch's `if not 0.0 <= value: raise ValueError` check, with funcdl's message (traced
    values are not checked: `fdl.train.sweep` checks the concrete ones)."""
    if is_data(value):
        return
    if not 0.0 <= value:
        raise ValueError(f"`{name}` must be >= 0, got {value}")


def check_learning_rate(lr: ScalarOrSchedule) -> None:
    """A float lr must be >= 0; a schedule is not checked (it is only known per step)."""
    if not callable(lr):
        check_non_negative(lr, "lr")
