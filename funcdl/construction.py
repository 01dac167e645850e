"""Construction records: which call built a layer, an optimizer, a schedule or an initializer.

funcdl's layers and optimizers are NamedTuples of closures, and closures compare by identity,
so ``adam(1e-3) == adam(1e-3)`` would be False and every rebuilt object would be a new key for
``jax.jit``'s cache of compiled programs (``fit`` compiles again). The constructors of
``fdl.nn``, ``fdl.nn.init`` and ``fdl.optim`` are therefore wrapped in `recorded`, which
stores the call that built the result on the functions it returns:

    >>> from funcdl import nn, optim
    >>> from funcdl.construction import constructed_by
    >>> opt = optim.adam(1e-3)
    >>> record = constructed_by(opt)
    >>> record.constructor is optim.adam, record.args, dict(record.kwargs)
    (True, (0.001, (0.9, 0.999), 1e-08, 0.0, False), {})
    >>> opt == optim.adam(lr=1e-3), opt == optim.adam(1e-2)
    (True, False)
    >>> nn.Sequential(nn.Linear(16), nn.Tanh()) == nn.Sequential(nn.Linear(16), nn.Tanh())
    True

`fdl.nn.Model` and `fdl.optim.Optimizer` compare and hash by that record (`recorded_eq`,
`recorded_hash`), so equal calls give equal objects. Arguments are compared as follows:

- ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``None``, NumPy scalars and
  dtypes by value and type (``1`` and ``1.0`` differ; floats bit for bit, so ``nan`` equals
  itself and ``-0.0`` differs from ``0.0``); tuples and lists element by element; plain dicts
  (a mask of `fdl.optim.masked`, the labels of `multi_transform`) key by key;
- anything with a record (a layer, an optimizer, a schedule, an initializer) by its record;
- everything else by identity: arrays, lambdas, plain functions, other objects.

The record binds the call to the constructor's signature with the defaults applied, so
``adam()``, ``adam(1e-3)`` and ``adam(lr=1e-3)`` are one record; ``args`` holds the positional
parameters (and a ``*args`` tuple), ``kwargs`` the keyword-only ones.
``constructor(*args, **kwargs)`` builds an equal object again, which is how a compiled program
can rebuild an optimizer from its record with other (e.g. traced) hyperparameters.

A ``Model(init, apply)`` built by hand from functions of your own has no record and keeps the
identity semantics of its functions (so does a pair of functions taken from two different
calls; ``Model(layer.init, layer.apply)`` is ``layer`` again). This module is plain Python and
NumPy (no jax, no other funcdl module), shared by ``fdl.nn`` and ``fdl.optim``.
"""
import functools
import inspect
import types
from typing import Any, Callable, Mapping, NamedTuple, Optional

import numpy as np

_ATTRIBUTE = "__funcdl_construction__"


class Construction(NamedTuple):
    """The call that built an object: ``constructor(*args, **kwargs)`` with the defaults filled in.

    constructor: the public constructor (``fdl.optim.adam``, ``fdl.nn.Linear``, ...).
    args: the values of its positional parameters in order (a ``*args`` parameter's values
    follow, unpacked, as in ``inspect.BoundArguments.args``). kwargs: its keyword-only
    parameters, a read-only mapping.
    """
    constructor: Callable
    args: tuple
    kwargs: Mapping[str, Any]

    def arguments(self) -> dict:
        """Every parameter by name, ``{"lr": 0.001, "betas": (0.9, 0.999), ...}``."""
        signature = inspect.signature(self.constructor)
        return dict(signature.bind(*self.args, **self.kwargs).arguments)

    def call_text(self) -> str:
        """The call as Python reads it, the arguments left at their defaults left out:
        ``"normal(std=0.01)"``, ``"kaiming_uniform(a=2.23606797749979)"``, ``"xavier_normal()"``."""
        parameters = inspect.signature(self.constructor).parameters
        given = []
        for name, value in self.arguments().items():
            parameter = parameters[name]
            if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                given += [repr(v) for v in value]
            elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
                given += [f"{key}={v!r}" for key, v in value.items()]
            elif (parameter.default is inspect.Parameter.empty
                  or construction_key(value) != construction_key(parameter.default)):
                given.append(f"{name}={value!r}")
        return f"{self.constructor.__name__}({', '.join(given)})"


class _Holder:
    """What `recorded` attaches to each function of a result: the record, the function it was
    attached to (a copy of the attribute made by `functools.wraps` on another function does not
    count), and the record's hashable key, computed once."""
    __slots__ = ("record", "owner", "key")

    def __init__(self, record, owner, key):
        self.record, self.owner, self.key = record, owner, key


class _Identity:
    """A key part that compares by identity (arrays, lambdas, other objects)."""
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _Identity) and other.value is self.value

    def __hash__(self):
        return id(self.value)


