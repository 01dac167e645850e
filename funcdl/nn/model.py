"""`Model`, the pair of pure functions every layer is, and `Sequential`, which chains them.

A model is two functions whose hyperparameters live in a closure (as `jax.example_libraries.
stax`):

- ``params = model.init(key, x)``: ``x`` is a sample input, an array or a
  ``jax.ShapeDtypeStruct``; only its shape and dtype are read (``Sequential`` propagates shapes
  with ``jax.eval_shape``), so initialising for a large batch costs nothing.
- ``y = model.apply(params, x, *, key=None, train=False)``: written with ``fdl.ops`` and Python
  operators only, so ``jax.grad`` and ``fdl.autodiff.grad`` both differentiate it (under the
  latter the params, and maybe ``x``, are ``fdl.autodiff.Tensor``s).

Errors name the layer. Each layer constructor names its two functions (``Linear(4).apply``);
a layer's own messages start with that name (``"Linear(4): ..."``), and ``Sequential`` replaces
the prefix with the layer's position: ``"Sequential layer 2 (Linear(4)): ..."``.
"""
import contextlib
import functools
import inspect
import weakref
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from funcdl import construction
from funcdl.nn.state import Variables, check_variables, is_stateful, mark_stateful


class Model(NamedTuple):
    """A layer or a network: two pure functions over a params pytree.

    ``params = model.init(key, x)``
        key: a PRNG key (``jax.random.key(0)``); x: a sample input, an array or a
        ``jax.ShapeDtypeStruct`` (only its shape and dtype are read). Returns the params, a plain
        pytree of arrays (dicts, lists, tuples): ``{}`` for a layer without parameters.
    ``y = model.apply(params, x, *, key=None, train=False)``
        params: what ``init`` returned (or trained values of the same structure); x: the input;
        key: a PRNG key for random layers (``Dropout``), required when they are trained;
        train: ``True`` while training. Layers that need neither accept and ignore them; a
        Model built by hand may leave them out, ``apply(params, x)``: ``fit`` and
        ``Sequential`` pass only the keywords its ``apply`` accepts (see ``call_apply``).

    ``Model`` is exactly the 2-field ``NamedTuple(init, apply)``: ``init, apply = model`` works.
    Its ``repr`` reads like the construction, ``Sequential(Linear(16), Tanh(), Linear(1))``.

    Equality: a Model built by funcdl's layer constructors or ``Sequential`` equals (and hashes
    as) any Model built by the same call again, ``Linear(4) == Linear(4)``, so ``jax.jit``
    caches (``fit``'s compiled programs) reuse what they compiled for an equal model; the
    arguments are compared by value (numbers, strings, tuples, layers, initializers) or by
    identity (arrays, functions): see ``funcdl.construction``. A Model built by hand,
    ``Model(init, apply)``, compares as the tuple of its two functions (by identity); a layer
    constructor of your own gets value equality with ``@funcdl.construction.recorded``.

    Writing a layer: a function that returns ``named_model(name, init, apply)``, where ``name``
    is how the layer reads (its ``repr`` and the prefix of its error messages), ``init(key, x)``
    returns the params and ``apply(params, x, *, key=None, train=False)`` computes y with
    ``fdl.ops`` and Python operators only (so that ``jax.grad`` and ``fdl.autodiff.grad`` both
    differentiate it). ``named_model`` also checks the call: ``apply(x)`` (params forgotten)
    and ``apply(x, params)`` (swapped) raise a ``TypeError`` that says so.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from funcdl import nn, ops
      >>> def Scale(factor):
      ...     def init(key, x):
      ...         return {"s": jnp.full((x.shape[-1],), factor, x.dtype)}
      ...     def apply(params, x, *, key=None, train=False):
      ...         return x * ops.reshape(params["s"], (1,) * (len(x.shape) - 1) + (-1,))
      ...     return nn.named_model(f"Scale({factor})", init, apply)
      >>> model = nn.Sequential(nn.Linear(16), nn.Tanh(), Scale(2.0), nn.Linear(1))
      >>> model
      Sequential(Linear(16), Tanh(), Scale(2.0), Linear(1))
      >>> params = model.init(jax.random.key(0), jnp.zeros((8, 4)))
      >>> model.apply(params, jnp.ones((8, 4))).shape
      (8, 1)
    """
    init: Callable[..., Any]  # (key, x) -> params
    apply: Callable[..., Any]  # (params, x, *, key=None, train=False) -> y

    # By the call that built the layer (funcdl.construction); by the functions otherwise.
    __eq__ = construction.recorded_eq
    __ne__ = construction.recorded_ne
    __hash__ = construction.recorded_hash

    def __repr__(self):
        name = getattr(self.apply, "__funcdl_name__", None)
        if name is None:  # a Model built by hand from plain functions
            return f"Model(init={self.init!r}, apply={self.apply!r})"
        return name


