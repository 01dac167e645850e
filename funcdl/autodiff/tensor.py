"""`Tensor`: a value on the tape, and the backward pass over the graph of `_Node`s it roots.

A `Tensor` holds its value (a jax array, or a tracer under `jax.jit`) and its `_Node`: what the
backward pass needs of the op that made it: the primitive, its params, the nodes of its Tensor
inputs and only the values that the primitive's rules read (`Primitive.reads`). The graph is
made of nodes, not of Tensors, so an intermediate value that no rule reads is freed as soon as
its Tensor is, as in PyTorch. The graph lives as long as the output Tensor does (for
`fdl.autodiff.grad`, one call); no global state records it. The graph holds no cycles, and the
backward pass runs with the cyclic garbage collector paused.

Levels (nesting): every `fdl.autodiff.grad` call (and `vjp`, `hessian`, ...) records on a tape
of its own, numbered by `new_level()` in the order the calls start (user-made `Tensor(value)`s
are level 0). A Tensor of level L may hold a Tensor of a lower level as its value: the outer
tape's. An op whose Tensor inputs are of several levels, or hold Tensors, records a node at the
highest level only and computes its value by applying the op again to the unwrapped inputs,
so that the lower levels record it too; a Tensor of a lower level is a constant to the higher
tape (this is what keeps d/dx [x · d/dy (x + y)] = 1: the inner tape never sees x as its own).
The VJP rules compute with `apply` too, so the backward pass of a level records on the levels
below it: that is second order.

A Tensor is not something jax can trace: `jax.numpy` functions, `lax` control flow, `vmap`,
`jit` and `jax.checkpoint` called on one raise a `TypeError` that says so (Tensor is registered
as a pytree node whose flattening refuses).
"""
import itertools
import weakref
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcdl.autodiff import rule_ops
from funcdl.autodiff.backward import backward_pass
from funcdl.autodiff.eager_dispatch import JITTED_FORWARD_OPS, call_jitted
from funcdl.autodiff.operand_errors import operand_error
from funcdl.autodiff.vjps import ANS, PRIMITIVES, Shape

ESCAPED = ("a fdl.autodiff.Tensor reached a jax function (a jax.numpy function, lax.scan, "
           "fori_loop, while_loop or cond, vmap, jit or jax.checkpoint) inside the function that "
           "fdl.autodiff differentiates; its tape records only fdl.ops functions and Python "
           "operators. Write that part with fdl.ops, or differentiate the function with jax.grad.")


def _value(x):
    return x._value if isinstance(x, Tensor) else x


def check_float_array(value, name):
    """`value` as a floating-point jax array; TypeError naming `name` otherwise."""
    if isinstance(value, Tensor):
        raise TypeError(f"`{name}` must be an array, got a Tensor (differentiate a function of "
                        "it with fdl.autodiff.grad, which nests, instead)")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.ndarray, np.generic, jnp.ndarray)):
        raise TypeError(f"`{name}` must be a floating-point array, got {type(value).__name__}")
    if isinstance(value, int):
        raise TypeError(f"`{name}` must be a floating-point array, got the Python int {value!r} "
                        "(write it as a float)")
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(f"`{name}` must have a floating-point dtype, got {value.dtype}")
    return value


def _forward(name, primitive, values, params, traced):
    """Run the forward; if jax rejects the operands, raise the clear error when there is one."""
    try:
        if not traced and not params and name in JITTED_FORWARD_OPS:
            return call_jitted(name, primitive.forward, values)
        return primitive.forward(*values, **params)
    except Exception as jax_error:
        error = operand_error(name, values, params)
        if error is None:
            raise
        raise error from jax_error


