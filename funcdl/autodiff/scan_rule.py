"""`scan` on the tape: ONE node for the whole loop, whose hand-written VJP is the reverse scan.

The node's inputs are the carry's leaves, the leaves of `xs` and the Tensors that the step
function `f` closes over (its *consts*: a cell's weights), found by tracing `f` once
(`jax.eval_shape`) with every Tensor of an outer tape that it touches re-bound to a leaf of
the step's own tape (`REBINDINGS` in tensor.py: while a step is traced, `apply` swaps those
Tensors for the step's leaves). The node's value is the float outputs raveled into one vector
(final carry, then the stacked ys); `fdl.ops.scan` slices them back out, and the integer
outputs (no gradient) come through the node's `_Spec`.

Forward: `lax.scan` whose body records `f` on a tape of its own (leaves for the carry, the xs
the caller differentiates and the consts) and returns, beside the carry and y, the values that
the step's rules read and that depend on the step (the residuals), stacked over time as jax's
own scan stores them. Values computed from the consts alone are not stored: the backward step
recomputes them (loop-invariant: XLA hoists them).

Backward (the rule): `lax.scan` in the other direction. Its body records `f` again on a fresh
tape (from zeros), puts the stored residuals in place of every step-dependent value (what it
recomputed is then dead code, which XLA removes), and runs the tape's backward pass: the
hand-written rules of the step's ops, from the cotangents of the new carry and of y_t. The
carry's cotangent goes on to the previous step, x_t's is stacked, the consts' are summed.

Nested (`fdl.autodiff.grad` of a gradient, so the rule's inputs are Tensors of an outer tape):
the rule recomputes the carries and runs the steps' backward passes as a Python loop whose
tapes hold the outer Tensors, so the outer tape records the backward pass (second order; that
tape grows with the length).
"""
import jax
import jax.numpy as jnp

from funcdl.autodiff import rule_ops as r
from funcdl.autodiff.backward import backward_pass_many, reverse_topological_order
from funcdl.autodiff.tensor import REBINDINGS, Tensor, leaf, new_level, strip
from funcdl.autodiff.vjps import Primitive, Shape

ANS_SLOT = -1  # a residual slot holding a node's `ans` (other slots are input positions)


class NeedsTape(Exception):
    """Raised inside `lax.scan`'s trace when the step touches a Tensor (`fdl.ops.scan` then
    takes the tape path)."""


class Rebind:
    """`apply`'s re-binding while a step is traced: a Tensor whose id is in `mapping` becomes
    its replacement; with `discover_level`, a Tensor of a lower level not yet mapped becomes a
    new leaf of that level holding its plain value, and is appended to `found`."""

    def __init__(self, mapping, discover_level=None):
        self.mapping, self.discover_level, self.found = mapping, discover_level, []

    def __call__(self, args):
        swapped = None
        for i, a in enumerate(args):
            if isinstance(a, Tensor):
                new = self.mapping.get(id(a))
                if new is None and self.discover_level is not None and a._level < self.discover_level:
                    new = self.mapping[id(a)] = leaf(strip(a), self.discover_level)
                    self.found.append(a)
                if new is not None:
                    swapped = list(args) if swapped is None else swapped
                    swapped[i] = new
        return args if swapped is None else tuple(swapped)


class Refuse:
    """The re-binding of the plain `lax.scan` path: any Tensor raises `NeedsTape`."""

    def __call__(self, args):
        for a in args:
            if isinstance(a, Tensor):
                raise NeedsTape
        return args


def call_rebound(rebind, f, *args):
    REBINDINGS.append(rebind)
    try:
        return f(*args)
    finally:
        REBINDINGS.pop()


