"""One training step as a pure function, and `make_train_step`, its jitted public form.

A step computes the loss at the current params, its gradient (by `jax.grad` or by funcdl's own
tape, `fdl.autodiff`), and the optimizer's update::

    loss, grads = value_and_grad(lambda p: loss_fn(apply(p, x), y))(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = params + updates

Everything a step needs that is not an array lives in a `StepSpec`, a hashable NamedTuple of
the user's functions: it is the static argument of the compiled programs, so a second `fit`
with the same model, loss and optimizer reuses what the first one compiled.

Mixed precision (`compute_dtype`, e.g. bfloat16): the floating params and the floating leaves
of `x` are cast to `compute_dtype` inside the differentiated function, so the forward and
backward passes run in it while the gradient arrives in the params' own dtype (the cast's
derivative casts back); predictions are cast to float32 before `loss_fn` and the metrics.
float16 adds dynamic loss scaling (`loss_scale.py`): the optimizer state is then a
`LossScaleState` around the optimizer's own.
"""
import functools
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from funcdl import autodiff, ops
from funcdl.nn.model import Model, call_apply
from funcdl.nn.state import Variables
from funcdl.optim.base import Optimizer, apply_updates
from funcdl.optim.frozen import frozen_leaves
from funcdl.train import hyperdata, loss_scale
from funcdl.train.donation import donating_step
from funcdl.train.param_checks import check_float_params
from funcdl.train.stateful import (check_model_variables, check_not_bare_apply,
                                   model_is_stateful, trainable, with_params)

GRAD_BACKENDS = ("jax", "funcdl")
ModelLike = Union[Model, Callable[..., Any]]  # a Model, or a function apply(params, x)
PyTree = Any  # an array, or nested dicts, tuples and lists of arrays


class StepSpec(NamedTuple):
    """The static part of a training step (hashable: jit caches compiled programs on it)."""
    model: Any  # a Model (apply(params, x, key=, train=)) or a function apply(params, x)
    loss_fn: Callable  # (pred, target) -> scalar
    optimizer: Optimizer
    grad_backend: str  # "jax" | "funcdl"
    compute_dtype: Optional[jnp.dtype]  # None: compute in the params' dtype
    metrics: tuple = ()  # ((name, fn(pred, target) -> scalar), ...)


def _cast_floats(tree, dtype):
    """Every floating leaf of `tree` (arrays or Tensors) cast to `dtype`; others unchanged."""
    def cast(leaf):
        if jnp.issubdtype(leaf.dtype, jnp.floating) and leaf.dtype != dtype:
            return ops.astype(leaf, dtype)
        return leaf
    is_tensor = lambda leaf: isinstance(leaf, autodiff.Tensor)  # noqa: E731
    return jax.tree_util.tree_map(cast, tree, is_leaf=is_tensor)


def forward_with_state(spec: StepSpec, params, x, key, train: bool):
    """`(pred, new_state)`: the model's predictions for `x` (in float32 with a
    `compute_dtype`, else as computed) and, for a stateful model (`params` its `Variables`),
    the state its apply returned (None for a stateless one). With a `compute_dtype` only the
    params and `x` are cast: the state keeps its own dtype (float32 running statistics)."""
    stateful = model_is_stateful(spec.model)
    if spec.compute_dtype is not None:
        if stateful:
            params = Variables(_cast_floats(params.params, spec.compute_dtype), params.state)
        else:
            params = _cast_floats(params, spec.compute_dtype)
        x = _cast_floats(x, spec.compute_dtype)
    if isinstance(spec.model, Model):  # only the keywords its apply accepts (key, train)
        out = call_apply(spec.model, params, x, key=key, train=train)
    else:
        out = spec.model(params, x)
    pred, state = out if stateful else (out, None)
    if spec.compute_dtype is not None:
        pred = _cast_floats(pred, jnp.dtype(jnp.float32))
    return pred, state