# ---- the graph -----------------------------------------------------------------------------------
class _Node:
    """One recorded op: primitive name, params, parent nodes (None for constants), the inputs
    (values the rules read, `Shape`s for the others, constants as given), `ans` when a rule
    reads it, and the output's shape and `spec` (its `Shape`, shared between the nodes of one
    shape and dtype: the input of a later node that no rule reads is kept as it). A leaf has
    `primitive` None and a weak reference to its Tensor in `leaf`. `seq` counts nodes in the
    order they are made: a node's parents exist before it, so a larger `seq` never feeds a
    smaller one."""
    __slots__ = ("primitive", "params", "parents", "inputs", "ans", "shape", "spec", "leaf",
                 "seq")


_next_seq = itertools.count().__next__
_new_node = _Node


def _leaf_node(tensor):
    node = _Node()
    node.seq = _next_seq()
    node.primitive, node.params, node.parents, node.inputs, node.ans = None, None, (), (), None
    node.spec = _spec_of(tensor._value)
    node.shape, node.leaf = node.spec.shape, weakref.ref(tensor)
    return node


MAX_SPECS = 4096
_SPECS = {}  # aval (jax interns them: one object per shape, dtype, ...) -> Shape


def _spec_of(value):
    """The `Shape` of `value`: one shared object per aval of a jax array or tracer."""
    try:
        aval = value.aval
    except AttributeError:  # a Tensor of a lower level, a NumPy array, a Python number
        try:
            return Shape(value.shape, value.dtype)
        except AttributeError:
            return Shape(jnp.shape(value), jnp.result_type(value))
    spec = _SPECS.get(aval)
    if spec is None:
        spec = Shape(aval.shape, aval.dtype)
        if len(_SPECS) < MAX_SPECS:
            _SPECS[aval] = spec
    return spec


_PLANS = {}  # (name, bit mask of the Tensor inputs) -> _Plan


class _Plan(NamedTuple):
    """What a node of primitive `name` keeps when the inputs in `mask` are Tensors."""
    primitive: object  # the table's entry this was made for (it may be replaced)
    keep: tuple  # per input: True to keep its value (a constant, or read by a rule), else Shape
    dropped: tuple  # the positions whose keep is False
    keep_ans: bool


def _plan(name, primitive, mask: int, n_inputs: int) -> _Plan:
    needed = None  # None: every value (a primitive without `reads`)
    if primitive.reads is not None:
        needed = set()
        for i in range(n_inputs):
            if mask >> i & 1:
                needed.update(primitive.reads[0] if primitive.variadic else primitive.reads[i])
    keep = tuple(not mask >> i & 1 or needed is None or i in needed for i in range(n_inputs))
    dropped = tuple(i for i, k in enumerate(keep) if not k)
    plan = _PLANS[name, mask] = _Plan(primitive, keep, dropped, needed is None or ANS in needed)
    return plan


_next_level = itertools.count(1).__next__


def new_level():
    """A level for a new tape (one `grad` call), above every level made before it."""
    return _next_level()


_TRACER_OR_TENSOR = (jax.core.Tracer,)  # completed below, once Tensor exists

# While `fdl.ops.scan` traces its step function, the innermost entry re-binds the Tensors the
# step closes over to the step's own leaves (`autodiff/scan_rule.py`); empty otherwise.
REBINDINGS = []


def apply(name: str, *args: Any, **params: Any) -> Any:
    """Run primitive `name` on the operands `args` (arrays or Tensors) with its keyword
    `params` (an axis, a shape, ...): on the tape if any input is a Tensor, else straight
    through jax. Returns the primitive's output, a Tensor when an input is one.

    This is the one seam between `fdl.ops` and the tape. (Written for speed: it runs once per
    eager op; Tensors of several levels take `_apply_nested`.)
    """
    if REBINDINGS:
        args = REBINDINGS[-1](args)
    primitive = PRIMITIVES[name]
    values, parents, mask, bit, traced, level = [], [], 0, 1, False, None
    for a in args:
        if isinstance(a, Tensor):
            if a._level != level:
                if level is not None:
                    return _apply_nested(name, args, params)
                level = a._level
            parents.append(a._node)
            a = a._value
            mask |= bit
        else:
            parents.append(None)
        traced = traced or isinstance(a, _TRACER_OR_TENSOR)
        values.append(a)
        bit <<= 1
    if traced and _holds_tensor(values):
        return _apply_nested(name, args, params)
    ans = _forward(name, primitive, values, params, traced)
    if not mask:
        return ans
    return _record(name, primitive, values, params, parents, mask, ans, level)


