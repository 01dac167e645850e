"""Hyperparameters as data: an optimizer's numbers as arguments of a compiled program.

`fit` compiles one program per optimizer *structure*: `as_data(adam(1e-3))` splits the
optimizer into its `Skeleton` (everything but the non-zero floats: hashable, the part a
compiled program is specialised on) and `Numbers` (the floats, as arrays), and inside the
program `build(skeleton, numbers)` makes the optimizer again from the traced numbers. So
`adam(1e-3)` then `adam(3e-4, betas=(0.8, 0.99))` share one compiled program; `sweep` stacks
the numbers of k configurations and vmaps the program over them.

Precision: the numbers are weakly typed scalars (like Python floats, they take each leaf's
dtype), and the values PyTorch derives in double precision, `1 - beta` and `log(beta)`, are
computed on the host in double and passed beside them. Products of two hyperparameters
(AdamW's `lr * weight_decay`) round in the numbers' dtype, where the Python-float optimizer
rounds them in double: on the 33 float32 golden trajectories of the tests, 21 are bitwise the
Python-float ones and the rest within 2e-6 relative; in float64 all match PyTorch to 1e-10. A zero stays in the skeleton (it changes the state's structure: no weight
decay buffer, no momentum), so switching a value between zero and non-zero compiles again.
"""
import math
from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from funcdl.construction import Skeleton, split_numbers
from funcdl.optim.base import Optimizer, derived_values


class Numbers(NamedTuple):
    """An optimizer's non-zero float hyperparameters, in the skeleton's order, as arrays:
    `value` (n,), and `complement` (1 - value) and `log` (log value, NaN for value <= 0), each
    computed in double on the host. Weakly typed, in float64 with x64 and float32 otherwise.
    For a sweep, each has a leading axis k: `(k, n)`."""
    value: jax.Array
    complement: jax.Array
    log: jax.Array


def _weak(values) -> jax.Array:
    """A weakly typed array of Python floats (a stack of weakly typed scalars stays weak)."""
    return jnp.stack([jnp.asarray(float(v)) for v in values]) if values else jnp.zeros((0,))


def numbers_of(values) -> Numbers:
    """`Numbers` of a sequence of floats."""
    values = [float(v) for v in values]
    return Numbers(_weak(values), _weak([1 - v for v in values]),
                   _weak([math.log(v) if v > 0 else math.nan for v in values]))


def as_data(optimizer: Optimizer) -> Optional[Tuple[Skeleton, Numbers]]:
    """`(skeleton, numbers)` of an optimizer built by `fdl.optim`'s constructors (schedules
    included), or None for one built by hand (whose numbers are not known).

    Examples:
        >>> from funcdl import optim
        >>> skeleton, numbers = as_data(optim.sgd(0.5, momentum=0.25))
        >>> numbers.value.tolist(), numbers.complement.tolist()
        ([0.5, 0.25], [0.5, 0.75])
        >>> as_data(optim.sgd(0.1, momentum=0.9))[0] == skeleton  # the same program
        True
    """
    split = split_numbers(optimizer)
    if split is None:
        return None
    skeleton, values = split
    return skeleton, numbers_of(values)


def build(skeleton: Skeleton, numbers: Numbers) -> Optimizer:
    """The optimizer of `skeleton` with `numbers` (concrete or traced, shape `(n,)`) in its
    slots; `1 - value` and `log(value)` are taken from `numbers`, not recomputed.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from funcdl import optim
        >>> skeleton, numbers = as_data(optim.adam(1e-3))
        >>> @jax.jit
        ... def step(numbers, g, state, p):
        ...     return build(skeleton, numbers).update(g, state, p)
        >>> p = {"w": jnp.ones(2)}
        >>> state = optim.adam(1e-3).init(p)
        >>> u1, _ = step(numbers, p, state, p)
        >>> u2, _ = step(as_data(optim.adam(1e-2))[1], p, state, p)  # no new compile
        >>> [round(float(u["w"][0]), 6) for u in (u1, u2)]
        [-0.001, -0.01]
    """
    n = skeleton.size
    if tuple(numbers.value.shape) != (n,):
        raise ValueError(f"`numbers` must hold {n} values (shape ({n},)), got shape "
                         f"{tuple(numbers.value.shape)}")
    values = [numbers.value[i] for i in range(n)]
    entries = [(values[i], numbers.complement[i], numbers.log[i]) for i in range(n)]
    with derived_values(entries):
        return skeleton.rebuild(values)