class _Spec:
    """One `fdl.ops.scan` call: the step, the pytree layouts, which leaves get a leaf of the
    step's tape, the consts, the packing of the outputs, and what the forward leaves for the
    rule (the residual slots and stacks, the integer outputs). Unhashable, so the eager
    backward pass never compiles its rule (each node has its own)."""
    __hash__ = None

    def __init__(self, f, init_tree, xs_tree, carry_float, xs_leafy, length, reverse):
        self.f, self.init_tree, self.xs_tree, self.length, self.reverse = f, init_tree, xs_tree, length, reverse
        self.carry_float, self.xs_leafy = carry_float, xs_leafy  # per leaf: gets a step leaf
        self.consts, self.out_tree, self.outputs, self.pack_dtype = (), None, None, None
        self.slots = self.n_nodes = self.residuals = self.integer_outputs = self.cache = None

    def split(self, flat):
        n, m = len(self.carry_float), len(self.xs_leafy)
        return list(flat[:n]), list(flat[n:n + m]), list(flat[n + m:])


def _step(spec, carry, x, consts, level):
    """Record f(carry, x) on tape `level`: `(out_leaves, carry_leaves, x_leaves, const_leaves)`;
    every output leaf is a Tensor of that level or a plain array."""
    carry_leaves = [leaf(v, level) if fl else v for v, fl in zip(carry, spec.carry_float)]
    x_leaves = [leaf(v, level) if fl else v for v, fl in zip(x, spec.xs_leafy)]
    const_leaves = [leaf(v, level) for v in consts]
    rebind = Rebind({id(c): t for c, t in zip(spec.consts, const_leaves)})
    out = call_rebound(rebind, spec.f, jax.tree_util.tree_unflatten(spec.init_tree, carry_leaves),
                       jax.tree_util.tree_unflatten(spec.xs_tree, x_leaves))
    leaves = out_leaves(out, spec.init_tree)
    leaves = [rebind.mapping.get(id(o), o) if isinstance(o, Tensor) else o for o in leaves]
    for o in leaves:
        if isinstance(o, Tensor) and o._level != level:
            raise TypeError("`f` returned a Tensor of another fdl.autodiff.grad call; a step "
                            "returns what it computes from its carry, its xs and its closure")
    return leaves, carry_leaves, x_leaves, const_leaves


def out_leaves(out, init_tree):
    """The leaves of f's `(carry, y)`, checking the carry has init's structure."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"`f` must return a pair (carry, y), got {type(out).__name__}")
    carry, y = out
    carry_leaves, tree = jax.tree_util.tree_flatten(carry, is_leaf=_is_tensor)
    if tree != init_tree:
        raise TypeError(f"`f` must return a carry with the structure of `init` ({init_tree}), "
                        f"got {tree}")
    return carry_leaves + jax.tree_util.tree_leaves(y, is_leaf=_is_tensor)


def _is_tensor(x):
    return isinstance(x, Tensor)


def _graph(outs):
    """The recorded nodes the output Tensors depend on, in the order they were made."""
    roots = [o._node for o in outs if isinstance(o, Tensor)]
    if not roots:
        return []
    order, _ = reverse_topological_order(*roots)
    return [node for node in reversed(order) if node.primitive is not None]


def _trace_of(v):
    return getattr(v, "_trace", None)


def _residual_slots(nodes, step_leaves, body_trace):
    """`[(node index, slot)]`: the values the rules will read that depend on the step (on a
    step leaf, or a constant traced in the body such as a mask `x > 0` of x_t)."""
    dependent, slots = set(step_leaves), []
    for k, node in enumerate(nodes):
        here = []
        depends = False
        for j, (parent, value) in enumerate(zip(node.parents, node.inputs)):
            if parent is not None:
                if parent in dependent:
                    depends = True
                    if not isinstance(value, Shape):
                        here.append(j)
            elif isinstance(value, jax.core.Tracer) and (body_trace is None or _trace_of(value) is body_trace):
                depends = True
                here.append(j)
        if depends:
            dependent.add(node)
            slots.extend((k, j) for j in here)
            if node.ans is not None:
                slots.append((k, ANS_SLOT))
    return slots


def _read(nodes, slots):
    return [nodes[k].ans if j == ANS_SLOT else nodes[k].inputs[j] for k, j in slots]


def _write(nodes, slots, values):
    for (k, j), value in zip(slots, values):
        node = nodes[k]
        if j == ANS_SLOT:
            node.ans = value
        else:
            node.inputs = node.inputs[:j] + (value,) + node.inputs[j + 1:]


def _forward(*flat, spec):
    init, xs, consts = spec.split(flat)

    def body(carry, x):
        level = new_level()
        outs, carry_leaves, x_leaves, _ = _step(spec, carry, x, consts, level)
        nodes = _graph(outs)
        step_leaves = [t._node for t in carry_leaves + x_leaves if isinstance(t, Tensor)]
        spec.slots = _residual_slots(nodes, step_leaves, _trace_of(jnp.zeros(())))
        spec.n_nodes = len(nodes)
        values = [strip(o) for o in outs]
        n = len(carry)
        return values[:n], (values[n:], _read(nodes, spec.slots))

    carry, (ys, residuals) = jax.lax.scan(body, init, xs, length=spec.length, reverse=spec.reverse)
    spec.residuals = residuals
    values = carry + ys
    spec.integer_outputs = [v for v, (_, _, fl) in zip(values, spec.outputs) if not fl]
    return jnp.concatenate([jnp.ravel(v).astype(spec.pack_dtype)
                            for v, (_, _, fl) in zip(values, spec.outputs) if fl])


def unpack(packed, spec):
    """The float outputs (final carry leaves, then stacked ys) sliced out of `packed`, in
    order, `None` at the integer outputs; `fdl.ops` functions, so a Tensor stays on its tape."""
    out, start = [], 0
    for shape, dtype, is_float in spec.outputs:
        if not is_float:
            out.append(None)
            continue
        size = 1
        for n in shape:
            size *= n
        piece = r.reshape(r.getitem(packed, (slice(start, start + size),)), shape)
        out.append(r.astype(piece, dtype))
        start += size
    return out


def _zeros_like(v):
    return jnp.zeros(jnp.shape(v), r.dtype(v))


def _cotangents(seeds, outs):
    """{node: cotangent} of the step's output Tensors (one node reached twice sums)."""
    cotangents = {}
    for o, g in zip(outs, seeds):
        if isinstance(o, Tensor) and g is not None:
            previous = cotangents.get(o._node)
            cotangents[o._node] = g if previous is None else previous + g
    return cotangents


