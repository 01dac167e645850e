"""The optimizer of `fit`'s compiled programs as data: its structure static, its numbers traced.

An optimizer built by `fdl.optim`'s constructors (schedules included) splits into a hashable
`Skeleton` (the constructors called, ints, flags, zeros) and `Numbers` (its non-zero floats:
learning rate, betas, momentum, weight decay, eps, a schedule's values; see
`funcdl.optim.hyperparams`). `fit` puts the Skeleton in its `StepSpec` (the static key of the
compiled programs) and passes the Numbers as an argument, and the program rebuilds the
optimizer from them (`bind_plan`, `bound`). So a second `fit` that changes only numbers finds
the programs the first one compiled, and `sweep` vmaps the same programs over k stacked
Numbers. An optimizer built by hand (`Optimizer(init, update)` of your own functions) has no
Skeleton: it stays the static key itself, and its Numbers are None.

Precision: the Numbers are weakly typed (each leaf's dtype, as Python floats), and `1 - beta`
and `log(beta)` are computed on the host in double, as the Python-float optimizer computes
them; the product of two hyperparameters inside an update (AdamW's `lr * weight_decay`)
rounds in the params' dtype instead of in double, which can change the last bit of float32
trajectories (`funcdl.optim.hyperparams`).
"""
from typing import Any, Optional, Tuple

import jax
from jax.sharding import NamedSharding, PartitionSpec

from funcdl.optim import hyperparams
from funcdl.optim.hyperparams import Numbers


def split(optimizer) -> Tuple[Any, Optional[Numbers]]:
    """`(static, numbers)`: the optimizer's Skeleton and Numbers, or `(optimizer, None)` for
    an optimizer built by hand (then `static` is the optimizer, compared by identity)."""
    data = hyperparams.as_data(optimizer)
    return (optimizer, None) if data is None else data


def bound(static, numbers: Optional[Numbers]):
    """The optimizer of `split`'s `static` with `numbers` (traced or concrete, shape `(n,)`);
    `static` itself when `numbers` is None."""
    return static if numbers is None else hyperparams.build(static, numbers)


def bind_plan(plan, numbers: Optional[Numbers]):
    """`plan` (an `EpochPlan`) whose step spec holds the optimizer rebuilt from `numbers`
    (inside a compiled program: the plan is then never hashed again); `plan` when None."""
    if numbers is None:
        return plan
    return plan._replace(spec=plan.spec._replace(optimizer=bound(plan.spec.optimizer, numbers)))


def place(numbers: Optional[Numbers], mesh):
    """`numbers` on the devices of a program: as they are without a mesh, replicated over
    `mesh` otherwise (`jax.device_put` keeps them weakly typed)."""
    if numbers is None or mesh is None:
        return numbers
    return jax.device_put(numbers, NamedSharding(mesh, PartitionSpec()))