def forward(spec: StepSpec, params, x, key, train: bool):
    """The model's predictions for `x` (`forward_with_state` without the state)."""
    return forward_with_state(spec, params, x, key, train)[0]


def _plain(tree):
    """Tensors replaced by their values (the funcdl backend's aux comes back plain already)."""
    return jax.tree_util.tree_map(lambda v: v.value if isinstance(v, autodiff.Tensor) else v,
                                  tree, is_leaf=lambda v: isinstance(v, autodiff.Tensor))


def loss_grad_state(spec: StepSpec, params, x, y, key, scale=None):
    """`(loss, pred, grads, new_state)` at `params`: loss a scalar, pred the float32 (or
    model-dtype) predictions for the batch, grads with the structure, shapes and dtypes of the
    differentiated params (`params.params` for a stateful model's `Variables`, whose state
    enters the loss as a constant; else `params`), new_state what the stateful model's apply
    returned (None for a stateless model). scale: None, or a float32 () loss scale: grads are
    then those of `scale * loss` (loss itself is returned unscaled).

    A leaf that `spec.optimizer` freezes (`fdl.optim.freeze`, read by
    `fdl.optim.frozen.frozen_leaves`: PyTorch's `requires_grad=False`) is not differentiated:
    it enters the loss as a constant and its gradient is exact zeros, so XLA computes nothing
    for it and a NaN that would only reach it is no non-finite gradient."""
    state = params.state if isinstance(params, Variables) else None

    def objective(p):
        variables = p if state is None else Variables(p, state)
        pred, new_state = forward_with_state(spec, variables, x, key, True)
        loss = spec.loss_fn(pred, y)
        if scale is None:
            return loss, (loss, pred, new_state)
        wide = jnp.promote_types(loss.dtype, jnp.float32)  # a float16 loss * 2**16 is inf
        return _cast_floats(loss, wide) * scale.astype(wide), (loss, pred, new_state)

    differentiate = jax.value_and_grad if spec.grad_backend == "jax" else autodiff.value_and_grad
    weights = trainable(params)
    leaves, treedef = jax.tree_util.tree_flatten(weights)
    frozen = jax.tree_util.tree_leaves(frozen_leaves(spec.optimizer, weights))
    if not any(frozen):
        (_, (loss, pred, new_state)), grads = differentiate(objective, has_aux=True)(weights)
        return _plain(loss), _plain(pred), grads, _plain(new_state)

    def merged(free):  # the weights, the frozen leaves as constants of the objective
        free = iter(free)
        return jax.tree_util.tree_unflatten(
            treedef, [leaf if is_frozen else next(free) for leaf, is_frozen in zip(leaves, frozen)])

    free = [leaf for leaf, is_frozen in zip(leaves, frozen) if not is_frozen]
    (_, (loss, pred, new_state)), free_grads = differentiate(
        lambda f: objective(merged(f)), has_aux=True)(free)
    free_grads = iter(free_grads)  # a frozen leaf has no gradient: exact zeros
    grads = jax.tree_util.tree_unflatten(treedef, [
        jnp.zeros_like(leaf) if is_frozen else next(free_grads)
        for leaf, is_frozen in zip(leaves, frozen)])
    return _plain(loss), _plain(pred), grads, _plain(new_state)


def loss_and_grad(spec: StepSpec, params, x, y, key, scale=None):
    """`(loss, pred, grads)`: `loss_grad_state` without the new state."""
    return loss_grad_state(spec, params, x, y, key, scale)[:3]


def all_finite(tree) -> jax.Array:
    """bool (): every element of every floating leaf of `tree` is finite."""
    flags = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)
             if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    return functools.reduce(jnp.logical_and, flags, jnp.array(True))