def _grad_of(grads, t, like):
    g = grads.get(t._node) if isinstance(t, Tensor) else None
    return _zeros_like(like) if g is None else g


def _reverse_scan(g, inputs, spec):
    """The cotangents of all inputs, first order: the reverse `lax.scan` over the residuals."""
    init, xs, consts = spec.split(inputs)
    seeds = unpack(g, spec)
    n = len(init)
    g_carry0 = [s if fl else None for s, fl in zip(seeds[:n], spec.carry_float)]
    g_carry0 = [s for s in g_carry0 if s is not None]
    g_ys = seeds[n:]
    carry_structs = [jax.ShapeDtypeStruct(jnp.shape(v), r.dtype(v)) for v in init]
    x_structs = [jax.ShapeDtypeStruct(jnp.shape(v)[1:], r.dtype(v)) for v in xs]

    def body(acc, inp):
        g_carry, g_consts = acc
        residuals, g_y = inp
        level = new_level()
        carry = [jnp.zeros(s.shape, s.dtype) for s in carry_structs]
        x = [jnp.zeros(s.shape, s.dtype) for s in x_structs]
        outs, carry_leaves, x_leaves, const_leaves = _step(spec, carry, x, consts, level)
        nodes = _graph(outs)
        if len(nodes) != spec.n_nodes:
            raise RuntimeError("`f` recorded a different computation when traced again; a "
                               "scan's step must not depend on anything but its arguments")
        _write(nodes, spec.slots, residuals)
        it = iter(g_carry)
        carry_seeds = [next(it) if fl else None for fl in spec.carry_float]
        grads = backward_pass_many(_cotangents(carry_seeds + list(g_y), outs))
        new_carry = [_grad_of(grads, t, v) for t, v, fl in zip(carry_leaves, carry, spec.carry_float) if fl]
        g_x = [_grad_of(grads, t, v) for t, v, fl in zip(x_leaves, x, spec.xs_leafy) if fl]
        g_consts = [a + _grad_of(grads, t, a) for a, t in zip(g_consts, const_leaves)]
        return (new_carry, g_consts), g_x

    g_y_in = [s for s in g_ys]
    g_y_in = [jnp.zeros(shape, dtype) if s is None else s
              for s, (shape, dtype, _) in zip(g_y_in, spec.outputs[n:])]
    (g_init, g_consts), g_xs = jax.lax.scan(
        body, (g_carry0, [_zeros_like(c) for c in consts]), (spec.residuals, g_y_in),
        length=spec.length, reverse=not spec.reverse)
    g_init, g_xs = iter(g_init), iter(g_xs)
    return ([next(g_init) if fl else None for fl in spec.carry_float]
            + [next(g_xs) if fl else None for fl in spec.xs_leafy] + list(g_consts))


