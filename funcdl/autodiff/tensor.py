"""`Tensor`: a node of the tape, and the backward pass over the graph it roots.

Each `Tensor` holds its value (a jax array, or a tracer under `jax.jit`) and, unless it is a
leaf, the primitive that made it and that primitive's inputs. The graph *is* the tape: it lives
as long as the Tensors do (for `fdl.autodiff.grad`, one call), and no global state records it.
"""
import jax.numpy as jnp
import numpy as np

from funcdl.autodiff.vjps import PRIMITIVES, unbroadcast


def _value(x):
    return x.value if isinstance(x, Tensor) else x


def check_float_array(value, name):
    """`value` as a floating-point jax array; TypeError naming `name` otherwise."""
    if isinstance(value, Tensor):
        raise TypeError(f"`{name}` must be an array, got a Tensor (nested fdl.autodiff.grad is "
                        "not supported; use jax.grad around fdl.autodiff.grad for higher orders)")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.ndarray, np.generic, jnp.ndarray)):
        raise TypeError(f"`{name}` must be a floating-point array, got {type(value).__name__}")
    if isinstance(value, int):
        raise TypeError(f"`{name}` must be a floating-point array, got the Python int {value!r} "
                        "(write it as a float)")
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(f"`{name}` must have a floating-point dtype, got {value.dtype}")
    return value


def _check_broadcast(name, *operands):
    shapes = [jnp.shape(x) for x in operands]
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(f"`{name}`: operand shapes {', '.join(map(str, shapes))} do not "
                         "broadcast together") from None


_ELEMENTWISE = {"add", "subtract", "multiply", "divide", "power", "maximum", "minimum", "where",
                "clip", "binary_cross_entropy"}


def _check_concatenate(shapes, axis):
    if any(len(s) != len(shapes[0]) for s in shapes) or not shapes[0]:
        raise ValueError(f"`concatenate`: all operands must have the same rank >= 1, got shapes "
                         f"{', '.join(map(str, shapes))}")
    axis = axis % len(shapes[0])
    others = {s[:axis] + s[axis + 1:] for s in shapes}
    if len(others) > 1:
        raise ValueError(f"`concatenate`: shapes {', '.join(map(str, shapes))} differ outside "
                         f"axis {axis}")


def _check_reshape(shape, new_shape):
    size, known = int(np.prod(shape, dtype=np.int64)), [n for n in new_shape if n != -1]
    inferred = len(known) < len(new_shape)
    known_size = int(np.prod(known, dtype=np.int64))
    if len(new_shape) - len(known) > 1 or (
            known_size != size if not inferred else (known_size == 0 or size % known_size)):
        raise ValueError(f"`reshape`: cannot reshape an array of shape {shape} (size {size}) "
                         f"into shape {new_shape}")


def _check_operands(name, values, params):
    if name in _ELEMENTWISE:
        _check_broadcast(name, *values)
    elif name == "concatenate":
        _check_concatenate([jnp.shape(x) for x in values], params.get("axis", 0))
    elif name == "reshape":
        _check_reshape(jnp.shape(values[0]), tuple(params["shape"]))
    elif name == "matmul":
        a, b = map(jnp.shape, values)
        if not a or not b:
            raise ValueError(f"`matmul`: operands must have at least 1 dimension, got shapes {a} and {b}")
        k_b = b[0] if len(b) == 1 else b[-2]
        if a[-1] != k_b:
            raise ValueError(f"`matmul`: contraction dimensions differ: `a` {a} has {a[-1]} "
                             f"columns but `b` {b} has {k_b} rows")


def apply(name, *args, **params):
    """Run primitive `name`: on the tape if any input is a Tensor, else straight through jax.

    This is the one seam between `fdl.ops` and the tape.
    """
    values = tuple(_value(a) for a in args)
    _check_operands(name, values, params)
    ans = PRIMITIVES[name].forward(*values, **params)
    if not any(isinstance(a, Tensor) for a in args):
        return ans
    return Tensor._from_primitive(ans, name, args, params)