def apply_step(spec: StepSpec, params, opt_state, x, y, key, mark_grads: bool = False):
    """One update: `(new_params, new_opt_state, loss_before, pred, finite)`.

    `finite` (bool ()) is the one definition of a finite step that the NaN guard uses: the
    loss, every gradient, every update and every floating leaf of the new params and new
    optimizer state are finite. So an infinite learning rate (finite gradient, infinite
    update) or Adam's second moment overflowing to inf on a finite gradient (finite update,
    infinite state) is a non-finite step, caught at that step.

    float16 (`opt_state` a `LossScaleState`): the gradients of the scaled loss; a step whose
    unscaled gradients are not finite is skipped (params and inner state unchanged, the scale
    halved), which is not a non-finite step: `finite` is then the loss and the new params and
    state being finite.

    A stateful model (`params` its `Variables`): the optimizer updates `params.params`, the
    new state is the one the training forward pass returned, and `new_params` is
    `Variables(updated params, new state)`; a non-finite new state makes the step non-finite
    (`stateful.py`).

    mark_grads (the fast program): the new params are NaN where a gradient is not finite
    (`mark_non_finite_grads`). A frozen leaf (`loss_grad_state`) has zero gradients: its NaN
    is none."""
    scale = loss_scale.scale_of(opt_state) if loss_scale.uses_loss_scaling(
        spec.compute_dtype) else None
    loss, pred, grads, state = loss_grad_state(spec, params, x, y, key, scale)
    new_params, opt_state, finite = apply_grads(spec, params, opt_state, grads, state, loss,
                                                mark_grads=mark_grads)
    return new_params, opt_state, loss, pred, finite


def mark_non_finite_grads(spec: StepSpec, new_params, grads):
    """`new_params` with NaN at every element whose gradient is not finite: the fast
    program's per-step share of `apply_step`'s `finite` (`epochs.py`), so that its end check
    of the final params sees a non-finite gradient even where the update ignores it (a
    `set_to_zero` leaf's: its params would come back unchanged). An elementwise select fused
    into the update, where a reduction of the gradients per step cost 5-9% of an MLP epoch; a
    frozen leaf's gradient is zeros, so nothing is selected for it. float16
    (`LossScaleState`): unchanged, as a step with non-finite unscaled gradients is skipped, not
    a non-finite step."""
    if loss_scale.uses_loss_scaling(spec.compute_dtype):
        return new_params
    marked = jax.tree_util.tree_map(
        lambda p, g: jnp.where(jnp.isfinite(g), p, jnp.asarray(jnp.nan, p.dtype)),
        trainable(new_params), grads)
    return with_params(new_params, marked,
                       new_params.state if isinstance(new_params, Variables) else None)


def apply_grads(spec: StepSpec, params, opt_state, grads, state, loss,
                mark_grads: bool = False):
    """The update of `apply_step` from gradients already taken: `(new_params, new_opt_state,
    finite)`. grads: of the loss (of the scaled loss with float16's `LossScaleState`), the
    structure of `trainable(params)`; state: the stateful model's new state (None otherwise);
    loss: the scalar whose finiteness enters `finite` (`apply_step`'s rule). Gradient
    accumulation (`micro_batches.py`) calls it with the average of a group's gradients.
    mark_grads: `apply_step`'s."""
    weights = trainable(params)  # a stateful model's Variables: the optimizer sees .params
    if loss_scale.uses_loss_scaling(spec.compute_dtype):
        new_weights, opt_state, _ = loss_scale.scaled_update(spec.optimizer, weights, opt_state,
                                                             grads)
        new_params = with_params(params, new_weights, state)
        finite = jnp.isfinite(loss) & all_finite((new_params, opt_state))
        return new_params, opt_state, finite
    updates, opt_state = spec.optimizer.update(grads, opt_state, weights)
    new_params = with_params(params, apply_updates(weights, updates), state)
    finite = jnp.isfinite(loss) & all_finite((grads, updates, new_params, opt_state))
    if mark_grads:
        new_params = mark_non_finite_grads(spec, new_params, grads)
    return new_params, opt_state, finite


def check_grad_backend(grad_backend):
    if grad_backend not in GRAD_BACKENDS:
        raise ValueError(f"`grad_backend` must be one of {GRAD_BACKENDS}, got {grad_backend!r}")