def _unrolled(g, inputs, spec):
    """The cotangents of all inputs when they are Tensors of an outer tape (second order): the
    carries recomputed and each step's backward pass run in a Python loop, on the outer tape."""
    init, xs, consts = spec.split(inputs)
    seeds = unpack(g, spec)
    n = len(init)
    rebind = Rebind({id(c): v for c, v in zip(spec.consts, consts)})
    steps = range(spec.length - 1, -1, -1) if spec.reverse else range(spec.length)
    carries, carry = {}, init
    xs_tree = spec.xs_tree

    def x_at(t):
        return [r.getitem(v, (t,)) for v in xs]

    for t in steps:
        carries[t] = carry
        out = call_rebound(rebind, spec.f, jax.tree_util.tree_unflatten(spec.init_tree, carry),
                           jax.tree_util.tree_unflatten(xs_tree, x_at(t)))
        carry = [rebind.mapping.get(id(o), o) if isinstance(o, Tensor) else o
                 for o in out_leaves(out, spec.init_tree)[:n]]
    g_carry = seeds[:n]
    g_consts, g_x_steps = [None] * len(consts), {}
    for t in reversed(steps):
        level = new_level()
        x = x_at(t)
        inner = _Spec(spec.f, spec.init_tree, xs_tree, spec.carry_float,
                      [jnp.issubdtype(r.dtype(v), jnp.floating) for v in xs], spec.length, spec.reverse)
        inner.consts = spec.consts
        outs, carry_leaves, x_leaves, const_leaves = _step(inner, carries[t], x, consts, level)
        y_seeds = [None if s is None else r.getitem(s, (t,)) for s in seeds[n:]]
        grads = backward_pass_many(_cotangents(list(g_carry) + y_seeds, outs))
        g_carry = [grads.get(c._node) if isinstance(c, Tensor) else None for c in carry_leaves]
        g_x_steps[t] = [_grad_of(grads, c, v) for c, v in zip(x_leaves, x)]
        for k, c in enumerate(const_leaves):
            gk = grads.get(c._node)
            if gk is not None:
                g_consts[k] = gk if g_consts[k] is None else g_consts[k] + gk
    g_init = [_zeros_like(v) if gc is None else gc for gc, v in zip(g_carry, init)]
    g_xs = [r.stack([g_x_steps[t][k] for t in range(spec.length)]) for k in range(len(xs))]
    return g_init + g_xs + [_zeros_like(c) if gc is None else gc for gc, c in zip(g_consts, consts)]


def _scan_vjp(i, g, ans, *inputs, spec):
    """The cotangent of input i; all of them are computed at the first call for this `g` (the
    backward pass asks for each Tensor input in turn) and kept in `spec.cache` meanwhile."""
    if spec.cache is None or spec.cache[0] is not g:
        nested = any(isinstance(v, Tensor) for v in (g,) + inputs)
        result = _unrolled(g, inputs, spec) if nested or spec.residuals is None else _reverse_scan(g, inputs, spec)
        spec.cache = (g, result)
    out = spec.cache[1][i]
    return _zeros_like(inputs[i]) if out is None else out


SCAN_PRIMITIVES = {"scan": Primitive(_forward, (_scan_vjp,), variadic=True)}
