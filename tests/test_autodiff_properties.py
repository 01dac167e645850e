"""fdl.autodiff == jax.grad on random expression graphs over every op (property tests).

Hypothesis draws input leaves of random broadcast-compatible shapes (rank 0-3, dims 1-3), then
a DAG of 3-12 nodes, each an op of `fdl.ops` or a Python operator applied to earlier nodes
(so values fan out) or to constants (Python scalars, NumPy arrays, on either side). The graph
is a plain Python function of the leaves, run unchanged by `jax.grad` and
`fdl.autodiff.grad`; its output is the sum of the nodes nothing else consumed.

The generator evaluates every node in float64 as it draws it, so it keeps each op inside its
domain (log and sqrt of values >= 0.1, else of softplus(x) + 0.1; denominators >= 0.3 in
size; |values| <= 1e3) and measures how close each kinked op (abs, relu, leaky_relu, clip,
maximum, minimum, max, where's comparison) comes to its kink. Exact ties are structural
(relu(x - x), maximum(y, y)): a perturbation keeps them, so finite differences stay valid.
A graph that comes closer than `KINK_MARGIN` without touching is checked without finite
differences (fdl.autodiff vs jax.grad only; both follow PyTorch at kinks).

Configuration: the `x64` and `allow_rank_promotion` fixtures of conftest. They are plain
context managers, entered once for the whole hypothesis test, which is why
`HealthCheck.function_scoped_fixture` is suppressed: nothing in them needs a reset between
examples. The strict same-rank graphs run without `allow_rank_promotion`.
"""
import operator
from typing import NamedTuple

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import funcdl.autodiff
from funcdl import ops
from funcdl.gradcheck import check_grads

