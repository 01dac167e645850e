"""Tests for `fdl.ops.scaled_dot_product_attention`, `fdl.nn.MultiheadAttention`,
`TransformerEncoderLayer` and `TransformerEncoder` against PyTorch float64 goldens with the
weights copied across (tests/golden/generate_attention.py): outputs and the gradients of every
input and weight, in both autodiffs; masks (bool, float, key padding, causal, a query that sees
no key), batch_first, cross-attention, norm_first, relu/gelu; PyTorch's init; errors."""
import json
import math
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fdl
from funcdl import nn

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = json.loads((ROOT / "tests" / "golden" / "attention.json").read_text())
BACKENDS = {"jax": jax.grad, "funcdl": fdl.autodiff.grad}
ATTENTION_NAMES = {"in_proj_weight": "in_proj_w", "in_proj_bias": "in_proj_b",
                   "out_proj.weight": "out_proj_w", "out_proj.bias": "out_proj_b"}


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


def cases(kind):
    return [c for c in GOLDEN["cases"] if c["kind"] == kind]


def location(torch_name):
    """PyTorch's parameter name -> (path into funcdl's params, transposed?)."""
    parts = torch_name.split(".")
    path = []
    if parts[0] == "layers":
        path, parts = ["layers", int(parts[1])], parts[2:]
    if parts[0] == "self_attn":
        return path + ["self_attn", ATTENTION_NAMES[".".join(parts[1:])]], False
    if ".".join(parts) in ATTENTION_NAMES:
        return path + [ATTENTION_NAMES[".".join(parts)]], False
    module, kind = parts
    return path + [module, "w" if kind == "weight" else "b"], module.startswith("linear")


def params_of(case):
    params = {}
    for name, value in case["weights"].items():
        path, transposed = location(name)
        node = params
        for step, following in zip(path[:-1], path[1:]):
            if isinstance(following, int):
                node = node.setdefault(step, [])
                while len(node) <= following:
                    node.append({})
            elif isinstance(step, int):
                node = node[step]
            else:
                node = node.setdefault(step, {})
        node[path[-1]] = jnp.asarray(value).T if transposed else jnp.asarray(value)
    if case["kind"] == "encoder":
        params.setdefault("norm", {})
    return params


def lookup(tree, path):
    for step in path:
        tree = tree[step]
    return tree


def masks_of(case):
    return {k: jnp.asarray(np.asarray(v, bool if case["mask_dtypes"][k] == "bool" else np.float64))
            for k, v in case["masks"].items()}


def model_of(case):
    options = dict(case["options"])
    if case["kind"] == "mha":
        return nn.MultiheadAttention(options.pop("embed_dim"), options.pop("num_heads"), **options)
    d_model, nhead = options.pop("d_model"), options.pop("nhead")
    if case["kind"] == "layer":
        return nn.TransformerEncoderLayer(d_model, nhead, **options)
    num_layers, norm = options.pop("num_layers"), options.pop("norm")
    return nn.TransformerEncoder(nn.TransformerEncoderLayer(d_model, nhead, **options), num_layers,
                                 norm=nn.LayerNorm(d_model) if norm else None)


def check_gradients(case, grads_inputs, grads_params):
    for name, value in grads_inputs.items():
        close(value, case["grads"][name])
    for name in case["weights"]:
        path, transposed = location(name)
        got = lookup(grads_params, path)
        close(got.T if transposed else got, case["grads"][name])


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("index", range(len(cases("sdpa"))))
def test_scaled_dot_product_attention_equals_pytorch(x64, index, backend):
    case = cases("sdpa")[index]
    inputs = {k: jnp.asarray(v) for k, v in case["inputs"].items()}
    g_out = jnp.asarray(case["g_out"])

    def loss(q, k, v):
        out = fdl.ops.scaled_dot_product_attention(q, k, v, **masks_of(case), **case["call"])
        return fdl.ops.sum(out * g_out), out

    grads, out = BACKENDS[backend](loss, argnums=(0, 1, 2), has_aux=True)(*inputs.values())
    close(out, case["out"])
    check_gradients(case, dict(zip(inputs, grads)), {})


