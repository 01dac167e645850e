"""The k optimizers of a `sweep`: `hyperparams` checked, each configuration built concretely
(so the constructors' range checks run on real numbers), and their numbers stacked.

`configurations(make_optimizer, {"lr": (k,), "momentum": (k,)})` calls
`make_optimizer(lr=lr[i], momentum=momentum[i])` for each i as Python floats; all k optimizers
must have one structure (one `Skeleton`: the same constructors, ints, flags and zeros), and
their `Numbers` are stacked to `(k, n)` arrays, which the sweep's program takes as its vmapped
argument.
"""
import inspect
from typing import Mapping, NamedTuple

import jax.numpy as jnp
import numpy as np

from funcdl.construction import Skeleton
from funcdl.optim.hyperparams import Numbers, as_data


class Configurations(NamedTuple):
    skeleton: Skeleton  # the structure shared by the k optimizers
    numbers: Numbers  # each field (k, n), weakly typed
    values: dict  # name -> tuple of k Python floats (the concrete hyperparameters)
    k: int
    optimizers: tuple  # the k optimizers built with those floats


def _check_values(name, values) -> tuple:
    """`hyperparams[name]` as a tuple of Python floats (a 1-D array of real numbers)."""
    where = f"`hyperparams[{name!r}]`"
    try:
        array = np.asarray(values)
    except Exception:  # noqa: BLE001 (anything NumPy refuses)
        raise TypeError(f"{where} must be a 1-D array of numbers, got "
                        f"{type(values).__name__}") from None
    if array.dtype == bool or array.dtype.kind not in "fiu":
        raise TypeError(f"{where} must be a 1-D array of real numbers, got dtype {array.dtype}")
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"{where} must be a 1-D array with one value per configuration "
                         f"(shape (k,), k >= 1), got shape {array.shape}")
    return tuple(float(v) for v in array)


def _check_keywords(make_optimizer, names) -> None:
    try:
        signature = inspect.signature(make_optimizer)
    except (TypeError, ValueError):  # a builtin or C function: let the call tell
        return
    try:
        signature.bind_partial(**{name: 0.0 for name in names})
    except TypeError as error:
        raise TypeError(f"`hyperparams` keywords {sorted(names)} must be keywords of "
                        f"`make_optimizer`{signature}: {error}") from None


def _describe(values: dict, i: int) -> str:
    return ", ".join(f"hyperparams[{name!r}][{i}] = {v[i]!r}" for name, v in values.items())


def configurations(make_optimizer, hyperparams: Mapping) -> Configurations:
    """The checked, stacked configurations of a sweep (module docstring). TypeError for a
    `hyperparams` that is not a dict of 1-D number arrays keyed by keywords of
    `make_optimizer`, or for an optimizer built by hand; ValueError for arrays of different
    lengths, a value the optimizer refuses (naming `hyperparams[name][i]`), or configurations
    of different structures (a zero against a non-zero, an int that changes a schedule)."""
    if not callable(make_optimizer):
        raise TypeError("`make_optimizer` must be a function of the hyperparameters returning "
                        f"an fdl.optim optimizer, got {type(make_optimizer).__name__}")
    if not isinstance(hyperparams, Mapping) or not hyperparams:
        raise TypeError("`hyperparams` must be a non-empty dict {{keyword of make_optimizer: "
                        f"array (k,)}}, got {hyperparams!r}")
    for name in hyperparams:
        if not isinstance(name, str):
            raise TypeError(f"`hyperparams` keys must be keyword names (str), got {name!r}")
    values = {name: _check_values(name, v) for name, v in hyperparams.items()}
    lengths = {name: len(v) for name, v in values.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"hyperparams[{name!r}] has {n}" for name, n in lengths.items())
        raise ValueError(f"`hyperparams` arrays must all have the same length k (one value per "
                         f"configuration): {shown}")
    _check_keywords(make_optimizer, values)
    k = next(iter(lengths.values()))
    skeletons, numbers, optimizers = [], [], []
    for i in range(k):
        try:
            optimizer = make_optimizer(**{name: v[i] for name, v in values.items()})
        except ValueError as error:
            raise ValueError(f"sweep configuration {i} ({_describe(values, i)}): "
                             f"{error}") from None
        data = as_data(optimizer)
        if data is None:
            raise TypeError("`make_optimizer` must return an optimizer built by fdl.optim's "
                            "constructors (chains and schedules included), whose numbers can "
                            f"be swept; got {type(optimizer).__name__} without a construction "
                            "record (an optimizer built by hand)")
        optimizers.append(optimizer)
        skeletons.append(data[0])
        numbers.append(data[1])
        if data[0] != skeletons[0]:
            raise ValueError(
                f"sweep configurations 0 ({_describe(values, 0)}) and {i} ({_describe(values, i)}) "
                "give optimizers of different structures: only non-zero float hyperparameters "
                "can be swept (a zero changes the optimizer's state, e.g. no momentum buffer; "
                "ints and flags are part of the compiled program)")
    stacked = Numbers(*(jnp.stack(field) for field in zip(*numbers)))
    return Configurations(skeletons[0], stacked, values, k, tuple(optimizers))
