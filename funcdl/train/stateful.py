"""Training a stateful model (BatchNorm): what `fit`, `evaluate`, `predict` and
`make_train_step` do with `fdl.nn.Variables(params, state)`.

A stateful model's `apply(variables, x, *, key, train)` returns `(y, new_state)`. Training
treats the `Variables` as one value where it carries params (the compiled scan's carry, the NaN
guard's select, the checkpoint's `"params"` entry), and splits it where the two differ::

    (loss, (pred, new_state)), grads = value_and_grad(
        lambda p: loss_fn(*apply(Variables(p, state), x, train=True)), has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)     # params only
    variables = Variables(params + updates, new_state)

so the optimizer sees `variables.params` only (`optimizer.init(variables.params)`; an
`opt_state` given by the caller is the params' state) and the state enters the loss as a
constant to both autodiffs. Evaluation (`train=False`) normalises with the state and leaves
it unchanged. A step whose new state is not finite is a non-finite step (the NaN guard keeps
the old params and the old state together).
"""
from funcdl.nn.model import Model
from funcdl.nn.state import STATEFUL, Variables, is_stateful


def model_is_stateful(model) -> bool:
    """True for a `fdl.nn.Model` whose apply returns `(y, state)` (`fdl.nn.is_stateful`)."""
    return isinstance(model, Model) and is_stateful(model)


def trainable(params):
    """What the optimizer sees: `params.params` for `Variables`, else `params` itself."""
    return params.params if isinstance(params, Variables) else params


def with_params(params, new_params, new_state):
    """`Variables(new_params, new_state)` when `params` is `Variables`, else `new_params`."""
    return Variables(new_params, new_state) if isinstance(params, Variables) else new_params


def check_not_bare_apply(model, where: str, name: str = "model"):
    """TypeError for a stateful model's bare `apply` function: training and evaluation need
    the Model itself (it is called with `train=True` and its state is threaded)."""
    if not isinstance(model, Model) and getattr(model, STATEFUL, False):
        raise TypeError(
            f"{where}: `{name}` is the apply function of a stateful model "
            f"({getattr(model, '__funcdl_name__', getattr(model, '__qualname__', 'apply'))}): "
            f"pass the Model itself (so that it is called with train=True and its state is "
            f"threaded) together with the `Variables(params, state)` from `variables = "
            f"model.init(key, x)`")


def check_model_variables(model, params, where: str, name: str = "params"):
    """TypeError when `model` and `params` do not go together: a stateful Model given
    something other than the `Variables` its `init` returns, a stateful model's bare `apply`
    function (`check_not_bare_apply`), or `Variables` given to a stateless model."""
    check_not_bare_apply(model, where)
    if model_is_stateful(model) and not isinstance(params, Variables):
        raise TypeError(
            f"{where}: `{name}` must be the `Variables(params, state)` of a stateful model "
            f"(its apply returns (y, state)), got {type(params).__name__}: pass `variables = "
            f"model.init(key, x)` itself, not `variables.params`")
    if isinstance(params, Variables) and not model_is_stateful(model):
        raise TypeError(
            f"{where}: `{name}` is a `Variables(params, state)`, which only a stateful "
            f"fdl.nn.Model takes (fdl.nn.is_stateful(model) is False for this `model`, a "
            f"{type(model).__name__}): pass the Model whose `init` returned them, or "
            f"`{name}.params` to a stateless model")