@pytest.mark.slow  # ~102 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["mha", "layer", "encoder"])
def test_layers_equal_pytorch(x64, kind, backend):
    for case in cases(kind):
        model, params = model_of(case), params_of(case)
        inputs = {k: jnp.asarray(v) for k, v in case["inputs"].items()}
        g_out = jnp.asarray(case["g_out"])
        call = masks_of(case)
        if case["causal"]:
            call["is_causal"] = True

        def loss(params, inputs):
            x = inputs["x"] if "x" in inputs else (
                (inputs["query"], inputs["key"], inputs["value"]) if "key" in inputs
                else inputs["query"])
            out = model.apply(params, x, **call)
            return fdl.ops.sum(out * g_out), out

        (grads_params, grads_inputs), out = BACKENDS[backend](
            loss, argnums=(0, 1), has_aux=True)(params, inputs)
        close(out, case["out"])
        check_gradients(case, grads_inputs, grads_params)


def test_the_goldens_cover_what_they_claim():
    mha = [c["options"] | {"masks": sorted(c["masks"]), "causal": c["causal"], "hint": c["hint"],
                           "cross": "key" in c["inputs"]} for c in cases("mha")]
    assert any(c["batch_first"] and c.get("cross") for c in mha if "batch_first" in c)
    assert any(c["causal"] and not c["masks"] for c in mha) and any(c["hint"] for c in mha)
    assert {"attn_mask", "key_padding_mask"} <= {m for c in mha for m in c["masks"]}
    layers = [c["options"] for c in cases("layer")]
    assert {l.get("norm_first", False) for l in layers} == {True, False}
    assert {l.get("activation", "relu") for l in layers} == {"relu", "gelu"}
    assert {l.get("batch_first", False) for l in layers} == {True, False}


@pytest.mark.slow  # ~12 s: the slow tier (`make test-slow`, run by CI)
def test_dropout_zero_is_deterministic_and_dropout_in_eval_is_the_identity_path():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0)
    x = jax.random.normal(jax.random.key(1), (5, 3, 8))
    params = layer.init(jax.random.key(0), x)
    plain = jax.jit(layer.apply)(params, x)
    np.testing.assert_array_equal(
        jax.jit(lambda p, x, key: layer.apply(p, x, key=key, train=True))(params, x, jax.random.key(2)),
        plain)
    dropping = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.5)
    np.testing.assert_array_equal(jax.jit(dropping.apply)(params, x), plain)
    trained = jax.jit(lambda p, x, key: dropping.apply(p, x, key=key, train=True))(
        params, x, jax.random.key(2))
    assert not np.allclose(trained, plain)
    with pytest.raises(ValueError, match=r"`key` is required when train=True and dropout > 0"):
        dropping.apply(params, x, train=True)


def test_attention_dropout_drops_weights_with_pytorchs_scaling():
    """With dropout p on the weights, E[output] is the output without dropout: averaging
    many draws converges to it (kept weights scaled by 1/(1 - p))."""
    q = k = v = jax.random.normal(jax.random.key(0), (1, 1, 4, 2))
    plain = fdl.ops.scaled_dot_product_attention(q, k, v)
    draws = jax.vmap(lambda key: fdl.ops.scaled_dot_product_attention(
        q, k, v, dropout_p=0.5, key=key))(jax.random.split(jax.random.key(1), 4000))
    np.testing.assert_allclose(draws.mean(axis=0), plain, atol=0.06)
    assert not np.allclose(draws[0], plain)