def _holds_tensor(values):
    for v in values:
        if isinstance(v, Tensor):
            return True
    return False


def _apply_nested(name, args, params):
    """`apply` with Tensors of several levels among `args`, or Tensors holding Tensors: record
    at the highest level; the value is the op applied to the unwrapped inputs (recorded by the
    levels below)."""
    primitive = PRIMITIVES[name]
    level = max(a._level for a in args if isinstance(a, Tensor))
    values, parents, mask = [], [], 0
    for i, a in enumerate(args):
        if isinstance(a, Tensor) and a._level == level:
            parents.append(a._node)
            values.append(a._value)
            mask |= 1 << i
        else:
            parents.append(None)
            values.append(a)
    if _holds_tensor(values):
        ans = apply(name, *values, **params)
    else:
        ans = _forward(name, primitive, values, params, True)
    return _record(name, primitive, values, params, parents, mask, ans, level)


def _record(name, primitive, values, params, parents, mask, ans, level):
    """The Tensor of level `level` holding `ans`, whose node records the op: its name, params,
    `parents` (the nodes of the inputs in bit mask `mask`, None elsewhere) and the `values` the
    rules read (an input that no rule reads is kept as its parent's `spec`)."""
    plan = _PLANS.get((name, mask))
    if plan is None or plan.primitive is not primitive:
        plan = _plan(name, primitive, mask, len(values))
    try:
        spec = _SPECS[ans.aval]
    except (AttributeError, KeyError):
        spec = _spec_of(ans)
    for i in plan.dropped:
        values[i] = parents[i].spec
    node = _new_node()
    node.seq = _next_seq()
    node.primitive = name
    node.params = params
    node.parents = tuple(parents)
    node.inputs = tuple(values)
    node.ans = ans if plan.keep_ans else None
    node.shape = spec.shape
    node.spec = spec
    node.leaf = None
    tensor = _new_tensor(Tensor)
    tensor._value = ans
    tensor.grad = None
    tensor._node = node
    tensor._level = level
    return tensor


def leaf(value, level):
    """A leaf Tensor of tape `level` holding `value`: an array, or a Tensor of a lower level
    (the argument of a nested `grad` call)."""
    tensor = Tensor.__new__(Tensor)
    tensor._value, tensor.grad, tensor._level = value, None, level
    tensor._node = _leaf_node(tensor)
    return tensor


def level_of(x):
    """The level of a Tensor, -1 for anything else."""
    return x._level if isinstance(x, Tensor) else -1


def strip(x):
    """The plain array under every level of Tensor `x` (x itself if it is not a Tensor): for
    masks, signs and shares that rules treat as constants (their derivative is 0)."""
    while isinstance(x, Tensor):
        x = x._value
    return x


def _refuse_to_flatten(tensor):
    raise TypeError(ESCAPED)