class Tensor:
    """A value on the tape. Build expressions with Python operators and `fdl.ops`.

    `Tensor(value)` is a leaf: every leaf reached from the output of `.backward()` gets `.grad`
    (accumulated as in PyTorch; set `.grad = None` to clear it).
    `<, <=, >, >=` give plain boolean arrays (masks, no gradient); `==` is identity, so Tensors
    stay hashable. NumPy defers to Tensor (`__array_ufunc__ = None`), so `ndarray @ Tensor` and
    `ndarray * Tensor` stay on the tape.
    """

    __slots__ = ("value", "grad", "_primitive", "_inputs", "_params", "__weakref__")
    __array_ufunc__ = None

    def __init__(self, value):
        self.value = check_float_array(value, "value")
        self.grad = None
        self._primitive, self._inputs, self._params = None, (), {}

    @classmethod
    def _from_primitive(cls, ans, primitive, inputs, params):
        node = cls.__new__(cls)
        node.value, node.grad = ans, None
        node._primitive, node._inputs, node._params = primitive, inputs, params
        return node

    # ---- array-like attributes -----------------------------------------------------------
    shape = property(lambda self: jnp.shape(self.value))
    ndim = property(lambda self: jnp.ndim(self.value))
    dtype = property(lambda self: jnp.result_type(self.value))
    T = property(lambda self: apply("transpose", self))

    def __len__(self):
        return len(self.value)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self):
        made_by = "leaf" if self._primitive is None else self._primitive
        return f"Tensor({self.value!r}, {made_by})"

    # ---- operators -------------------------------------------------------------------------
    def __add__(self, other): return apply("add", self, other)
    def __radd__(self, other): return apply("add", other, self)
    def __sub__(self, other): return apply("subtract", self, other)
    def __rsub__(self, other): return apply("subtract", other, self)
    def __mul__(self, other): return apply("multiply", self, other)
    def __rmul__(self, other): return apply("multiply", other, self)
    def __truediv__(self, other): return apply("divide", self, other)
    def __rtruediv__(self, other): return apply("divide", other, self)
    def __pow__(self, other): return apply("power", self, other)
    def __rpow__(self, other): return apply("power", other, self)
    def __matmul__(self, other): return apply("matmul", self, other)
    def __rmatmul__(self, other): return apply("matmul", other, self)
    def __neg__(self): return apply("negative", self)
    def __pos__(self): return self

    def __getitem__(self, index):
        if any(isinstance(i, Tensor) for i in (index if isinstance(index, tuple) else (index,))):
            raise TypeError("a Tensor cannot be used as an index; index with an integer array")
        return apply("getitem", self, index=index)

    def __lt__(self, other): return self.value < _value(other)
    def __le__(self, other): return self.value <= _value(other)
    def __gt__(self, other): return self.value > _value(other)
    def __ge__(self, other): return self.value >= _value(other)

    # ---- methods as on jax arrays ----------------------------------------------------------
    def sum(self, axis=None, keepdims=False): return apply("sum", self, axis=axis, keepdims=keepdims)
    def mean(self, axis=None, keepdims=False): return apply("mean", self, axis=axis, keepdims=keepdims)
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return apply("reshape", self, shape=tuple(shape))

    def backward(self, gradient=None):
        """Accumulate d(self)/d(leaf) into `.grad` of every leaf that self depends on.

        gradient: the cotangent of self (same shape); may be omitted only for a scalar.
        """
        if gradient is None:
            if self.shape != ():
                raise ValueError(f"`backward` without `gradient` needs a scalar, got shape {self.shape}")
            gradient = jnp.ones_like(self.value)
        elif jnp.shape(gradient) != self.shape:
            raise ValueError(f"`gradient` must have shape {self.shape}, got {jnp.shape(gradient)}")
        for leaf, g in backward_pass(self, gradient).items():
            leaf.grad = g if leaf.grad is None else leaf.grad + g


def _reverse_topological_order(out):
    """The nodes `out` depends on, each after every node that consumes it (iterative DFS)."""
    order, visited, stack = [], set(), [(out, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
        elif node not in visited:
            visited.add(node)
            stack.append((node, True))
            stack.extend((x, False) for x in node._inputs if isinstance(x, Tensor) and x not in visited)
    return reversed(order)


def backward_pass(out, g):
    """Push cotangent `g` of `out` back through the graph: {leaf Tensor: cotangent}."""
    cotangents, leaf_grads = {out: g}, {}
    for node in _reverse_topological_order(out):
        g = cotangents.pop(node, None)
        if g is None:  # reached only through a non-differentiable input (a `where` condition)
            continue
        if node._primitive is None:
            leaf_grads[node] = g.astype(node.dtype)
            continue
        primitive = PRIMITIVES[node._primitive]
        values = tuple(_value(x) for x in node._inputs)
        for i, x in enumerate(node._inputs):
            rule = primitive.vjps[0] if primitive.variadic else primitive.vjps[i]
            if isinstance(x, Tensor) and rule is not None:
                args = (i, g) if primitive.variadic else (g,)
                gx = unbroadcast(rule(*args, node.value, *values, **node._params), x.shape)
                cotangents[x] = cotangents[x] + gx if x in cotangents else gx
    return leaf_grads