def _holder(function) -> Optional[_Holder]:
    try:
        attributes = vars(function)
    except TypeError:  # no __dict__: a builtin, a C function
        return None
    holder = attributes.get(_ATTRIBUTE)
    return holder if isinstance(holder, _Holder) and holder.owner is function else None


def _holder_of(obj) -> Optional[_Holder]:
    """The holder of a recorded function, or of a NamedTuple whose fields all carry one record."""
    if isinstance(obj, tuple):
        if not hasattr(obj, "_fields") or not obj:
            return None
        holders = [_holder(field) for field in obj]
        first = holders[0]
        if first is None or any(h is None or h.record is not first.record for h in holders):
            return None
        return first
    return _holder(obj)


def constructed_by(obj) -> Optional[Construction]:
    """The `Construction` that built `obj` (a Model, an Optimizer, a schedule, an initializer
    made by a funcdl constructor), or None (hand-built, or not funcdl's).

    >>> from funcdl import nn
    >>> record = constructed_by(nn.Linear(4))
    >>> record.constructor is nn.Linear, record.args, dict(record.kwargs)["bias"]
    (True, (4,), True)
    >>> constructed_by(nn.Model(lambda key, x: {}, lambda params, x: x)) is None
    True
    """
    holder = _holder_of(obj)
    return None if holder is None else holder.record


def _float_bits(value) -> str:
    return float(value).hex()


def construction_key(value):
    """A hashable key of `value` by the rules of the module docstring (equal keys: equal values)."""
    holder = _holder_of(value)
    if holder is not None:
        return holder.key
    if value is None or isinstance(value, (bool, str, bytes)):
        return (type(value), value)
    if isinstance(value, np.generic):
        return (type(value), value.tobytes())
    if isinstance(value, np.dtype):
        return (np.dtype, value.str)
    if isinstance(value, float):
        return (type(value), _float_bits(value))
    if isinstance(value, complex):
        return (type(value), _float_bits(value.real), _float_bits(value.imag))
    if isinstance(value, int):
        return (type(value), value)
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(construction_key(v) for v in value))
    if type(value) is dict:  # a mask or labels pytree; jax orders a dict's leaves by key
        try:
            items = sorted(value.items())
        except TypeError:  # keys of several types: compare by identity
            return _Identity(value)
        return (dict, tuple((key, construction_key(v)) for key, v in items))
    return _Identity(value)


def _record_key(record: Construction):
    return ("construction", _Identity(record.constructor),
            tuple(construction_key(a) for a in record.args),
            tuple(sorted((name, construction_key(v)) for name, v in record.kwargs.items())))


def _attach(result, record: Construction, where: str) -> None:
    key = _record_key(record)
    functions = tuple(result) if isinstance(result, tuple) and hasattr(result, "_fields") else (result,)
    for function in functions:
        try:
            vars(function)[_ATTRIBUTE] = _Holder(record, function, key)
        except TypeError:
            raise TypeError(f"recorded: {where} must return functions (or a NamedTuple of "
                            f"functions) that can carry attributes, got {type(function).__name__}"
                            ) from None