class Tensor:
    """A value on the tape. Build expressions with Python operators and `fdl.ops`.

    `Tensor(value)` is a leaf: every leaf reached from the output of `.backward()` gets `.grad`
    (accumulated as in PyTorch; set `.grad = None` to clear it).
    `<, <=, >, >=, ==, !=` give plain boolean arrays (masks, no gradient), as on jax arrays;
    Tensors hash by identity. NumPy defers to Tensor (`__array_ufunc__ = None`), so
    `ndarray @ Tensor` and `ndarray * Tensor` stay on the tape. The array methods (`.sum`,
    `.reshape`, `.T`, `**`, ...) are the `fdl.ops` functions, attached to this class by
    `funcdl.tensor_methods` (autodiff sits below ops and does not import it).
    """

    __slots__ = ("_value", "grad", "_node", "_level", "__weakref__")
    __array_ufunc__ = None
    __hash__ = object.__hash__

    def __init__(self, value: jax.Array):
        self._value = check_float_array(value, "value")
        self.grad = None
        self._level = 0
        self._node = _leaf_node(self)

    @property
    def __array_interface__(self):
        """Refused: NumPy (and so `jnp.asarray`) asks for it before treating a Tensor as a
        sequence of numbers, which would drop it off the tape."""
        raise TypeError(ESCAPED)

    @property
    def value(self):
        """The array this Tensor holds (assignable on a leaf, for the seeds' update step)."""
        return self._value

    @value.setter
    def value(self, value):
        self._value = value
        if self._node.primitive is None:
            self._node.spec = _spec_of(value)
            self._node.shape = self._node.spec.shape

    # ---- array-like attributes -----------------------------------------------------------
    shape = property(lambda self: jnp.shape(self._value))
    ndim = property(lambda self: jnp.ndim(self._value))
    dtype = property(lambda self: jnp.result_type(self._value))

    def __len__(self):
        return len(self._value)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self):
        made_by = "leaf" if self._node.primitive is None else self._node.primitive
        return f"Tensor({self._value!r}, {made_by})"

    # ---- operators -------------------------------------------------------------------------
    def __add__(self, other): return apply("add", self, other)
    def __radd__(self, other): return apply("add", other, self)
    def __sub__(self, other): return apply("subtract", self, other)
    def __rsub__(self, other): return apply("subtract", other, self)
    def __mul__(self, other): return apply("multiply", self, other)
    def __rmul__(self, other): return apply("multiply", other, self)
    def __truediv__(self, other): return apply("divide", self, other)
    def __rtruediv__(self, other): return apply("divide", other, self)
    def __matmul__(self, other): return apply("matmul", self, other)
    def __rmatmul__(self, other): return apply("matmul", other, self)
    def __neg__(self): return apply("negative", self)
    def __pos__(self): return self
    def __abs__(self): return apply("abs", self)

    def __getitem__(self, index):
        if any(isinstance(i, Tensor) for i in (index if isinstance(index, tuple) else (index,))):
            raise TypeError("a Tensor cannot be used as an index; index with an integer array")
        return apply("getitem", self, index=index)

    def __lt__(self, other): return self._value < _value(other)
    def __le__(self, other): return self._value <= _value(other)
    def __gt__(self, other): return self._value > _value(other)
    def __ge__(self, other): return self._value >= _value(other)
    def __eq__(self, other): return self._value == _value(other)
    def __ne__(self, other): return self._value != _value(other)

    def backward(self, gradient=None):
        """Accumulate d(self)/d(leaf) into `.grad` of every leaf that self depends on.

        gradient: the cotangent of self (same shape); may be omitted only for a scalar.
        """
        if gradient is None:
            if self.shape != ():
                raise ValueError(f"`backward` without `gradient` needs a scalar, got shape {self.shape}")
            gradient = jnp.ones(self.shape, self.dtype)
        elif jnp.shape(gradient) != self.shape:
            raise ValueError(f"`gradient` must have shape {self.shape}, got {jnp.shape(gradient)}")
        for node, g in backward_pass(self._node, gradient).items():
            leaf = node.leaf()
            if leaf is not None:
                leaf.grad = g if leaf.grad is None else leaf.grad + g


jax.tree_util.register_pytree_node(Tensor, _refuse_to_flatten, lambda aux, children: None)
_new_tensor = Tensor.__new__
_TRACER_OR_TENSOR = (jax.core.Tracer, Tensor)
rule_ops.install(apply, Tensor)