def test_init_is_pytorchs():
    E = 64
    attention = nn.MultiheadAttention(E, 4)
    params = attention.init(jax.random.key(0), jnp.zeros((3, 2, E)))
    assert {k: v.shape for k, v in params.items()} == {
        "in_proj_w": (3 * E, E), "in_proj_b": (3 * E,), "out_proj_w": (E, E), "out_proj_b": (E,)}
    np.testing.assert_array_equal(params["in_proj_b"], 0)
    np.testing.assert_array_equal(params["out_proj_b"], 0)
    # xavier_uniform over fans (E, 3E): bound sqrt(6 / 4E); out_proj as nn.Linear: 1/sqrt(E)
    for w, bound in ((params["in_proj_w"], math.sqrt(6 / (4 * E))), (params["out_proj_w"], 1 / math.sqrt(E))):
        w = np.asarray(w)
        assert np.all(np.abs(w) <= bound) and np.abs(w).max() > 0.95 * bound
        assert abs(w.var() - bound ** 2 / 3) < 5 * bound ** 2 * np.sqrt(0.8 / w.size) / 3
    assert "in_proj_b" not in nn.MultiheadAttention(E, 4, bias=False).init(
        jax.random.key(0), jnp.zeros((3, 2, E)))
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
    p = layer.init(jax.random.key(0), jnp.zeros((3, 2, 8)))
    assert p["linear1"]["w"].shape == (8, 16) and p["linear2"]["w"].shape == (16, 8)
    assert np.abs(np.asarray(p["linear2"]["w"])).max() <= 1 / math.sqrt(16)
    np.testing.assert_array_equal(p["norm1"]["w"], 1)
    np.testing.assert_array_equal(p["norm2"]["b"], 0)
    no_bias = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, bias=False).init(
        jax.random.key(0), jnp.zeros((3, 2, 8)))
    assert sorted(no_bias["norm1"]) == ["w"] and sorted(no_bias["linear1"]) == ["w"]
    encoder = nn.TransformerEncoder(layer, 3)
    ep = encoder.init(jax.random.key(0), jnp.zeros((3, 2, 8)))
    assert len(ep["layers"]) == 3 and ep["norm"] == {}
    assert not np.array_equal(ep["layers"][0]["linear1"]["w"], ep["layers"][1]["linear1"]["w"])


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_causal_alone_equals_the_explicit_mask_in_both_conventions(x64):
    x = jax.random.normal(jax.random.key(0), (2, 5, 8))
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    params = attention.init(jax.random.key(1), x)
    future = jnp.triu(jnp.ones((5, 5), bool), 1)  # MultiheadAttention: True is masked out
    apply = jax.jit(attention.apply, static_argnames="is_causal")
    close(apply(params, x, is_causal=True), apply(params, x, attn_mask=future))
    q = k = v = x[:, None]
    close(fdl.ops.scaled_dot_product_attention(q, k, v, is_causal=True),
          fdl.ops.scaled_dot_product_attention(q, k, v, attn_mask=~future))  # SDPA: True attends


def test_sdpa_by_hand(x64):
    """softmax(q kᵀ / √E + mask) v written out in NumPy, one head at a time."""
    rng = np.random.default_rng(0)
    q, k, v = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 3))
    mask = rng.normal(size=(3, 5))
    got = fdl.ops.scaled_dot_product_attention(q, k, v, attn_mask=mask[None])
    for b in range(2):
        scores = q[b] @ k[b].T / 2.0 + mask
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        close(got[b], (weights / weights.sum(-1, keepdims=True)) @ v[b])


@pytest.mark.slow  # ~5 s: the slow tier (`make test-slow`, run by CI)
def test_gradcheck_of_attention_and_an_encoder_layer():
    rng = np.random.default_rng(0)
    q, k, v = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 3))
    mask = rng.uniform(size=(1, 3, 5)) < 0.7
    mask[0, 1] = False
    report = fdl.gradcheck.check_grads(
        lambda q, k, v: fdl.ops.sum(fdl.ops.square(fdl.ops.scaled_dot_product_attention(
            q, k, v, attn_mask=mask))), (q, k, v), argnums=(0, 1, 2))
    assert report.passed, report
    layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0, activation="gelu")
    x, readout = rng.normal(size=(3, 2, 4)), rng.normal(size=(3, 2, 4))
    params = jax.tree_util.tree_map(np.asarray, layer.init(jax.random.key(0), jnp.asarray(x, jnp.float32)))
    # a random readout: the sum of squares of a LayerNorm's output is nearly constant
    report = fdl.gradcheck.check_grads(
        lambda p, x: fdl.ops.sum(layer.apply(p, x, is_causal=True) * readout), (params, x),
        argnums=(0, 1))
    assert report.passed, report