def check_compute_dtype(compute_dtype):
    """`compute_dtype` as a jnp.dtype (None stays None); TypeError unless floating."""
    if compute_dtype is None:
        return None
    try:
        dtype = jnp.dtype(compute_dtype)
    except TypeError:
        raise TypeError("`compute_dtype` must be a floating-point dtype (e.g. jnp.bfloat16) or "
                        f"None, got {compute_dtype!r}") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError("`compute_dtype` must be a floating-point dtype (e.g. jnp.bfloat16) or "
                        f"None, got {dtype}")
    return dtype


def check_model(model):
    if not (isinstance(model, Model) or callable(model)):
        raise TypeError("`model` must be a fdl.nn.Model or a function apply(params, x), "
                        f"got {type(model).__name__}")


def check_loss(loss_fn, name="loss_fn"):
    if not callable(loss_fn):
        raise TypeError(f"`{name}` must be a function (pred, target) -> scalar, "
                        f"got {type(loss_fn).__name__}")


def check_callables(model, loss_fn, optimizer):
    """TypeErrors for a model, loss or optimizer of the wrong kind."""
    check_model(model)
    check_loss(loss_fn)
    duck_typed = (callable(getattr(optimizer, "init", None))
                  and callable(getattr(optimizer, "update", None)))
    if not (isinstance(optimizer, Optimizer) or duck_typed):
        raise TypeError("`optimizer` must be an fdl.optim optimizer (init, update), "
                        f"got {type(optimizer).__name__}")


def make_train_step(apply: ModelLike, loss_fn: Callable, optimizer: Optimizer, *,
                    grad_backend: str = "jax",
                    compute_dtype: Optional[Any] = None) -> Callable[..., tuple]:
    """A jitted training step `step(params, opt_state, x, y, key=None) -> (params, opt_state,
    loss)`.

    apply: a `fdl.nn.Model` (called as `apply(params, x, key=key, train=True)`, passing only
    the keywords its apply accepts, so a hand-built `Model(init, lambda params, x: ...)` works)
    or a function `apply(params, x)`. loss_fn: `(pred, target) -> scalar`. optimizer: an
    `fdl.optim` optimizer. `x` and `y` are arrays `(B, ...)` or pytrees of them (dicts,
    tuples); `apply` and `loss_fn` receive them as given. `loss` is the loss at the params
    given (before the update).
    grad_backend: "jax" (`jax.grad`) or "funcdl" (`fdl.autodiff`): the same model code either way.
    compute_dtype: see the module docstring (float32 master params and optimizer state).
    With `jnp.float16` the step scales the loss dynamically (`fdl.train.loss_scale`, the rule
    of `torch.amp.GradScaler`): it takes `opt_state` None (a fresh `LossScaleState`), a plain
    state of `optimizer` (wrapped with a fresh scale, 2**16) or a `LossScaleState`, and returns
    a `LossScaleState`; a skipped step (non-finite scaled gradients) returns the params
    unchanged and half the scale. A `LossScaleState` with another `compute_dtype` is a
    TypeError.

    A stateful model (`fdl.nn.is_stateful`, e.g. with BatchNorm): `step(variables, opt_state,
    x, y, key=None) -> (variables, opt_state, loss)`, `variables` the `Variables(params,
    state)` from `init`, `opt_state` the optimizer's state of `variables.params`
    (`optimizer.init(variables.params)`); the gradient is taken w.r.t. `variables.params`
    only and the returned state is the one of the training forward pass. Pass the Model, not
    its apply (a TypeError otherwise), and the `Variables`, not their params.

    Compiles: the optimizer's non-zero float hyperparameters (lr, betas, momentum, eps, weight
    decay, a schedule's numbers) are arguments of the compiled step, as they are for `fit`:
    a second `make_train_step` with an equal model and loss and an optimizer that differs only
    in those numbers compiles nothing (switching one between zero and non-zero changes the
    optimizer state's structure and compiles again). An optimizer built by hand, and a model
    or loss that cannot be hashed, compile a step of their own.

    Donation: the step donates (consumes) the `params` and `opt_state` it is given, so XLA
    writes the new ones into their buffers; afterwards only the returned ones are valid (using
    the old ones again raises a RuntimeError that says so; pass
    `jax.tree_util.tree_map(jnp.copy, params)` to keep the originals).
    Params must be floating-point (an integer or bool leaf is a TypeError naming its path,
    raised when the step is traced, before compiling), and one array object may not appear at
    two paths (a ValueError naming both): tied weights are one leaf used twice inside
    `apply`, as PyTorch's tied weights are one parameter.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from funcdl import nn, losses, optim
      >>> model, opt = nn.Linear(1), optim.sgd(lr=0.1)
      >>> params = model.init(jax.random.key(0), jnp.zeros((4, 3)))
      >>> step = make_train_step(model, losses.mse_loss, opt)
      >>> x, y = jnp.ones((4, 3)), jnp.zeros((4, 1))
      >>> params, state, loss0 = step(params, opt.init(params), x, y)
      >>> params, state, loss1 = step(params, state, x, y)
      >>> bool(loss1 < loss0)
      True
    """
    check_callables(apply, loss_fn, optimizer)
    check_grad_backend(grad_backend)
    static_optimizer, numbers = hyperdata.split(optimizer)  # numbers traced: no recompile
    spec = StepSpec(apply, loss_fn, static_optimizer, grad_backend,
                    check_compute_dtype(compute_dtype))

    check_not_bare_apply(apply, "make_train_step", "apply")
    try:
        hash(spec)
    except TypeError:  # an unhashable model or loss: a program of this step's own
        return donating_step(_BoundStep(
            jax.jit(functools.partial(_step, spec=spec), donate_argnums=(0, 1)), {}, numbers))
    return donating_step(_BoundStep(_step_program, {"spec": spec}, numbers))