def _describe(value) -> str:
    """A call argument in plain words: "an array of shape (8, 4) and dtype float32", "a dict"."""
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"an array of shape {tuple(shape)} and dtype {dtype}"
    article = "an" if type(value).__name__[0].lower() in "aeiou" else "a"
    return f"{article} {type(value).__name__}"


def _is_array(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, (Mapping, list, tuple))


# The types of the arguments that every layer's init and apply share ("return": the result's),
# written into the signatures `help(Linear(4).apply)` shows where a layer's functions leave them
# out. params (or a stateful layer's variables) and the result are pytrees.
_INIT_TYPES = {"key": jax.Array, "x": jax.Array | jax.ShapeDtypeStruct, "return": Any}
_APPLY_TYPES = {"params": Any, "variables": Any, "x": jax.Array, "key": jax.Array | None,
                "train": bool, "return": Any}


def _typed_signature(function: Callable, types: dict) -> inspect.Signature | None:
    """`function`'s signature with `types` filled in where it has no annotation (None when the
    signature cannot be read)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    parameters = [parameter.replace(annotation=types[parameter.name])
                  if parameter.annotation is parameter.empty and parameter.name in types
                  else parameter for parameter in signature.parameters.values()]
    returns = signature.return_annotation
    return signature.replace(parameters=parameters,
                             return_annotation=types["return"] if returns is signature.empty
                             else returns)


def named_model(name: str, init: Callable, apply: Callable, *, stateful: bool = False) -> Model:
    """`Model(init, apply)` that reads as `name` (its `repr`, `"Linear(4)"`) and checks its calls.

    Every layer constructor returns through this helper (see ``help(Model)``, "Writing a
    layer"). ``init`` and ``apply`` are wrapped (``functools.wraps``; qualified names
    ``name.init`` and ``name.apply``) so that a wrong call says what was expected and what was
    received: ``apply(x)`` (the params forgotten), ``apply(x, params)`` (swapped; under
    ``jax.jit`` too, where x is a tracer), ``init(x)`` (the key forgotten).

    stateful: the layer keeps state beside its params (running statistics, as BatchNorm):
    ``init(key, x)`` returns ``fdl.nn.Variables(params, state)`` and ``apply(variables, x, *,
    key=None, train=False)`` returns ``(y, new_state)``, computing the new state from the old
    (by convention it moves only with ``train=True``). ``fdl.nn.is_stateful`` then says True,
    and ``Sequential``, ``fit``, ``evaluate``, ``predict``, ``make_train_step`` and
    ``fdl.checkpoint`` carry the state as they do BatchNorm's: the optimizer and both
    autodiffs see ``variables.params`` only. The wrappers check the contract: ``apply`` given
    anything but a ``Variables`` (e.g. ``variables.params``), an ``init`` that returns
    something else, or an ``apply`` that returns something other than a pair, is a
    ``TypeError`` naming the layer.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from funcdl import nn
      >>> def Count():  # counts the training batches it has seen
      ...     def init(key, x):
      ...         return nn.Variables({}, {"batches": jnp.zeros((), jnp.int32)})
      ...     def apply(variables, x, *, key=None, train=False):
      ...         return x, {"batches": variables.state["batches"] + int(train)}
      ...     return nn.named_model("Count()", init, apply, stateful=True)
      >>> layer = Count()
      >>> variables = layer.init(jax.random.key(0), jnp.zeros((2, 3)))
      >>> nn.is_stateful(layer), int(layer.apply(variables, jnp.ones((2, 3)), train=True)[1]["batches"])
      (True, 1)
    """
    def positional(args, kwargs, names):
        """The call's `names` arguments as a tuple, whether passed by position or by keyword."""
        args = list(args)
        for argument in names[len(args):]:
            if argument in kwargs:
                args.append(kwargs.pop(argument))
        return tuple(args), kwargs

    @functools.wraps(init)
    def checked_init(*args, **kwargs):
        args, kwargs = positional(args, kwargs, ("key", "x"))
        if len(args) != 2:
            received = ", ".join(_describe(a) for a in args) or "nothing"
            raise TypeError(f"{name}.init: expected init(key, x), a PRNG key and a sample input, "
                            f"got {len(args)} positional argument(s): {received}; call "
                            f"`params = model.init(jax.random.key(0), x)`")
        return init(*args, **kwargs)

    @functools.wraps(apply)
    def checked_apply(*args, **kwargs):
        args, kwargs = positional(args, kwargs, ("params", "x"))
        if len(args) != 2:
            received = ", ".join(_describe(a) for a in args) or "nothing"
            hint = (" (the params are missing: pass them first, `model.apply(params, x)`, "
                    "with `params = model.init(key, x)`)" if len(args) == 1 else "")
            raise TypeError(f"{name}.apply: expected apply(params, x, *, key=None, train=False), "
                            f"got {len(args)} positional argument(s): {received}{hint}")
        params, x = args
        if _is_array(params) and isinstance(x, (Mapping, list, tuple)):
            raise TypeError(f"{name}.apply: expected apply(params, x), the params pytree first, "
                            f"got `params` {_describe(params)} and `x` {_describe(x)}: the "
                            f"arguments look swapped, call `model.apply(params, x)`")
        if not stateful:
            return apply(*args, **kwargs)
        check_variables(params, name)
        out = apply(*args, **kwargs)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"{name}.apply: a stateful model's apply must return the pair (y, "
                            f"new_state), got {_describe(out)}")
        return out

    if stateful:
        stateful_init = checked_init

        @functools.wraps(init)
        def checked_init(*args, **kwargs):
            made = stateful_init(*args, **kwargs)
            if not isinstance(made, Variables):
                raise TypeError(f"{name}.init: a stateful model's init must return "
                                f"fdl.nn.Variables(params, state), got {_describe(made)}")
            return made

    checked_init.__qualname__, checked_apply.__qualname__ = f"{name}.init", f"{name}.apply"
    for checked, function, types in ((checked_init, init, _INIT_TYPES),
                                     (checked_apply, apply, _APPLY_TYPES)):
        signature = _typed_signature(function, types)
        if signature is not None:
            checked.__signature__ = signature
    checked_apply.__funcdl_name__ = name
    model = Model(checked_init, checked_apply)
    return mark_stateful(model) if stateful else model


