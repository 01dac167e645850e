"""Tests for `fdl.nn.summary`: every row's output shape and params count against the layers
run for real (their `apply` on an input of the sample's shape, their `init`'s arrays counted
with NumPy)."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import nn, ops

X = jnp.zeros((2, 1, 8, 8), jnp.float32)
MODEL = nn.Sequential(nn.Conv2d(4, 3), ops.relu, nn.Sequential(nn.Flatten(), nn.Linear(10)),
                      nn.LayerNorm(10))


def parse(table):
    """[(indent, name, shape, params, dtype)] of the table's layer rows; the totals line."""
    lines = table.splitlines()
    rows = []
    for line in lines[2:-2]:
        match = re.match(r"^( *)(.+?)  +(\(.*?\))  +([\d,]+)  (.+)$", line)
        assert match, line
        indent, name, shape, count, dtype = match.groups()
        rows.append((len(indent) // 2, name, eval(shape), int(count.replace(",", "")), dtype))
    return rows, lines[-1]


def test_rows_are_the_layers_outputs_and_params_counted_for_real():
    rows, total = parse(nn.summary(MODEL, X))
    params = MODEL.init(jax.random.key(0), X)
    count = lambda p: sum(np.asarray(leaf).size for leaf in jax.tree_util.tree_leaves(p))
    # the real forward pass, layer by layer
    conv, relu, _, norm = [nn.Conv2d(4, 3), ops.relu, nn.Sequential(nn.Flatten(),
                                                                         nn.Linear(10)),
                               nn.LayerNorm(10)]
    h1 = conv.apply(params[0], X)
    h2 = relu(h1)
    h3a = nn.Flatten().apply(params[2][0], h2)
    h3 = nn.Linear(10).apply(params[2][1], h3a)
    h4 = norm.apply(params[3], h3)
    expected = [
        (0, "Sequential (4 layers)", h4.shape, count(params)),
        (1, "0 Conv2d(4, 3)", h1.shape, count(params[0])),
        (1, "1 relu", h2.shape, 0),
        (1, "2 Sequential (2 layers)", h3.shape, count(params[2])),
        (2, "0 Flatten()", h3a.shape, 0),
        (2, "1 Linear(10)", h3.shape, count(params[2][1])),
        (1, "3 LayerNorm(10)", h4.shape, count(params[3])),
    ]
    assert [row[:4] for row in rows] == expected
    assert [row[4] for row in rows] == ["float32", "float32", "-", "float32", "-", "float32",
                                        "float32"]
    nbytes = sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(params))
    assert total == f"Total params: {count(params):,} ({nbytes / 1024:.1f} KB)"


def test_any_other_model_is_one_row_and_nothing_is_computed():
    big = jax.ShapeDtypeStruct((100_000, 512), jnp.bfloat16)  # never allocated
    rows, total = parse(nn.summary(nn.Linear(256), big))
    assert rows == [(0, "Linear(256)", (100_000, 256), 512 * 256 + 256, "bfloat16")]
    assert total == f"Total params: {512 * 256 + 256:,} ({(512 * 256 + 256) * 2 / 1024:.1f} KB)"


def test_bad_arguments_name_them():
    with pytest.raises(TypeError, match=r"summary: `model` must be a fdl.nn.Model"):
        nn.summary(lambda x: x, X)
    with pytest.raises(TypeError, match=r"summary: sample input `x` must be an array"):
        nn.summary(MODEL, [1, 2])
