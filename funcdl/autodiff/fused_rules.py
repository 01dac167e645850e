"""The eager backward pass's rule calls: a rule that repeats on the same shapes runs compiled.

A rule of k jax.numpy ops costs k eager dispatches; `jax.jit` of it costs about one. Compiling
takes milliseconds, so a rule is compiled only at its JIT_AFTER-th call with the same shapes,
dtypes, static arguments and params (a long eager loop), never for one-off shapes. Arrays and
Python floats are the compiled function's arguments; None, ints, bools and `Shape`s are baked
in. Under a jax transform (tracers) and with unhashable params (an index holding slices or
arrays) rules run as they are: the jitted path is unchanged.
"""
import jax
import numpy as np

from funcdl.autodiff.vjps import Shape, same_cotangent

JIT_AFTER = 3
MAX_COMPILED_RULES = 2048
_DYNAMIC, _EAGER = object(), object()
_seen_rules = {}
_compiled_rules = {}

# How each argument type enters a rule's signature, decided once per type (`call_rule` runs
# once per edge of the backward pass, so it avoids per-argument isinstance checks on ABCs).
_ARRAY, _FLOAT, _STATIC, _UNCOMPILABLE = "array", "float", "static", "uncompilable"
_kinds = {}


def _kind_of(cls):
    if issubclass(cls, jax.core.Tracer):
        kind = _UNCOMPILABLE  # under a jax transform: the rule runs as it is
    elif issubclass(cls, (jax.Array, np.ndarray)):
        kind = _ARRAY
    elif issubclass(cls, float):
        kind = _FLOAT
    elif cls is type(None) or issubclass(cls, (int, Shape)):  # Shape((), f32) == ((), f32) and
        kind = _STATIC  # True == 1: the signature holds the type beside the value
    else:
        kind = _UNCOMPILABLE
    _kinds[cls] = kind
    return kind


def call_rule(rule, args, params):
    """`rule(*args, **params)`, compiled once it has run JIT_AFTER times on the same signature."""
    if rule is same_cotangent:  # nothing to compute: a compiled identity would still dispatch
        return args[0]
    signature, dynamic = [], []
    for a in args:
        cls = type(a)
        kind = _kinds.get(cls) or _kind_of(cls)
        if kind is _ARRAY:
            signature.append((a.shape, a.dtype))
            dynamic.append(a)
        elif kind is _FLOAT:
            signature.append(float)
            dynamic.append(a)
        elif kind is _STATIC:
            signature.append((cls, a))
        else:
            return rule(*args, **params)
    try:
        key = (rule, tuple(signature), tuple(params.items()) if params else ())
        compiled = _compiled_rules.get(key)
    except TypeError:  # an unhashable param
        return rule(*args, **params)
    if compiled is None:
        count = _seen_rules.get(key, 0) + 1
        if count < JIT_AFTER or len(_compiled_rules) >= MAX_COMPILED_RULES:
            _seen_rules[key] = count
            return rule(*args, **params)
        _seen_rules.pop(key, None)
        template = tuple(_DYNAMIC if _kinds[type(a)] in (_ARRAY, _FLOAT) else a for a in args)
        compiled = _compiled_rules[key] = _jit_rule(rule, template, params)
    if compiled is _EAGER:
        return rule(*args, **params)
    try:
        return compiled(*dynamic)
    except jax.errors.JAXTypeError:  # a rule that reads concrete values (it cannot run under
        _compiled_rules[key] = _EAGER  # jax.jit either): keep running it eagerly
        return rule(*args, **params)


def _jit_rule(rule, template, params):
    """`rule` compiled as a function of the slots of `template` marked `_DYNAMIC`."""
    def fused_rule(*dynamic):
        values = iter(dynamic)
        return rule(*[next(values) if t is _DYNAMIC else t for t in template], **params)
    return jax.jit(fused_rule)