def recorded(constructor: Callable) -> Callable:
    """Decorate a constructor so that what it returns carries its `Construction`.

    The constructor must return NEW functions on every call (closures, as funcdl's layers,
    optimizers, schedules and initializers do), or a NamedTuple of them (``Model``,
    ``Optimizer``); the record is written on each of them. A recorded constructor called by
    another one (``adam`` calls ``chain``) is overwritten by the outer call's record.
    The wrapper keeps the constructor's name, docstring and signature (``functools.wraps``).

    A layer of your own gets value equality the same way:

    >>> import jax.numpy as jnp
    >>> from funcdl import nn
    >>> @recorded
    ... def Scale(factor):
    ...     return nn.named_model(f"Scale({factor})", lambda key, x: {},
    ...                           lambda params, x, *, key=None, train=False: x * factor)
    >>> Scale(2.0) == Scale(2.0), Scale(2.0) == Scale(3.0)
    (True, False)
    """
    signature = inspect.signature(constructor)

    @functools.wraps(constructor)
    def construct(*args, **kwargs):
        result = constructor(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        record = Construction(construct, tuple(bound.args),
                              types.MappingProxyType(dict(bound.kwargs)))
        _attach(result, record, constructor.__qualname__)
        return result

    return construct


# ---------------------------------------------------------------- equality of NamedTuples
# Assigned as `__eq__`, `__ne__`, `__hash__` of `Model` and `Optimizer`.

def recorded_eq(self, other):
    """Equal records when both sides have one; otherwise plain tuple equality (identity of the
    functions). A recorded tuple never equals an unrecorded one (hashes stay consistent)."""
    mine, theirs = _holder_of(self), _holder_of(other)
    if mine is None and theirs is None:
        return tuple.__eq__(self, other)
    if mine is None or theirs is None:
        return False if isinstance(other, tuple) else NotImplemented
    return mine.key == theirs.key


def recorded_ne(self, other):
    equal = recorded_eq(self, other)
    return equal if equal is NotImplemented else not equal


def recorded_hash(self) -> int:
    holder = _holder_of(self)
    return tuple.__hash__(self) if holder is None else hash(holder.key)


# ---------------------------------------------------------------- numbers as data
# A record with its non-zero floats taken out: the part of an object that a compiled program
# is specialised on (`Skeleton`, hashable), and the floats it can take as arguments.

class _Slot(NamedTuple):
    index: int


class Skeleton:
    """A construction with its non-zero float arguments replaced by numbered slots.

    Two objects built by calls that differ only in those floats have equal skeletons (equal
    and hashing alike), so a program compiled for one serves the other; `rebuild(values)`
    makes the object again with `values` (numbers, or traced scalars) in the slots. Zeros stay
    in the skeleton: a zero often changes the object's structure (no weight decay, no
    momentum buffer). Ints, bools, strings and everything else stay too.
    """
    __slots__ = ("tree", "size", "key")

    def __init__(self, tree, size: int):
        self.tree, self.size, self.key = tree, size, _skeleton_key(tree)

    def rebuild(self, values):
        if len(values) != self.size:
            raise ValueError(f"`values` must hold {self.size} numbers, got {len(values)}")
        return _rebuild(self.tree, tuple(values))

    def __eq__(self, other):
        return isinstance(other, Skeleton) and other.key == self.key

    def __hash__(self):
        return hash(self.key)

    def __repr__(self):
        return f"Skeleton({self.size} numbers)"


def _is_number(value) -> bool:
    return (isinstance(value, (float, np.floating)) and not isinstance(value, bool)
            and value != 0)


def _split(value, numbers: list):
    holder = _holder_of(value)
    if holder is not None:
        record = holder.record
        return ("call", record.constructor, tuple(_split(a, numbers) for a in record.args),
                tuple((name, _split(v, numbers)) for name, v in record.kwargs.items()))
    if _is_number(value):
        numbers.append(float(value))
        return _Slot(len(numbers) - 1)
    if type(value) in (tuple, list):
        return (type(value), tuple(_split(v, numbers) for v in value))
    if type(value) is dict:
        return (dict, tuple((key, _split(v, numbers)) for key, v in value.items()))
    return ("leaf", value)


def _skeleton_key(tree):
    if isinstance(tree, _Slot):
        return ("slot",)
    kind = tree[0]
    if kind == "call":
        _, constructor, args, kwargs = tree
        return ("call", _Identity(constructor), tuple(_skeleton_key(a) for a in args),
                tuple(sorted((name, _skeleton_key(v)) for name, v in kwargs)))
    if kind == "leaf":
        return ("leaf", construction_key(tree[1]))
    if kind is dict:
        try:
            items = sorted(tree[1], key=lambda item: item[0])
        except TypeError:
            items = tree[1]
        return (dict, tuple((key, _skeleton_key(v)) for key, v in items))
    return (kind, tuple(_skeleton_key(v) for v in tree[1]))


def _rebuild(tree, values):
    if isinstance(tree, _Slot):
        return values[tree.index]
    kind = tree[0]
    if kind == "call":
        _, constructor, args, kwargs = tree
        return constructor(*(_rebuild(a, values) for a in args),
                           **{name: _rebuild(v, values) for name, v in kwargs})
    if kind == "leaf":
        return tree[1]
    if kind is dict:
        return {key: _rebuild(v, values) for key, v in tree[1]}
    return kind(_rebuild(v, values) for v in tree[1])


def split_numbers(obj):
    """`(Skeleton, numbers)` of an object built by a recorded constructor: its non-zero float
    arguments (recursively, through the records of its arguments) as a tuple of floats, in a
    fixed order, and the rest as a hashable `Skeleton`; None for an object without a record.

    >>> from funcdl import optim
    >>> skeleton, numbers = split_numbers(optim.adam(1e-3, weight_decay=0.0))
    >>> numbers
    (0.001, 0.9, 0.999, 1e-08)
    >>> split_numbers(optim.adam(3e-4))[0] == skeleton, split_numbers(optim.adam(3e-4, weight_decay=0.1))[0] == skeleton
    (True, False)
    >>> skeleton.rebuild((3e-4, 0.9, 0.999, 1e-08)) == optim.adam(3e-4)
    True
    """
    if _holder_of(obj) is None:
        return None
    numbers = []
    tree = _split(obj, numbers)
    return Skeleton(tree, len(numbers)), tuple(numbers)