# apply function -> the keywords of ("key", "train") it accepts; weak, so that it never keeps a
# model alive, and read once per function because `fit` and `Sequential` call it at every trace.
_ACCEPTED_KEYWORDS = weakref.WeakKeyDictionary()


def _accepted_keywords(apply) -> tuple:
    """Which of ``key`` and ``train`` ``apply`` takes by keyword: both with ``**kwargs`` or when
    its signature cannot be read (C functions, some callables), else those it names."""
    try:
        return _ACCEPTED_KEYWORDS[apply]
    except (KeyError, TypeError):  # TypeError: not weakly referable (or unhashable)
        pass
    try:
        parameters = inspect.signature(apply).parameters.values()  # follows functools.wraps
    except (TypeError, ValueError):
        accepted = ("key", "train")
    else:
        by_keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        names = {p.name for p in parameters if p.kind in by_keyword}
        any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
        accepted = tuple(k for k in ("key", "train") if any_keyword or k in names)
    with contextlib.suppress(TypeError):
        _ACCEPTED_KEYWORDS[apply] = accepted
    return accepted


def call_apply(model, params, x, *, key=None, train=False):
    """``model.apply(params, x, key=key, train=train)``, passing only the keywords it accepts.

    A ``Model(init, apply)`` built by hand may have ``apply(params, x)`` without ``key`` or
    ``train``; ``fit``, ``evaluate``, ``predict`` and ``Sequential`` call every model through
    this helper so that such a model works (it just receives neither). funcdl's layers take
    both. An ``apply`` with ``**kwargs``, or whose signature cannot be inspected, gets both.

    >>> import jax.numpy as jnp
    >>> double = Model(lambda key, x: {}, lambda params, x: 2 * x)
    >>> call_apply(double, {}, jnp.ones(2), train=True)
    Array([2., 2.], dtype=float32)
    """
    keywords = {"key": key, "train": train}
    return model.apply(params, x, **{k: keywords[k] for k in _accepted_keywords(model.apply)})


