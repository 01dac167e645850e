"""fdl.autodiff == jax.grad on random expression graphs over every op (property tests).

A graph has 1-3 input leaves of random broadcast-compatible shapes (rank 0-3, dims 1-3, size-1
axes) and up to 3-12 nodes, each an op of `fdl.ops` or a Python operator applied to earlier
nodes (so values fan out) or to constants (Python scalars, NumPy arrays, on either side). It is
a plain Python function of the leaves, run unchanged by `jax.grad` and `fdl.autodiff.grad`;
its output is the sum of the nodes nothing else consumed. Hypothesis draws a seed and the
number of nodes; a NumPy generator seeded with it draws the rest uniformly, so a failure
shrinks to the shortest failing prefix of its graph.

The generator evaluates every node in float64 NumPy as it draws it, so it keeps each op in its
domain (log and sqrt of values >= 0.1, else of softplus(x) + 0.1; denominators >= 0.3 in
size; |values| <= 1e3) and measures how close each kinked op (abs, relu, leaky_relu, clip,
maximum, minimum, max, the comparison of where) comes to its kink. Exact ties are structural
(relu(x - x), maximum(y, y), max over [x, x]): a perturbation keeps them, so finite
differences stay valid there. A graph that comes closer than `KINK_MARGIN` without touching is
checked without finite differences (fdl.autodiff vs jax.grad only; both follow PyTorch at
kinks). The kink conventions at isolated kinks are pinned by tests/test_ops.py.

Configuration: the `x64` and `allow_rank_promotion` fixtures of conftest. They are plain
context managers, entered once for the whole hypothesis test, which is why
`HealthCheck.function_scoped_fixture` is suppressed: nothing in them needs a reset between
examples. The same-rank graphs run under the strict "raise" rank promotion.
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
                suppress_health_check=[HealthCheck.function_scoped_fixture])


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
    # max over [x, x]: every maximum is tied, structurally (each copy must get half)
    "max_tied": lambda x, axis, keepdims: ops.max(ops.concatenate([x, x], axis), axis, keepdims),
    "softmax": ops.softmax, "log_softmax": ops.log_softmax,
    "matmul": _matmul,
    "transpose": lambda x, axes: x.T if axes is None else ops.transpose(x, axes),
    "reshape": ops.reshape,
    "concatenate": lambda *xs, axis: ops.concatenate(list(xs), axis),
    "getitem": lambda x, index: x[index],
    # issue 9's ops
    "sin": ops.sin, "cos": ops.cos, "expm1": ops.expm1,
    "log1p": lambda x, safe: ops.log1p(ops.softplus(x) if safe else x),
    "min": ops.min, "var": ops.var,
    "stack": lambda *xs, axis: ops.stack(list(xs), axis),
}


def _np_softplus(x):
    return np.logaddexp(0.0, x)


def _np_logsumexp(x, axis=None, keepdims=False):
    top = np.max(x, axis=axis, keepdims=True)
    out = top + np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


# The same ops in NumPy, for the generator: it evaluates every node it draws (to keep ops in
# their domains and measure kinks), and NumPy does that without compiling anything.
NUMPY_OPS = {
    **{name: OPS[name] for name in ("neg", "add", "subtract", "multiply", "divide", "power",
                                    "getitem")},
    "exp": np.exp, "square": np.square, "abs": np.abs, "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "relu": lambda x: np.maximum(x, 0.0),
    "softplus": _np_softplus, "leaky_relu": lambda x, slope: np.where(x > 0, x, x * slope),
    "maximum": np.maximum, "minimum": np.minimum,
    "log": lambda x, safe: np.log(_np_softplus(x) + 0.1 if safe else x),
    "sqrt": lambda x, safe: np.sqrt(_np_softplus(x) + 0.1 if safe else x),
    "where": lambda x, threshold, a, b: np.where(x > threshold, a, b),
    "clip": lambda x, lo, hi=None, *, width=None: np.minimum(np.maximum(x, lo), lo + width if hi is None else hi),
    "sum": np.sum, "mean": np.mean, "max": np.max, "logsumexp": _np_logsumexp,
    "max_tied": lambda x, axis, keepdims: np.max(np.concatenate([x, x], axis), axis, keepdims=keepdims),
    "softmax": lambda x, axis: np.exp(x - _np_logsumexp(x, axis, True)),
    "log_softmax": lambda x, axis: x - _np_logsumexp(x, axis, True),
    "matmul": lambda a, b, swap=False, use_ops=False: a @ (np.swapaxes(b, -1, -2) if swap else b),
    "transpose": np.transpose, "reshape": np.reshape,
    "concatenate": lambda *xs, axis: np.concatenate(xs, axis),
    "sin": np.sin, "cos": np.cos, "expm1": np.expm1,
    "log1p": lambda x, safe: np.log1p(_np_softplus(x) if safe else x),
    "min": np.min, "var": np.var,
    "stack": lambda *xs, axis: np.stack(xs, axis),
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
    """What the generator knows while drawing: the node values (float64 NumPy) and options.

    Choices come from a NumPy generator, uniformly (hypothesis' own draws favour the first
    option of a list and small integers, which left transposes and rank-3 graphs rare).
    """

    def __init__(self, rng, same_rank):
        self.rng, self.same_rank = rng, same_rank
        self.values, self.nodes, self.margin = [], [], np.inf

    def choice(self, options):
        return options[self.rng.integers(len(options))]

    def integer(self, low, high):  # inclusive
        return int(self.rng.integers(low, high + 1))

    def coin(self):
        return bool(self.rng.integers(2))

    def value(self, operand):
        return self.values[operand.index] if isinstance(operand, Ref) else operand

    def shape(self, operand):
        return np.shape(self.value(operand))

    def compatible(self, *shapes):
        """Shapes that broadcast (and, for same-rank graphs, have equal ranks or are scalars)."""
        try:
            np.broadcast_shapes(*shapes)
        except ValueError:
            return False
        return not self.same_rank or len({len(s) for s in shapes if s}) <= 1

    def node_where(self, predicate):
        """A Ref to a node whose shape satisfies `predicate`, or None."""
        candidates = [Ref(i) for i, v in enumerate(self.values) if predicate(np.shape(v))]
        return self.choice(candidates) if candidates else None

    def constant_like(self, shape):
        """A NumPy array whose shape broadcasts against `shape` (size-1 and dropped axes)."""
        kept = tuple(1 if self.coin() else n for n in shape)
        return self.rng.uniform(-1.5, 1.5, kept[0 if self.same_rank else self.integer(0, len(shape)):])

    def partner(self, x):
        """A second operand for an elementwise op on x: a node, a Python float or an array."""
        kind = self.choice(["node", "node", "float", "array"])
        if kind == "node":
            return self.node_where(lambda s: self.compatible(self.shape(x), s))
        if kind == "float":
            return self.choice([0.5, -0.75, 1.5, 2.0])
        return self.constant_like(self.shape(x))


def _min_distance(distances):
    """The smallest non-zero distance to a kink (exact zeros are structural ties)."""
    distances = np.abs(np.asarray(distances, np.float64)).ravel()
    distances = distances[distances > 0]
    return float(distances.min()) if distances.size else np.inf


def _max_gap(x, axis):
    """For max over `axis`: the smallest gap between the maximum and the next smaller value."""
    axes = tuple(range(x.ndim)) if axis is None else tuple(a % x.ndim for a in np.atleast_1d(axis))
    size = int(np.prod([x.shape[a] for a in axes]))
    rows = np.moveaxis(x, axes, tuple(range(-len(axes), 0))).reshape(-1, size)
    top = rows.max(axis=1, keepdims=True)
    below = np.where(rows < top, rows, -np.inf).max(axis=1, keepdims=True)
    return _min_distance(np.where(np.isfinite(below), top - below, 0.0))


def _axis(state, rank):
    """None, an int (possibly negative) or a sorted tuple of axes of a rank-`rank` array."""
    kind = "none" if rank == 0 else state.choice(["none", "int", "tuple"])
    if kind == "int":
        return state.integer(-rank, rank - 1)
    if kind == "tuple":
        axes = [a for a in range(rank) if state.coin()]
        return tuple(axes) or (state.integer(0, rank - 1),)
    return None


def _factorizations(n, rank):
    if rank == 0:
        return [()] if n == 1 else []
    return [(d,) + rest for d in range(1, n + 1) if n % d == 0 for rest in _factorizations(n // d, rank - 1)]


def _build(op, state, x):
    """(operands, params, distances to kinks) for `op` with first operand x, or None."""
    v = np.asarray(state.value(x))
    rank, shape = v.ndim, v.shape
    if op in ("neg", "square", "tanh", "sigmoid", "softplus", "exp", "abs", "relu"):
        if (op == "exp" and v.max() > 3) or (op == "square" and np.abs(v).max() > 30):
            return None
        return (x,), {}, (v if op in ("abs", "relu") else ())
    if op == "leaky_relu":
        return (x, state.choice([0.01, 0.3])), {}, v
    if op in ("sin", "cos", "expm1"):
        return None if op == "expm1" and v.max() > 3 else ((x,), {}, ())
    if op == "log1p":
        return (x,), {"safe": bool(v.min() < -0.5)}, ()
    if op == "min":
        axis = _axis(state, rank)
        return (x,), {"axis": axis, "keepdims": state.coin()}, [_max_gap(-v, axis)]
    if op == "var":
        axis = _axis(state, rank)
        size = int(np.prod([shape[a] for a in range(rank)] if axis is None else
                           [shape[a] for a in np.atleast_1d(axis)]))
        return (x,), {"axis": axis, "ddof": state.choice([0, 1]) if size > 1 else 0,
                      "keepdims": state.coin()}, ()
    if op == "stack":
        operands = [x] + [state.node_where(lambda s: s == shape) for _ in range(state.integer(1, 2))]
        return tuple(operands), {"axis": state.integer(-rank - 1, rank)}, ()
    if op in ("log", "sqrt"):
        return (x,), {"safe": bool(v.min() < 0.1)}, ()
    if op in ("add", "subtract", "multiply", "maximum", "minimum", "divide"):
        y = state.partner(x)
        if y is None:
            return None
        operands = (x, y) if state.coin() else (y, x)
        if op == "divide" and np.abs(state.value(operands[1])).min() < 0.3:
            return None
        distances = np.subtract(v, state.value(y)) if op in ("maximum", "minimum") else ()
        return operands, {}, distances
    if op == "power":
        return _build_power(state, x, v)
    if op == "where":
        threshold, a, b = state.choice([0.0, 0.5]), state.partner(x), state.partner(x)
        if a is None or b is None or not state.compatible(shape, state.shape(a), state.shape(b)):
            return None
        return (x, threshold, a, b), {}, v - threshold
    if op == "clip":
        return _build_clip(state, x, v)
    if op in ("sum", "mean", "max", "logsumexp"):
        axis = _axis(state, rank)
        return (x,), {"axis": axis, "keepdims": state.coin()}, ([_max_gap(v, axis)] if op == "max" else ())
    if op == "max_tied":
        axis = state.integer(-rank, rank - 1)
        return (x,), {"axis": axis, "keepdims": state.coin()}, [_max_gap(np.concatenate([v, v], axis), axis)]
    if op in ("softmax", "log_softmax"):
        return None if rank == 0 else ((x,), {"axis": state.integer(-rank, rank - 1)}, ())
    if op == "matmul":
        return _build_matmul(state, x, v)
    if op == "transpose":
        if rank < 2:
            return None
        # Cyclic permutations are not their own inverse: a VJP that reuses `axes` fails on them.
        axes = state.choice([None, tuple(np.roll(range(rank), state.choice([1, -1])).tolist()),
                             tuple(state.rng.permutation(rank).tolist())])
        return (x,), {"axes": axes}, ()
    if op == "reshape":
        shapes = _factorizations(v.size, rank if state.same_rank else state.integer(0, 3))
        if not shapes:
            return None
        new_shape = list(state.choice(shapes))
        if new_shape and state.coin():
            new_shape[state.integer(0, len(new_shape) - 1)] = -1
        return (x, tuple(new_shape)), {}, ()
    if op == "concatenate":
        if rank == 0:
            return None
        axis = state.integer(-rank, rank - 1)
        fits = lambda s: len(s) == rank and all(a == b for i, (a, b) in enumerate(zip(s, shape)) if i != axis % rank)
        operands = [x] + [state.node_where(fits) for _ in range(state.integer(1, 2))]
        if state.coin():
            operands.append(state.rng.uniform(-1, 1, shape[:axis % rank] + (2,) + shape[axis % rank + 1:]))
        return tuple(operands[i] for i in state.rng.permutation(len(operands))), {"axis": axis}, ()
    if op == "getitem":
        return _build_getitem(state, x, v)
    raise AssertionError(f"no builder for {op}")


def _build_power(state, x, v):
    mode = state.choice(["int", "float", "base", "nodes"])
    if mode == "int" and np.abs(v).max() <= 10:
        return (x, state.choice([2, 3])), {}, ()
    if mode == "float" and v.min() >= 0.1:
        return (x, state.choice([0.5, 1.5, -0.5])), {}, ()
    if mode == "base" and np.abs(v).max() <= 5:
        return (state.choice([0.5, 2.0]), x), {}, ()
    if mode != "nodes" or not 0.1 <= v.min() <= v.max() <= 10:
        return None
    y = state.node_where(lambda s: state.compatible(v.shape, s))
    return ((x, y), {}, ()) if np.abs(state.value(y)).max() <= 3 else None


def _build_clip(state, x, v):
    """Bounds: two floats, or one node and a float beyond it (both bounds get gradients)."""
    width = state.choice([0.25, 1.0])
    mode = state.choice(["floats", "node low", "node high"])
    if mode == "floats":
        lo = state.choice([-1.0, -0.5, 0.0])
        lo_value, hi_value, operands = lo, lo + width, (x, lo, lo + width)
    else:
        bound = state.node_where(lambda s: state.compatible(v.shape, s))
        b = np.asarray(state.value(bound))
        if mode == "node low":
            lo_value, hi_value = b, float(b.max()) + width
        else:
            lo_value, hi_value = float(b.min()) - width, b
        operands = (x, bound if mode == "node low" else lo_value, bound if mode == "node high" else hi_value)
    return operands, {}, np.minimum(np.abs(v - lo_value), np.abs(v - hi_value))


def _build_matmul(state, x, v):
    shape = v.shape
    if v.ndim == 0:
        return None
    params = {"use_ops": state.coin()}
    mode = state.choice(["self", "node", "constant right", "constant left"])
    if mode == "self":
        return (x, x), {**params, "swap": v.ndim >= 2}, ()
    if mode == "node":
        def fits(s):
            try:
                np.matmul(np.zeros(shape), np.zeros(s))
            except ValueError:
                return False
            return True
        y = state.node_where(lambda s: len(s) >= 1 and fits(s))
        return None if y is None else ((x, y), params, ())
    n = state.integer(1, 3)
    if mode == "constant right":
        b_shape = (shape[-1],) if state.coin() else (shape[-1], n)
        return (x, state.rng.uniform(-1, 1, b_shape)), params, ()
    a_shape = (n, shape[-2] if v.ndim >= 2 else shape[0])
    return (state.rng.uniform(-1, 1, a_shape), x), params, ()


def _build_getitem(state, x, v):
    shape = v.shape
    if v.ndim == 0:
        return None
    kind = state.choice(["int", "slice", "ellipsis", "array", "newaxis"])
    if kind == "int":
        index = state.integer(-shape[0], shape[0] - 1)
    elif kind == "slice":
        bound = lambda: None if state.coin() else state.integer(-shape[0], shape[0])
        index = (slice(bound(), bound(), state.choice([None, 2, -1])),)
    elif kind == "ellipsis":
        index = (Ellipsis, state.integer(-shape[-1], shape[-1] - 1))
    elif kind == "array":  # repeated indices: the gradient must accumulate
        index = np.repeat(state.rng.integers(0, shape[0], state.integer(1, 3)), 2)
    else:
        index = None if state.same_rank else (None, Ellipsis)
    if index is None or v[index].size == 0:
        return None
    return (x,), {"index": index}, ()


MIN_RANK = {"transpose": 2, "getitem": 1, "matmul": 1, "concatenate": 1, "softmax": 1,
            "log_softmax": 1, "max_tied": 1}
# The ops that need rank twice as often: they apply less often, and shape bugs hide there.
OP_CHOICES = sorted(OPS) + sorted(MIN_RANK)


def _add_node(state, op):
    """Build `op` on a random node; keep it if it is in range. Returns whether it was kept."""
    candidates = [i for i, v in enumerate(state.values) if v.ndim >= MIN_RANK.get(op, 0)]
    if not candidates:
        return False
    # Half the time the newest node: deeper chains (concatenate, then max: ties; ...).
    built = _build(op, state, Ref(candidates[-1] if state.coin() else state.choice(candidates)))
    if built is None:
        return False
    operands, params, distances = built
    value = np.asarray(NUMPY_OPS[op](*map(state.value, operands), **params))
    if not (0 < value.size <= 200 and np.all(np.abs(value) <= MAX_MAGNITUDE)):
        return False
    state.values.append(value)
    state.nodes.append(Node(op, operands, params))
    state.margin = min(state.margin, _min_distance(distances))
    return True


def draw_graph(seed, n_nodes, *, same_rank=False, required_op=None):
    """A random `Graph` of up to `n_nodes` nodes (call it inside x64; with rank promotion
    allowed unless same_rank). A smaller `n_nodes` with the same seed gives a prefix of the
    same graph, so hypothesis shrinks a failure to its shortest prefix."""
    state = _State(np.random.default_rng(seed), same_rank)
    rank = state.choice([2, 3] if required_op else [0, 1, 2, 2, 3, 3])  # every op applies at rank 2
    base = [state.integer(1, 3) for _ in range(rank)]
    for _ in range(state.integer(1, 3)):
        drop = 0 if same_rank or required_op else state.integer(0, rank)
        shape = [1 if state.rng.random() < 0.25 else n for n in base][drop:]
        state.values.append(state.rng.uniform(-1.5, 1.5, shape))
    leaves = tuple(state.values)
    if required_op and not any(_add_node(state, required_op) for _ in range(20)):
        hypothesis.reject()
    for _ in range(n_nodes):
        _add_node(state, state.choice(OP_CHOICES))
    if not state.nodes:
        hypothesis.reject()
    return Graph(leaves, tuple(state.nodes), state.margin)


# ---- the oracle ------------------------------------------------------------------------------
def assert_autodiffs_agree(graph):
    """fdl.autodiff == jax.grad to 1e-10 (relative to each leaf's largest entry), and both
    within 1e-5 of central differences unless the graph comes near a kink.

    The check is one `jax.jit` program per graph: these graphs have so many shapes that
    eager dispatch, which compiles every primitive for every new shape, costs about twice as
    much. `test_random_graphs_eager_match_jit` ties the eager tape to the jitted one.
    """
    hypothesis.note(repr(graph))
    near_kink = graph.kink_margin < KINK_MARGIN
    hypothesis.event("near a kink: fdl vs jax only" if near_kink else "checked by finite differences")
    # FD rtol 1e-5: values up to 1e3 make the rounding error ~1e-16 |f| / h = 1e-7 |f| / |g|.
    check_grads(graph, (tuple(jnp.asarray(x) for x in graph.leaves),), rtol=1e-5,
                finite_differences=not near_kink, max_elementwise=8)


SEEDS = st.integers(0, 2 ** 32 - 1)
SIZES = st.integers(3, 12)


@pytest.mark.slow  # ~73 s: the slow tier (`make test-slow`, run by CI)
@settings(max_examples=120, **SETTINGS)  # ~0.4 s each (one compile per graph)
@given(seed=SEEDS, n_nodes=SIZES)
def test_random_graphs_float64(seed, n_nodes, x64, allow_rank_promotion):
    assert_autodiffs_agree(draw_graph(seed, n_nodes))


@pytest.mark.slow  # ~13 s: the slow tier (`make test-slow`, run by CI)
@settings(max_examples=20, **SETTINGS)
@given(seed=SEEDS, n_nodes=SIZES)
def test_random_same_rank_graphs_under_strict_rank_promotion(seed, n_nodes, x64):
    assert_autodiffs_agree(draw_graph(seed, n_nodes, same_rank=True))


@pytest.mark.parametrize("op", sorted(OPS))
@settings(max_examples=1, **SETTINGS)
@given(seed=SEEDS, n_nodes=st.integers(1, 4))
def test_every_op_roots_a_random_graph(op, seed, n_nodes, x64, allow_rank_promotion):
    graph = draw_graph(seed, n_nodes, required_op=op)
    assert graph.nodes[0].op == op
    assert_autodiffs_agree(graph)


@settings(max_examples=15, **SETTINGS)
@given(seed=SEEDS, n_nodes=SIZES)
def test_random_graphs_float32_match_jax(seed, n_nodes, allow_rank_promotion):
    graph = draw_graph(seed, n_nodes)
    hypothesis.note(repr(graph))
    leaves = tuple(jnp.asarray(x, jnp.float32) for x in graph.leaves)
    both = jax.jit(lambda x: (funcdl.autodiff.grad(graph)(x), jax.grad(graph)(x)))
    with jax.default_matmul_precision("highest"):  # no TF32 on GPUs: the two contract differently
        grads_fdl, grads_jax = both(leaves)
    for g_fdl, g_jax in zip(grads_fdl, grads_jax):
        assert g_fdl.dtype == jnp.float32 and g_fdl.shape == g_jax.shape
        # Gradients that cancel to ~0 keep rounding residues of their O(1) terms: hence the
        # floor of 1 on the scale (leaves and values are O(1), at most 1e3).
        scale = max(float(jnp.max(jnp.abs(g_jax))) if g_jax.size else 0.0, 1.0)
        np.testing.assert_allclose(g_fdl, g_jax, rtol=0, atol=1e-5 * scale)


@pytest.mark.slow  # ~13 s: the slow tier (`make test-slow`, run by CI)
@settings(max_examples=6, **SETTINGS)
@given(seed=SEEDS, n_nodes=SIZES)
def test_random_graphs_eager_match_jit(seed, n_nodes, x64, allow_rank_promotion):
    graph = draw_graph(seed, n_nodes)
    hypothesis.note(repr(graph))
    leaves = tuple(jnp.asarray(x) for x in graph.leaves)
    grad = funcdl.autodiff.grad(graph)
    for g_eager, g_jit in zip(grad(leaves), jax.jit(grad)(leaves)):
        # XLA fuses the jitted program, so the two round differently: 1e-12, not 0.
        scale = float(jnp.max(jnp.abs(g_jit))) if g_jit.size else 0.0
        np.testing.assert_allclose(g_eager, g_jit, rtol=0, atol=1e-12 * scale + 1e-300)


@pytest.mark.slow  # ~5 s: the slow tier (`make test-slow`, run by CI)
@settings(max_examples=8, **SETTINGS)
@given(seed=SEEDS, n_nodes=st.integers(3, 8))
def test_random_graphs_second_order_match_jax_hessian(seed, n_nodes, x64, allow_rank_promotion):
    """fdl in fdl (the tape differentiating its own backward pass) == jax.hessian, per block
    to 1e-10 of the block's largest entry; kinks included (both keep the masks constant)."""
    graph = draw_graph(seed, n_nodes)
    hypothesis.note(repr(graph))
    leaves = tuple(jnp.asarray(x) for x in graph.leaves)
    both = jax.jit(lambda x: (funcdl.autodiff.hessian(graph)(x), jax.hessian(graph)(x)))
    h_fdl, h_jax = both(leaves)
    for block_fdl, block_jax in zip(jax.tree_util.tree_leaves(h_fdl), jax.tree_util.tree_leaves(h_jax)):
        assert block_fdl.shape == block_jax.shape
        scale = float(jnp.max(jnp.abs(block_jax))) if block_jax.size else 0.0
        np.testing.assert_allclose(block_fdl, block_jax, rtol=0, atol=1e-10 * scale + 1e-300)
