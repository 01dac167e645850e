"""The eager backward pass's rule calls: a rule that repeats on the same shapes runs compiled.

A rule of k jax.numpy ops costs k eager dispatches; `jax.jit` of it costs about one. Compiling
takes milliseconds, so a rule is compiled only at its JIT_AFTER-th call with the same shapes,
dtypes, static arguments and params (a long eager loop), never for one-off shapes. Arrays and
Python floats are the compiled function's arguments; None, ints, bools and `Shape`s are baked
in. Under a jax transform (tracers) and with unhashable params (an index holding slices or
arrays) rules run as they are: the jitted path is unchanged. `call_chain` does the same for a
chain of rules (`backward.py`): one compiled call for the whole chain once it repeats.
"""
import jax
import numpy as np

from funcdl.autodiff.eager_dispatch import device_constant
from funcdl.autodiff.vjps import Shape, same_cotangent, unbroadcast

JIT_AFTER = 3
MAX_COMPILED_RULES = 2048
_DYNAMIC, _EAGER = object(), object()
_seen_rules = {}
_compiled_rules = {}

# How each argument type enters a rule's signature, decided once per type (`call_rule` runs
# once per edge of the backward pass, so it avoids per-argument isinstance checks on ABCs).
# A jax array enters as its aval (jax interns them: hashed by identity), a NumPy array as a
# tagged triple (kind, shape, dtype); None and a `Shape` as themselves, an int or a bool with
# its type beside it (True == 1). A `Shape` is a NamedTuple, equal to the plain pair (shape,
# dtype): no pair but the (type, int) of an int reaches a signature, whose first item is
# never a tuple, so a baked-in Shape never meets a dynamic argument's entry.
_ARRAY, _NUMPY, _FLOAT, _ITSELF, _STATIC, _UNCOMPILABLE = (
    "array", "numpy", "float", "itself", "static", "uncompilable")
_DYNAMIC_KINDS = (_ARRAY, _NUMPY, _FLOAT)
_kinds = {}


def _kind_of(cls):
    if issubclass(cls, jax.core.Tracer):
        kind = _UNCOMPILABLE  # under a jax transform: the rule runs as it is
    elif issubclass(cls, jax.Array):
        kind = _ARRAY
    elif issubclass(cls, np.ndarray):
        kind = _NUMPY
    elif issubclass(cls, float):
        kind = _FLOAT
    elif cls is type(None) or issubclass(cls, Shape):
        kind = _ITSELF
    elif issubclass(cls, int):
        kind = _STATIC
    else:
        kind = _UNCOMPILABLE
    _kinds[cls] = kind
    return kind


def _describe(args, signature, dynamic):
    """Append to `signature` the hashable description of what in `args` is baked in, and to
    `dynamic` the arrays and floats passed at each call (floats as cached device constants).
    False when they cannot be compiled (a tracer, or an argument of another kind)."""
    for a in args:
        cls = type(a)
        kind = _kinds.get(cls) or _kind_of(cls)
        if kind is _ARRAY:
            signature.append(a.aval)
            dynamic.append(a)
        elif kind is _ITSELF:
            signature.append(a)
        elif kind is _FLOAT:
            signature.append(float)
            dynamic.append(device_constant(a))
        elif kind is _NUMPY:
            signature.append((_NUMPY, a.shape, a.dtype))
            dynamic.append(a)
        elif kind is _STATIC:
            signature.append((cls, a))
        else:
            return False
    return True


def _template(args):
    return tuple(_DYNAMIC if _kinds[type(a)] in _DYNAMIC_KINDS else a for a in args)


def _compiled(key, make):
    """The compiled function for `key` from its JIT_AFTER-th request on (`make()` builds it),
    else None (run it eagerly). Raises TypeError for an unhashable key."""
    compiled = _compiled_rules.get(key)
    if compiled is None:
        count = _seen_rules.get(key, 0) + 1
        if count < JIT_AFTER or len(_compiled_rules) >= MAX_COMPILED_RULES:
            _seen_rules[key] = count
            return None
        _seen_rules.pop(key, None)
        compiled = _compiled_rules[key] = make()
    return None if compiled is _EAGER else compiled


def _run(key, compiled, dynamic, eager):
    try:
        return compiled(*dynamic)
    except jax.errors.JAXTypeError:  # a rule that reads concrete values (it cannot run under
        _compiled_rules[key] = _EAGER  # jax.jit either): keep running it eagerly
        return eager()


def call_rule(rule, args, params):
    """`rule(*args, **params)`, compiled once it has run JIT_AFTER times on the same signature."""
    if rule is same_cotangent:  # nothing to compute: a compiled identity would still dispatch
        return args[0]
    signature, dynamic = [rule], []
    if not _describe(args, signature, dynamic):
        return rule(*args, **params)
    eager = lambda: rule(*args, **params)  # noqa: E731
    try:
        key = (tuple(signature), tuple(params.items()) if params else ())
        compiled = _compiled(key, lambda: _jit_rule(rule, _template(args), params))
    except TypeError:  # an unhashable param
        return eager()
    return eager() if compiled is None else _run(key, compiled, dynamic, eager)


def _jit_rule(rule, template, params):
    """`rule` compiled as a function of the slots of `template` marked `_DYNAMIC`."""
    def fused_rule(*dynamic):
        values = iter(dynamic)
        return rule(*[next(values) if t is _DYNAMIC else t for t in template], **params)
    return jax.jit(fused_rule)


def call_chain(g, steps):
    """The cotangent at the end of a chain of rules: for each step `(rule, args, params,
    shape)` in turn, `g = unbroadcast(rule(g, *args, **params), shape)`. Compiled as ONE call
    once the same chain (rules, signatures, params, shapes) has run JIT_AFTER times."""
    def eager():
        out = g
        for rule, args, params, shape in steps:
            out = unbroadcast(call_rule(rule, (out,) + args, params), shape)
        return out

    signature, dynamic = ["chain"], []
    if not _describe((g,), signature, dynamic):
        return eager()
    for rule, args, params, shape in steps:
        if not _describe(args, signature, dynamic):
            return eager()
        signature.append((rule, len(args), tuple(params.items()) if params else (), shape))
    key = tuple(signature)
    try:
        compiled = _compiled(key, lambda: _jit_chain(
            [(rule, _template(args), params, shape) for rule, args, params, shape in steps]))
    except TypeError:  # an unhashable param
        return eager()
    return eager() if compiled is None else _run(key, compiled, dynamic, eager)


def _jit_chain(steps):
    """The chain compiled as a function of `g` and the dynamic arguments of every step, in
    order (`steps`: `(rule, template, params, shape)`, templates holding no arrays)."""
    def fused_chain(g, *dynamic):
        values = iter(dynamic)
        for rule, template, params, shape in steps:
            args = [next(values) if t is _DYNAMIC else t for t in template]
            g = unbroadcast(rule(g, *args, **params), shape)
        return g
    return jax.jit(fused_chain)
