"""State beside the params: `Variables(params, state)` and how a layer says it has state.

A stateful model (BatchNorm with running statistics, or a `Sequential` holding one) returns
`Variables(params, state)` from `init`, and its `apply(variables, x, *, key=None, train=False)`
returns `(y, new_state)`: the running statistics move only with `train=True`. The optimizer
sees `variables.params` only, and both autodiffs differentiate the params only: the state
enters the computation as a constant (its new value is computed with `stop_gradient`).
Stateless models keep `params = init(key, x)` and `y = apply(params, x)`.
"""
from typing import Any, NamedTuple

STATEFUL = "__funcdl_stateful__"


class Variables(NamedTuple):
    """A stateful model's variables: `params` (trained by the optimizer) and `state` (updated
    by `apply(..., train=True)`, e.g. BatchNorm's running mean and variance).

    Both are pytrees of arrays; for a `Sequential`, lists with one entry per layer (`{}` for a
    layer without params or without state).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from funcdl import nn
        >>> model = nn.Sequential(nn.Linear(3), nn.BatchNorm1d())
        >>> variables = model.init(jax.random.key(0), jnp.zeros((4, 2)))
        >>> type(variables).__name__, sorted(variables.state[1])
        ('Variables', ['count', 'mean', 'var'])
        >>> y, state = model.apply(variables, jnp.ones((4, 2)), train=True)
        >>> y.shape, int(state[1]["count"])
        ((4, 3), 1)
    """
    params: Any
    state: Any


def mark_stateful(model):
    """`model` (a `Model`) marked as stateful: `is_stateful(model)` is True. Returns it."""
    for function in model:
        setattr(function, STATEFUL, True)
    return model


def is_stateful(model: Any) -> bool:
    """True when `model.init` returns `Variables` and `model.apply` returns `(y, state)`.

    Examples:
        >>> from funcdl import nn
        >>> nn.is_stateful(nn.BatchNorm2d()), nn.is_stateful(nn.Linear(3))
        (True, False)
        >>> nn.is_stateful(nn.BatchNorm2d(track_running_stats=False))  # batch statistics only
        False
    """
    return bool(getattr(getattr(model, "apply", None), STATEFUL, False))


def check_variables(variables, name: str) -> Variables:
    """TypeError unless `variables` is a `Variables` (a stateful model given its params only)."""
    if not isinstance(variables, Variables):
        raise TypeError(
            f"{name}: a stateful model's apply takes the `Variables(params, state)` that its "
            f"`init` returns, got {type(variables).__name__}: pass `variables = model.init(key, "
            f"x)` itself (`y, state = model.apply(variables, x, train=...)`), not "
            f"`variables.params`")
    return variables