KINK_MARGIN = 1e-3  # FD steps of 1e-6 move intermediates by ~1e-6 times gains << 1e3
MAX_MAGNITUDE = 1e3
SETTINGS = dict(derandomize=True, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


class Ref(NamedTuple):
    """An operand that is node `index` of the graph (the leaves come first)."""
    index: int


class Node(NamedTuple):
    op: str
    operands: tuple  # Refs, Python scalars and float64 NumPy arrays, in call order
    params: dict


def _clip(x, lo, hi=None, *, width=None):
    """clip(x, lo, hi), or clip(x, lo, lo + width) when the lower bound is a node."""
    return ops.clip(x, lo, lo + width if hi is None else hi)


def _matmul(a, b, *, swap=False, use_ops=False):
    """a @ b (or a @ bᵀ over the last two axes), by the operator or by `ops.matmul`."""
    if swap:
        b = ops.transpose(b, tuple(range(jnp.ndim(b) - 2)) + (jnp.ndim(b) - 1, jnp.ndim(b) - 2))
    return ops.matmul(a, b) if use_ops else a @ b


OPS = {
    "neg": operator.neg, "add": operator.add, "subtract": operator.sub,
    "multiply": operator.mul, "divide": operator.truediv, "power": operator.pow,
    "exp": ops.exp, "square": ops.square, "abs": ops.abs, "tanh": ops.tanh,
    "sigmoid": ops.sigmoid, "relu": ops.relu, "softplus": ops.softplus,
    "leaky_relu": ops.leaky_relu, "maximum": ops.maximum, "minimum": ops.minimum,
    "log": lambda x, safe: ops.log(ops.softplus(x) + 0.1 if safe else x),
    "sqrt": lambda x, safe: ops.sqrt(ops.softplus(x) + 0.1 if safe else x),
    "where": lambda x, threshold, a, b: ops.where(x > threshold, a, b),
    "clip": _clip,
    "sum": ops.sum, "mean": ops.mean, "max": ops.max, "logsumexp": ops.logsumexp,
    "softmax": ops.softmax, "log_softmax": ops.log_softmax,
    "matmul": _matmul,
    "transpose": lambda x, axes: x.T if axes is None else ops.transpose(x, axes),
    "reshape": ops.reshape,
    "concatenate": lambda *xs, axis: ops.concatenate(list(xs), axis),
    "getitem": lambda x, index: x[index],
}


class Graph(NamedTuple):
    """A random expression: `graph(leaves) -> scalar`, with arrays or with Tensors."""
    leaves: tuple  # float64 NumPy arrays
    nodes: tuple
    kink_margin: float  # closest non-zero approach of a kinked op to its kink

    def __call__(self, leaves):
        dtype = leaves[0].dtype
        values = list(leaves)
        for node in self.nodes:
            values.append(OPS[node.op](*(_resolve(o, values, dtype) for o in node.operands),
                                       **node.params))
        consumed = {o.index for node in self.nodes for o in node.operands if isinstance(o, Ref)}
        sinks = [v for i, v in enumerate(values) if i >= len(leaves) and i not in consumed]
        total = ops.sum(sinks[0])
        for sink in sinks[1:]:
            total = total + ops.sum(sink)
        return total

    def __repr__(self):
        lines = [f"v{i} = leaf {x.shape}" for i, x in enumerate(self.leaves)]
        for i, node in enumerate(self.nodes, len(self.leaves)):
            args = ", ".join(f"v{o.index}" if isinstance(o, Ref) else
                             f"array{o.shape}" if isinstance(o, np.ndarray) else repr(o)
                             for o in node.operands)
            lines.append(f"v{i} = {node.op}({args}, {node.params})")
        return "\n".join(lines + [f"kink margin {self.kink_margin:.1e}"])


def _resolve(operand, values, dtype):
    if isinstance(operand, Ref):
        return values[operand.index]
    return operand.astype(dtype) if isinstance(operand, np.ndarray) else operand


# ---- the generator -------------------------------------------------------------------------
class _State:
    """What the generator knows while drawing: node values (float64) and the options."""

    def __init__(self, data, same_rank, rng):
        self.data, self.same_rank, self.rng = data, same_rank, rng
        self.values, self.nodes, self.margin = [], [], np.inf

    def draw(self, strategy):
        return self.data.draw(strategy)

    def value(self, operand):
        return self.values[operand.index] if isinstance(operand, Ref) else operand

    def shape(self, operand):
        return np.shape(self.value(operand))

    def compatible(self, a, b):
        """Shapes that broadcast (and, for same-rank graphs, have equal rank or a scalar)."""
        try:
            np.broadcast_shapes(a, b)
        except ValueError:
            return False
        return not self.same_rank or len(a) == len(b) or not a or not b

    def node_where(self, predicate):
        """A Ref to a node satisfying `predicate(shape)`, recent ones first; None if none does."""
        candidates = [Ref(i) for i in reversed(range(len(self.values)))
                      if predicate(np.shape(self.values[i]))]
        return self.draw(st.sampled_from(candidates)) if candidates else None

    def constant_like(self, shape):
        """A NumPy array whose shape broadcasts against `shape` (size-1 and dropped axes)."""
        ones = self.draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
        kept = tuple(1 if one else n for n, one in zip(shape, ones))
        drop = 0 if self.same_rank else self.draw(st.integers(0, len(shape)))
        return self.rng.uniform(-1.5, 1.5, kept[drop:])

    def partner(self, x):
        """A second operand for an elementwise op on x: a node, a Python float or an array."""
        kind = self.draw(st.sampled_from(["node", "node", "float", "array"]))
        if kind == "node":
            return self.node_where(lambda s: self.compatible(self.shape(x), s))
        if kind == "float":
            return self.draw(st.sampled_from([0.5, -0.75, 1.5, 2.0]))
        return self.constant_like(self.shape(x))


def _min_distance(distances):
    """The smallest non-zero distance to a kink (exact zeros are structural ties)."""
    distances = np.abs(np.asarray(distances, np.float64)).ravel()
    distances = distances[distances > 0]
    return float(distances.min()) if distances.size else np.inf


def _max_gap(x, axis):
    """For max over `axis`: the smallest gap between the maximum and the next smaller value."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim)) if axis is None else tuple(a % x.ndim for a in np.atleast_1d(axis))
    rows = np.moveaxis(x, axes, tuple(range(-len(axes), 0))).reshape(-1, int(np.prod([x.shape[a] for a in axes])))
    top = rows.max(axis=1, keepdims=True)
    below = np.where(rows < top, rows, -np.inf).max(axis=1, keepdims=True)
    return _min_distance(np.where(np.isfinite(below), top - below, 0.0))


def _draw_axis(state, rank):
    if rank == 0:
        return None
    choice = state.draw(st.sampled_from(["none", "int", "tuple"]))
    if choice == "int":
        return state.draw(st.integers(-rank, rank - 1))
    if choice == "tuple":
        return tuple(sorted(state.draw(st.sets(st.integers(0, rank - 1), min_size=1))))
    return None


def _factorizations(n, rank):
    if rank == 0:
        return [()] if n == 1 else []
    return [(d,) + rest for d in range(1, n + 1) if n % d == 0 for rest in _factorizations(n // d, rank - 1)]


def _build(op, state, x):
    """(operands, params, distances to kinks) for `op` with first operand x, or None."""
    draw, v = state.draw, np.asarray(state.value(x))
    rank, shape = v.ndim, v.shape
    if op in ("neg", "square", "tanh", "sigmoid", "softplus", "exp", "abs", "relu"):
        if (op == "exp" and v.max() > 3) or (op == "square" and np.abs(v).max() > 30):
            return None
        return (x,), {}, (v if op in ("abs", "relu") else ())
    if op == "leaky_relu":
        return (x, draw(st.sampled_from([0.01, 0.3]))), {}, v
    if op in ("log", "sqrt"):
        return (x,), {"safe": bool(v.min() < 0.1)}, ()
    if op in ("add", "subtract", "multiply", "maximum", "minimum", "divide"):
        y = state.partner(x)
        if y is None:
            return None
        operands = (x, y) if draw(st.booleans()) else (y, x)
        if op == "divide" and np.abs(state.value(operands[1])).min() < 0.3:
            return None
        distances = np.subtract(v, state.value(y)) if op in ("maximum", "minimum") else ()
        return operands, {}, distances
    if op == "power":
        mode = draw(st.sampled_from(["int", "float", "base", "nodes"]))
        if mode == "int" and np.abs(v).max() <= 10:
            return (x, draw(st.sampled_from([2, 3]))), {}, ()
        if mode == "float" and v.min() >= 0.1:
            return (x, draw(st.sampled_from([0.5, 1.5, -0.5]))), {}, ()
        if mode == "base" and np.abs(v).max() <= 5:
            return (draw(st.sampled_from([0.5, 2.0])), x), {}, ()
        if mode != "nodes" or not 0.1 <= v.min() <= v.max() <= 10:
            return None
        y = state.node_where(lambda s: state.compatible(shape, s))
        return ((x, y), {}, ()) if np.abs(state.value(y)).max() <= 3 else None
    if op == "where":
        threshold, a, b = draw(st.sampled_from([0.0, 0.5])), state.partner(x), state.partner(x)
        if a is None or b is None or not all(
                state.compatible(s, t) for s in map(state.shape, (x, a, b)) for t in map(state.shape, (x, a, b))):
            return None
        return (x, threshold, a, b), {}, v - threshold
    if op == "clip":
        if draw(st.booleans()):
            lo = draw(st.sampled_from([-1.0, -0.5, 0.0]))
            hi = lo + draw(st.sampled_from([0.25, 1.0]))
            return (x, lo, hi), {}, np.minimum(np.abs(v - lo), np.abs(v - hi))
        lo = state.node_where(lambda s: state.compatible(shape, s))
        width = draw(st.sampled_from([0.25, 1.0]))
        lo_value = state.value(lo)
        return (x, lo), {"width": width}, np.minimum(np.abs(v - lo_value), np.abs(v - lo_value - width))
    if op in ("sum", "mean", "max", "logsumexp"):
        axis, keepdims = _draw_axis(state, rank), draw(st.booleans())
        return (x,), {"axis": axis, "keepdims": keepdims}, ([_max_gap(v, axis)] if op == "max" else ())
    if op in ("softmax", "log_softmax"):
        return None if rank == 0 else ((x,), {"axis": draw(st.integers(-rank, rank - 1))}, ())
    if op == "matmul":
        return _build_matmul(state, x, v)
    if op == "transpose":
        if rank < 2:
            return None
        axes = draw(st.one_of(st.none(), st.permutations(range(rank)).map(tuple)))
        return (x,), {"axes": axes}, ()
    if op == "reshape":
        new_rank = rank if state.same_rank else draw(st.integers(0, 3))
        shapes = _factorizations(v.size, new_rank)
        if not shapes:
            return None
        new_shape = list(draw(st.sampled_from(shapes)))
        if new_shape and draw(st.booleans()):
            new_shape[draw(st.integers(0, new_rank - 1))] = -1
        return (x, tuple(new_shape)), {}, ()
    if op == "concatenate":
        if rank == 0:
            return None
        axis = draw(st.integers(-rank, rank - 1))
        fits = lambda s: len(s) == rank and all(a == b for i, (a, b) in enumerate(zip(s, shape)) if i != axis % rank)
        others = [state.node_where(fits) for _ in range(draw(st.integers(1, 2)))]
        if draw(st.booleans()):
            others.append(state.rng.uniform(-1, 1, shape[:axis % rank] + (2,) + shape[axis % rank + 1:]))
        return tuple(draw(st.permutations([x] + others))), {"axis": axis}, ()
    if op == "getitem":
        return _build_getitem(state, x, v)
    raise AssertionError(f"no builder for {op}")


def _build_matmul(state, x, v):
    draw, shape = state.draw, v.shape
    if v.ndim == 0:
        return None
    params = {"use_ops": draw(st.booleans())}
    mode = draw(st.sampled_from(["self", "node", "constant right", "constant left"]))
    if mode == "self":
        return (x, x), {**params, "swap": v.ndim >= 2}, ()
    if mode == "node":
        def fits(s):
            try:
                np.matmul(np.empty(shape), np.empty(s))
            except ValueError:
                return False
            return True
        y = state.node_where(lambda s: len(s) >= 1 and fits(s))
        return None if y is None else ((x, y), params, ())
    n = draw(st.integers(1, 3))
    if mode == "constant right":
        b_shape = (shape[-1],) if draw(st.booleans()) else (shape[-1], n)
        return (x, state.rng.uniform(-1, 1, b_shape)), params, ()
    a_shape = (n, shape[-2] if v.ndim >= 2 else shape[0])
    return (state.rng.uniform(-1, 1, a_shape), x), params, ()


def _build_getitem(state, x, v):
    draw, shape = state.draw, v.shape
    if v.ndim == 0:
        return None
    kind = draw(st.sampled_from(["int", "slice", "ellipsis", "array", "newaxis"]))
    if kind == "int":
        index = draw(st.integers(-shape[0], shape[0] - 1))
    elif kind == "slice":
        bound = st.one_of(st.none(), st.integers(-shape[0], shape[0]))
        index = (slice(draw(bound), draw(bound), draw(st.sampled_from([None, 2, -1]))),)
    elif kind == "ellipsis":
        index = (Ellipsis, draw(st.integers(-shape[-1], shape[-1] - 1)))
    elif kind == "array":  # repeated indices: the gradient must accumulate
        index = np.array(draw(st.lists(st.integers(0, shape[0] - 1), min_size=1, max_size=4)))
    else:
        index = None if state.same_rank else (None, Ellipsis)
    if index is None or v[index].size == 0:
        return None
    return (x,), {"index": index}, ()


def draw_graph(data, *, same_rank=False, required_op=None, n_nodes=(3, 12)):
    """A random `Graph` (call it inside x64; with rank promotion allowed unless same_rank)."""
    state = _State(data, same_rank, np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1))))
    rank = data.draw(st.integers(2 if required_op else 0, 3))  # every op applies at rank >= 2
    base = data.draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    for _ in range(data.draw(st.integers(1, 3))):
        drop = 0 if same_rank or required_op else data.draw(st.integers(0, rank))
        shape = [1 if data.draw(st.booleans()) else n for n in base][drop:]
        state.values.append(jnp.asarray(state.rng.uniform(-1.5, 1.5, shape)))
    leaves = tuple(np.asarray(x) for x in state.values)
    names = sorted(OPS)
    for step in range(data.draw(st.integers(*n_nodes))):
        op = required_op if step == 0 and required_op else data.draw(st.sampled_from(names))
        built = _build(op, state, state.node_where(lambda s: True))
        if built is None:
            continue
        operands, params, distances = built
        value = OPS[op](*(_resolve(o, state.values, jnp.float64) for o in operands), **params)
        if not (0 < jnp.size(value) <= 200 and np.all(np.abs(value) <= MAX_MAGNITUDE)):
            continue
        state.values.append(value)
        state.nodes.append(Node(op, operands, params))
        state.margin = min(state.margin, _min_distance(distances))
    if not state.nodes or (required_op and state.nodes[0].op != required_op):
        hypothesis.reject()
    return Graph(leaves, tuple(state.nodes), state.margin)


# ---- the oracle ------------------------------------------------------------------------------
@pytest.fixture
def op_by_op():
    """Run jax.numpy primitive by primitive (`jax.disable_jit()`), for speed.

    Eagerly, each jax.numpy function is a small jitted program, compiled whole for every new
    shape; without jit its primitives are compiled one by one and shared by all graphs, the
    generator, fdl's VJP rules and jax.grad. That halves the compiles, this file's main cost.
    """
    with jax.disable_jit():
        yield


def assert_autodiffs_agree(graph):
    """fdl.autodiff == jax.grad to 1e-10 (relative to each leaf's largest entry), and both
    within 1e-5 of central differences unless the graph comes near a kink."""
    hypothesis.note(repr(graph))
    near_kink = graph.kink_margin < KINK_MARGIN
    hypothesis.event("near a kink: fdl vs jax only" if near_kink else "checked by finite differences")
    # FD rtol 1e-5: values up to 1e3 make the rounding error ~1e-16 |f| / h = 1e-7 |f| / |g|.
    check_grads(graph, (tuple(jnp.asarray(x) for x in graph.leaves),), rtol=1e-5,
                finite_differences=not near_kink, max_elementwise=8, jit=False)


@settings(max_examples=200, **SETTINGS)
@given(data=st.data())
def test_random_graphs_float64(data, x64, allow_rank_promotion, op_by_op):
    assert_autodiffs_agree(draw_graph(data))


@settings(max_examples=30, **SETTINGS)
@given(data=st.data())
def test_random_same_rank_graphs_under_strict_rank_promotion(data, x64, op_by_op):
    assert_autodiffs_agree(draw_graph(data, same_rank=True))


@pytest.mark.parametrize("op", sorted(OPS))
@settings(max_examples=2, **SETTINGS)
@given(data=st.data())
def test_every_op_roots_a_random_graph(op, data, x64, allow_rank_promotion, op_by_op):
    assert_autodiffs_agree(draw_graph(data, required_op=op, n_nodes=(1, 4)))


@settings(max_examples=15, **SETTINGS)
@given(data=st.data())
def test_random_graphs_float32_match_jax(data, allow_rank_promotion, op_by_op):
    with jax.enable_x64(True):  # draw in float64, so the kink margins mean the same
        graph = draw_graph(data)
    hypothesis.note(repr(graph))
    leaves = tuple(jnp.asarray(x, jnp.float32) for x in graph.leaves)
    grads_fdl, grads_jax = funcdl.autodiff.grad(graph)(leaves), jax.grad(graph)(leaves)
    for g_fdl, g_jax in zip(grads_fdl, grads_jax):
        assert g_fdl.dtype == jnp.float32 and g_fdl.shape == g_jax.shape
        # Gradients that cancel to ~0 keep rounding residues of their O(1) terms: hence the
        # floor of 1 on the scale (leaves and values are O(1), at most 1e3).
        scale = max(float(jnp.max(jnp.abs(g_jax))) if g_jax.size else 0.0, 1.0)
        np.testing.assert_allclose(g_fdl, g_jax, rtol=0, atol=1e-5 * scale)


@settings(max_examples=8, **SETTINGS)
@given(data=st.data())
def test_random_graphs_under_jit_match_eager(data, x64, allow_rank_promotion):
    graph = draw_graph(data)
    leaves = tuple(jnp.asarray(x) for x in graph.leaves)
    grad = funcdl.autodiff.grad(graph)
    for g_jit, g_eager in zip(jax.jit(grad)(leaves), grad(leaves)):
        scale = float(jnp.max(jnp.abs(g_eager))) if g_eager.size else 0.0
        np.testing.assert_allclose(g_jit, g_eager, rtol=0, atol=1e-12 * scale + 1e-300)