def layer_name(layer) -> str:
    """A short readable name: ``Linear(4)`` for funcdl's layers, the function's name otherwise."""
    function = layer.apply if isinstance(layer, Model) else layer
    name = getattr(function, "__qualname__", None) or repr(function)
    return name.removesuffix(".apply").replace(".<locals>", "")


def check_key(key, where: str, name: str = "key"):
    """TypeError unless `key` is a PRNG key (`jax.random.key` or the raw `jax.random.PRNGKey`)."""
    dtype, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape == ():
            return
    elif dtype == np.uint32 and shape in ((2,), (4,)):
        return
    received = (type(key).__name__ if shape is None or dtype is None
                else f"an array of shape {tuple(shape)} and dtype {dtype}")
    raise TypeError(f"{where}: `{name}` must be a PRNG key (jax.random.key(seed) or "
                    f"jax.random.PRNGKey(seed)), got {received}")


def sample_struct(x, where: str) -> jax.ShapeDtypeStruct:
    """The shape and dtype of a sample input (array, NumPy array or `jax.ShapeDtypeStruct`)."""
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise TypeError(f"{where}: sample input `x` must be an array or jax.ShapeDtypeStruct, "
                        f"got {type(x).__name__}")
    # canonicalize: a NumPy float64 sample is float32 to jax unless x64 is enabled.
    return jax.ShapeDtypeStruct(tuple(x.shape), jax.dtypes.canonicalize_dtype(x.dtype))


def check_params(params, keys, where: str):
    """TypeError unless `params` is a mapping; ValueError unless its keys are exactly `keys`
    (a sorted list)."""
    if not isinstance(params, Mapping):
        raise TypeError(f"{where}: `params` must be a dict with keys {keys}, "
                        f"got {type(params).__name__}")
    if sorted(params) != keys:
        raise ValueError(f"{where}: `params` must have keys {keys}, got {sorted(params)}")


def check_input(x, where: str):
    """TypeError unless `x` is array-like with a shape (an array or an `fdl.autodiff.Tensor`)."""
    if not hasattr(x, "shape"):
        raise TypeError(f"{where}: `x` must be an array or Tensor, got {type(x).__name__}")


@contextlib.contextmanager
def located(position: str, name: str):
    """Re-raise a layer's TypeError/ValueError with its position: "Sequential layer 2 (Linear(4)):
    ..." (the layer's own "Linear(4): " prefix is dropped, not repeated)."""
    try:
        yield
    except (TypeError, ValueError) as error:
        if type(error) not in (TypeError, ValueError):  # subclasses may need other arguments
            raise
        message = str(error).removeprefix(f"{name}: ")
        raise type(error)(f"{position} ({name}): {message}") from error


def check_no_params(params, where: str):
    """A parameter-free layer's params must be `{}` (catches params of another architecture)."""
    if not isinstance(params, Mapping):
        raise TypeError(f"{where}: `params` must be {{}} (the layer has no parameters), "
                        f"got {type(params).__name__}")
    if params:
        raise ValueError(f"{where}: `params` must be {{}} (the layer has no parameters), "
                         f"got keys {sorted(params)}")


