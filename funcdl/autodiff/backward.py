"""The backward pass: push an output's cotangent through the graph of `_Node`s to the leaves.

Nodes are visited by decreasing creation number (`_Node.seq`: a node's parents always exist
before it, so this is a reverse topological order); each applies its primitive's VJP rules
(`vjps.py`) and sums what reaches a node from several consumers.

A run of nodes each of which sends its cotangent to ONE input, consumed by nothing else (a
chain such as `tanh(y) * 0.9 + 0.05` repeated), is a composition of rules with nothing to
sum in between: it goes to `fused_rules.call_chain` in pieces of up to CHAIN_LIMIT rules, one
compiled call each once the same piece has repeated (an eager loop), instead of one call per
rule. The graph holds no cycles, and the pass runs with the cyclic garbage collector paused.
"""
import gc
import operator

import jax.numpy as jnp

from funcdl.autodiff import rule_ops
from funcdl.autodiff.fused_rules import call_chain, call_rule
from funcdl.autodiff.vjps import PRIMITIVES, unbroadcast

CHAIN_LIMIT = 16
_seq = operator.attrgetter("seq")


def reverse_topological_order(*outs):
    """`(nodes, consumers)`: the nodes the `outs` depend on, each before every node it
    consumes (the reachable nodes by decreasing `seq`), and per node the number of edges into
    it."""
    consumers, stack = dict.fromkeys(outs, 1), list(dict.fromkeys(outs))  # a root counts its seed
    while stack:
        for parent in stack.pop().parents:
            if parent is None:
                continue
            count = consumers.get(parent)
            if count is None:
                consumers[parent] = 1
                stack.append(parent)
            else:
                consumers[parent] = count + 1
    return sorted(consumers, key=_seq, reverse=True), consumers


def backward_pass(out, g):
    """Push cotangent `g` of node `out` back through the graph: {leaf node: cotangent}.

    `g` may be a Tensor of a lower level (a nested call): the rules then record on its tape.
    """
    return backward_pass_many({out: g})


def backward_pass_many(cotangents):
    """`backward_pass` from several nodes at once: {node: cotangent} -> {leaf node: cotangent}."""
    collecting = gc.isenabled()
    gc.disable()  # the graph has no cycles: scanning it for some is pure cost
    try:
        return _backward(dict(cotangents))
    finally:
        if collecting:
            gc.enable()


def _only_input(node):
    """`(i, parent, rule)` when exactly one input of `node` gets a cotangent, else None."""
    primitive = PRIMITIVES[node.primitive]
    if primitive.variadic:
        return None
    found = None
    for i, parent in enumerate(node.parents):
        if parent is not None and primitive.vjps[i] is not None:
            if found is not None:
                return None
            found = (i, parent, primitive.vjps[i])
    return found


def _chain(node, consumers):
    """The chain from `node`: `[(node, parent, rule), ...]` while each node sends its cotangent
    to one input that nothing else consumes (the last parent may be consumed elsewhere or be a
    leaf); at most CHAIN_LIMIT links."""
    links = []
    while len(links) < CHAIN_LIMIT and node.primitive is not None:
        link = _only_input(node)
        if link is None:
            break
        links.append((node, link[1], link[2]))
        if consumers[link[1]] != 1:
            break
        node = link[1]
    return links


def _backward(cotangents):
    order, consumers = reverse_topological_order(*cotangents)
    leaf_grads = {}
    for node in order:
        g = cotangents.pop(node, None)
        if g is None:  # reached only through a non-differentiable input (a `where` condition),
            continue  # or inside a chain already pushed through
        if node.primitive is None:
            dtype = node.spec.dtype
            leaf_grads[node] = g if getattr(g, "dtype", None) == dtype else rule_ops.astype(
                g if rule_ops.is_tensor(g) else jnp.asarray(g), dtype)
            continue
        links = _chain(node, consumers)
        if len(links) > 1:
            steps = [(rule, (link.ans,) + link.inputs, link.params, parent.shape)
                     for link, parent, rule in links]
            _send(cotangents, links[-1][1], call_chain(g, steps))
            continue
        primitive = PRIMITIVES[node.primitive]
        for i, parent in enumerate(node.parents):
            rule = primitive.vjps[0] if primitive.variadic else primitive.vjps[i]
            if parent is None or rule is None:
                continue
            args = (i, g) if primitive.variadic else (g,)
            gx = unbroadcast(call_rule(rule, args + (node.ans,) + node.inputs, node.params), parent.shape)
            _send(cotangents, parent, gx)
    return leaf_grads


def _send(cotangents, parent, gx):
    previous = cotangents.get(parent)
    cotangents[parent] = gx if previous is None else previous + gx