def _step(params, opt_state, x, y, key, numbers, *, spec):
    check_model_variables(spec.model, params, "make_train_step")  # at trace time: free per call
    check_float_params(params, where="make_train_step")
    optimizer = hyperdata.bound(spec.optimizer, numbers)  # rebuilt from the traced numbers
    spec = spec._replace(optimizer=optimizer)
    opt_state = loss_scale.prepare(optimizer, trainable(params), opt_state, spec.compute_dtype)
    params, opt_state, loss, _, _ = apply_step(spec, params, opt_state, x, y, key)
    return params, opt_state, loss


# One program per StepSpec (its optimizer the Skeleton of `hyperdata.split`), shared by every
# `make_train_step` of an equal model, loss and optimizer structure; the numbers are an argument.
_step_program = jax.jit(_step, static_argnames=("spec",), donate_argnums=(0, 1))


class _BoundStep:
    """`step(params, opt_state, x, y, key=None) -> (params, opt_state, loss)`: `jitted` (a
    `jax.jit` of `_step`) with one `make_train_step`'s `static` keywords (its spec) and
    numbers bound; `lower`, `trace` and `eval_shape` are the jitted function's, bound so."""

    def __init__(self, jitted, static: dict, numbers):
        self._jitted, self._static, self._numbers = jitted, static, numbers

    def __call__(self, params, opt_state, x, y, key=None):
        return self._jitted(params, opt_state, x, y, key, self._numbers, **self._static)

    def lower(self, params, opt_state, x, y, key=None):
        return self._jitted.lower(params, opt_state, x, y, key, self._numbers, **self._static)

    def trace(self, params, opt_state, x, y, key=None):
        return self._jitted.trace(params, opt_state, x, y, key, self._numbers, **self._static)

    def eval_shape(self, params, opt_state, x, y, key=None):
        return self._jitted.eval_shape(params, opt_state, x, y, key, self._numbers,
                                       **self._static)