def parameter_free(name: str, function: Callable) -> Model:
    """A layer without parameters computing ``function(x)``; ``key`` and ``train`` are ignored.

    init returns ``{}`` after checking, by shape propagation only, that ``function`` accepts
    the sample input.
    """
    def init(key, x):
        check_key(key, name)
        jax.eval_shape(function, sample_struct(x, name))
        return {}

    def apply(params, x, *, key=None, train=False):
        check_no_params(params, name)
        return function(x)

    return named_model(name, init, apply)


def _as_model(layer, index: int) -> Model:
    if isinstance(layer, Model):
        return layer
    if callable(layer):
        return parameter_free(layer_name(layer), layer)
    raise TypeError(f"Sequential: `layers[{index}]` must be a Model or a function x -> y, "
                    f"got {type(layer).__name__}")


@construction.recorded
def Sequential(*layers: Model | Callable) -> Model:
    """Layers applied one after another; the output of each is the input of the next.

    layers: `Model`s, or plain functions ``x -> y`` (parameter-free layers, e.g. ``fdl.ops.relu``).
    params: a list with one entry per layer (``{}`` for parameter-free layers). With a stateful
    layer (``BatchNorm2d``), the Sequential is stateful: ``init`` returns
    ``Variables(params_list, state_list)`` (``{}`` for the layers without state) and ``apply``
    returns ``(y, state_list)``.
    apply splits ``key`` once per layer, ``jax.random.split(key, len(layers))``, and passes
    each layer its key (``None`` stays ``None``) and ``train``, those of the two that the
    layer's apply accepts (``call_apply``). No layers: the identity.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from funcdl import nn, ops
      >>> model = nn.Sequential(nn.Linear(8), ops.relu, nn.Linear(2))
      >>> params = model.init(jax.random.key(0), jax.ShapeDtypeStruct((32, 4), jnp.float32))
      >>> [jax.tree_util.tree_map(jnp.shape, p) for p in params]
      [{'b': (8,), 'w': (4, 8)}, {}, {'b': (2,), 'w': (8, 2)}]
      >>> model.apply(params, jnp.ones((32, 4))).shape
      (32, 2)
    """
    models = [_as_model(layer, i) for i, layer in enumerate(layers)]
    names = [layer_name(m) for m in models]
    name = f"Sequential({', '.join(names)})"
    stateful = [is_stateful(m) for m in models]

    def init(key, x):
        check_key(key, name)
        x = sample_struct(x, name)
        keys = jax.random.split(key, len(models))
        params, states = [], []
        for i, (model, layer) in enumerate(zip(models, names)):
            with located(f"Sequential layer {i}", layer):
                made = model.init(keys[i], x)
                layer_params, layer_state = made if stateful[i] else (made, {})
                params.append(layer_params)
                states.append(layer_state)
                # Shapes only: the layer is traced, never run on data.
                out = jax.eval_shape(model.apply, made, x)
                x = out[0] if stateful[i] else out
        return Variables(params, states) if any(stateful) else params

    def check_entries(value, what):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{name}: `{what}` must be a list with one entry per layer "
                            f"({len(models)}), got {type(value).__name__}")
        if len(value) != len(models):
            raise ValueError(f"{name}: `{what}` must have one entry per layer: expected "
                             f"{len(models)} entries, got {len(value)}")

    def apply(params, x, *, key=None, train=False):
        if any(stateful):
            params, states = params  # a Variables: checked by named_model
            check_entries(states, "variables.state")
        check_entries(params, "params")
        if key is not None:
            check_key(key, name)
            keys = jax.random.split(key, len(models))
        new_states = []
        for i, (model, layer) in enumerate(zip(models, names)):
            with located(f"Sequential layer {i}", layer):
                layer_key = None if key is None else keys[i]
                if stateful[i]:
                    x, layer_state = call_apply(model, Variables(params[i], states[i]), x,
                                                key=layer_key, train=train)
                    new_states.append(layer_state)
                else:
                    x = call_apply(model, params[i], x, key=layer_key, train=train)
                    new_states.append({})
        return (x, new_states) if any(stateful) else x

    return named_model(name, init, apply, stateful=any(stateful))