@pytest.mark.slow  # ~15 s: the slow tier (`make test-slow`, run by CI)
def test_jit_and_a_training_step_through_the_encoder():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(8))
    x = jax.random.normal(jax.random.key(0), (4, 6, 8))
    params = encoder.init(jax.random.key(1), x)
    padding = jnp.zeros((4, 6), bool).at[:, -2:].set(True)

    def loss(params, key):
        return fdl.ops.mean(fdl.ops.square(encoder.apply(params, x, key=key, train=True,
                                                         src_key_padding_mask=padding)))

    grads = jax.jit(jax.grad(loss))(params, jax.random.key(2))
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
    funcdl_grads = jax.jit(fdl.autodiff.grad(loss))(params, jax.random.key(2))
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(funcdl_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


ERRORS = [
    (lambda: nn.MultiheadAttention(10, 3), ValueError,
     "`embed_dim` (10) must be divisible by `num_heads` (3)"),
    (lambda: nn.TransformerEncoderLayer(10, 4), ValueError,
     "`d_model` (10) must be divisible by `nhead` (4)"),
    (lambda: nn.TransformerEncoderLayer(8, 2, activation="tanh"), ValueError,
     "`activation` must be 'relu' or 'gelu', got 'tanh'"),
    (lambda: nn.TransformerEncoder(nn.ReLU(), 0), ValueError, "`num_layers` must be an int >= 1"),
    (lambda: nn.TransformerEncoder("layer", 2), TypeError, "`layer` must be a Model"),
]


@pytest.mark.parametrize("build, error, message", ERRORS)
def test_bad_options_name_the_argument(build, error, message):
    with pytest.raises(error, match=re.escape(message)):
        build()


@pytest.mark.parametrize("batch_first", [False, True])
def test_an_input_in_the_other_layout_suggests_batch_first(batch_first):
    """(N, L, E) given to a batch_first=False attention (or (L, N, E) to a batch_first=True
    one) passes the feature check; the key's batch size or a mask's shape catches it, and the
    message says which batch_first would read it. A channels-first input fails the feature
    check, which names the axis holding the features."""
    attention = nn.MultiheadAttention(8, 2, batch_first=batch_first)
    N, L, S = 3, 5, 4
    layout = lambda n, length: (n, length, 8) if batch_first else (length, n, 8)  # noqa: E731
    other = lambda n, length: layout(n, length)[1::-1] + (8,)  # noqa: E731
    params = attention.init(jax.random.key(0), jnp.zeros(layout(N, L)))
    hint = (rf"; these shapes fit if the input is \({'L, N' if batch_first else 'N, L'}, "
            rf"\.\.\.\) rather than the layer's .* build the layer with "
            rf"batch_first={not batch_first}, or transpose the input")
    query, key = jnp.zeros(other(N, L)), jnp.zeros(other(N, S))
    with pytest.raises(ValueError, match=rf"the query and the key must have one batch size, got "
                                         rf"{L} and {S}{hint}"):
        attention.apply(params, (query, key, key))
    with pytest.raises(ValueError, match=rf"`key_padding_mask` must have shape \(N, S\) = "
                                         rf"\({L}, {N}\), got \({N}, {L}\){hint}"):
        attention.apply(params, query, key_padding_mask=jnp.zeros((N, L), bool))
    with pytest.raises(ValueError, match=rf"`attn_mask` must have shape \(L, S\) = \({N}, {N}\).*"
                                         rf"got \({L}, {L}\){hint}"):
        attention.apply(params, query, attn_mask=jnp.zeros((L, L), bool))
    # the layer's own layout with the same masks is fine; a mask wrong either way gets no hint
    attention.apply(params, jnp.zeros(layout(N, L)), key_padding_mask=jnp.zeros((N, L), bool),
                    attn_mask=jnp.zeros((L, L), bool))
    with pytest.raises(ValueError, match=r"`key_padding_mask` must have shape \(N, S\) = "
                                         rf"\({N}, {L}\), got \(2, 2\)$"):
        attention.apply(params, jnp.zeros(layout(N, L)), key_padding_mask=jnp.zeros((2, 2), bool))
    with pytest.raises(ValueError, match=r"`x` has 5 features \(its last axis\), but the params "
                                         r"were made for embed_dim 8; axis 1 of the input has 8"):
        attention.apply(params, jnp.zeros((N, 8, 5)))


def test_bad_input_names_the_argument():
    attention = nn.MultiheadAttention(8, 2)
    x = jnp.zeros((5, 3, 8))  # (L, N, E)
    params = attention.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"`x` has 6 features .* params were made for embed_dim 8"):
        attention.apply(params, jnp.zeros((5, 3, 6)))
    with pytest.raises(ValueError, match=r"the key has 4 features .* made for embed_dim 8"):
        attention.apply(params, (x, jnp.zeros((7, 3, 4)), jnp.zeros((7, 3, 4))))
    with pytest.raises(ValueError, match=re.escape(
            "`attn_mask` must have shape (L, S) = (5, 5) or (N·num_heads, L, S) = (6, 5, 5), "
            "got (3, 5)")):
        attention.apply(params, x, attn_mask=jnp.zeros((3, 5), bool))
    with pytest.raises(ValueError, match=re.escape(
            "`key_padding_mask` must have shape (N, S) = (3, 5), got (5, 3)")):
        attention.apply(params, x, key_padding_mask=jnp.zeros((5, 3), bool))
    with pytest.raises(TypeError, match=r"`attn_mask` must be a bool array .* float array of the "
                                        r"query's dtype float32 .* got dtype int32"):
        attention.apply(params, x, attn_mask=jnp.zeros((5, 5), jnp.int32))
    with pytest.raises(ValueError, match=r"the query and the key must have one batch size, got 3 and 2"):
        attention.apply(params, (x, jnp.zeros((7, 2, 8)), jnp.zeros((7, 2, 8))))
    with pytest.raises(TypeError, match=r"`x` must be one array \(self-attention\) or \(query, key, value\)"):
        attention.apply(params, (x, x))
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
    layer_params = layer.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"`x` has 4 features .* params were made for d_model 8"):
        layer.apply(layer_params, jnp.zeros((5, 3, 4)))
    with pytest.raises(ValueError, match=r"`attn_mask` and `is_causal=True` cannot both be given"):
        fdl.ops.scaled_dot_product_attention(x, x, x, attn_mask=jnp.ones((3, 3), bool), is_causal=True)
    with pytest.raises(ValueError, match=r"`attn_mask` must broadcast to the attention scores' "
                                         r"shape \(5, 3, 3\) \(\.\.\., L, S\), got \(2, 3\)"):
        fdl.ops.scaled_dot_product_attention(x, x, x, attn_mask=jnp.ones((2, 3), bool))
    with pytest.raises(TypeError, match=r"`q`, `k` and `v` must have one dtype"):
        fdl.ops.scaled_dot_product_attention(x, x, x.astype(jnp.float16))
    with pytest.raises(ValueError, match=r"`k` must have shape \(\.\.\., S, 8\)"):
        fdl.ops.scaled_dot_product_attention(x, x[..., :4], x)


@pytest.mark.slow  # ~5 s: the slow tier (`make test-slow`, run by CI)
def test_every_python_block_of_the_sequences_guide_runs_alone():
    guide = ROOT / "docs" / "guides" / "sequences.md"
    blocks = re.findall(r"(<!-- skip[^\n]*-->\n)?```python\n(.*?)```", guide.read_text(), re.S)
    assert len(blocks) >= 3
    for skip, code in blocks:
        if not skip:
            exec(compile(code, str(guide), "exec"), {"__name__": "__guide__"})
