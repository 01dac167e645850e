"""Write tests/golden/attention.json: PyTorch float64 attention outputs and gradients.
Run once with the `bench` extra (torch==2.13.0 CPU):

    .venv/bin/python tests/golden/generate_attention.py

Cases of `torch.nn.functional.scaled_dot_product_attention`, `torch.nn.MultiheadAttention`
(need_weights=False), `torch.nn.TransformerEncoderLayer` and `torch.nn.TransformerEncoder`
(dropout 0, training mode: PyTorch's reference path). Each stores the options, the inputs
(`inputs`, differentiated), the masks (`masks`, constants: bool lists or floats), whether the
causal mask is asked for (`causal`: PyTorch gets the causal mask and `is_causal=True`, as it
requires; funcdl gets `is_causal=True` alone, or with the mask too when `hint`), the weights
by PyTorch's names, the output, a random cotangent `g_out` and the gradients of
sum(out * g_out) for every input and weight. Fixed NumPy draws: re-running reproduces the file.
"""
import json
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(20261205)


def listed(t):
    return t.detach().numpy().tolist()


def normal(*shape):
    return torch.tensor(rng.normal(size=shape), requires_grad=True)


def bool_mask(*shape, p=0.3):
    return torch.tensor(rng.uniform(size=shape) < p)


def causal_bool(L, S):  # True: masked out (MultiheadAttention's convention)
    return torch.ones(L, S, dtype=torch.bool).triu(1)


def record(kind, options, inputs, masks, call, torch_out, module=None, causal=False, hint=False):
    weights = dict(module.named_parameters()) if module is not None else {}
    g_out = torch.tensor(rng.normal(size=tuple(torch_out.shape)))
    names = list(inputs) + list(weights)
    grads = torch.autograd.grad((torch_out * g_out).sum(), list(inputs.values()) + list(weights.values()))
    grads = dict(zip(names, grads))
    return {"kind": kind, "options": options, "call": call, "causal": causal, "hint": hint,
            "inputs": {k: listed(v) for k, v in inputs.items()},
            "masks": {k: (v.tolist() if v.dtype == torch.bool else listed(v))
                      for k, v in masks.items()},
            "mask_dtypes": {k: ("bool" if v.dtype == torch.bool else "float") for k, v in masks.items()},
            "weights": {k: listed(v) for k, v in weights.items()},
            "out": listed(torch_out), "g_out": listed(g_out),
            "grads": {k: listed(v) for k, v in grads.items()}}


def randomise(module):
    """Every weight drawn from NumPy (biases non-zero, norms away from 1), so the checks see them."""
    with torch.no_grad():
        for name, w in module.named_parameters():
            scale = 0.3 if "norm" not in name else 0.2
            w.copy_(torch.tensor(rng.normal(scale=scale, size=tuple(w.shape))
                                 + (1.0 if "norm" in name and name.endswith("weight") else 0.0)))
    return module


def sdpa_cases():
    cases = []
    for options in ({}, {"is_causal": True}, {"is_causal": True, "S": 6}, {"mask": "bool"},
                    {"mask": "float", "scale": 0.3}, {"mask": "bool_dead"}, {"mask": "float_dead"}):
        L, S = 4, options.get("S", 5 if "mask" in options else 4)
        q, k, v = normal(2, 3, L, 3), normal(2, 3, S, 3), normal(2, 3, S, 2)
        masks = {}
        if options.get("mask") == "bool":
            masks["attn_mask"] = ~bool_mask(L, S)  # SDPA: True takes part
        elif options.get("mask") == "float":
            masks["attn_mask"] = torch.tensor(rng.normal(size=(2, 1, L, S)))
        elif options.get("mask") == "bool_dead":
            mask = ~bool_mask(3, L, S)
            mask[1, 2] = False  # query 2 of head 1 sees no key: zeros, as PyTorch
            masks["attn_mask"] = mask
        elif options.get("mask") == "float_dead":
            mask = torch.tensor(rng.normal(size=(L, S)))
            mask[0] = float("-inf")
            masks["attn_mask"] = mask
        call = {key: options[key] for key in ("is_causal", "scale") if key in options}
        out = F.scaled_dot_product_attention(q, k, v, **masks, **call)
        cases.append(record("sdpa", options, {"q": q, "k": k, "v": v}, masks, call, out))
    return cases


def mha_cases():
    E, H, N, L, S = 6, 2, 2, 3, 4
    cases = []
    variants = [
        {}, {"batch_first": True}, {"cross": True}, {"cross": True, "batch_first": True},
        {"attn_mask": "bool"}, {"attn_mask": "float3d", "batch_first": True},
        {"key_padding_mask": "bool", "cross": True}, {"key_padding_mask": "float"},
        {"attn_mask": "bool", "key_padding_mask": "bool", "batch_first": True},
        {"attn_mask": "float3d", "key_padding_mask": "float"},
        {"causal": True}, {"causal": True, "batch_first": True, "hint": True},
        {"causal": True, "key_padding_mask": "bool"}, {"key_padding_mask": "dead"},
        {"unbatched": True, "cross": True, "attn_mask": "bool3d"}, {"bias": False},
    ]
    for variant in variants:
        options = {key: variant[key] for key in ("bias", "batch_first") if key in variant}
        module = randomise(torch.nn.MultiheadAttention(E, H, **options))
        cross, unbatched = variant.get("cross", False), variant.get("unbatched", False)
        src = S if cross else L

        def shaped(length):
            if unbatched:
                return normal(length, E)
            return normal(N, length, E) if options.get("batch_first") else normal(length, N, E)

        inputs = {"query": shaped(L)}
        if cross:
            inputs["key"] = shaped(src)
            inputs["value"] = shaped(src)
        masks = {}
        kind = variant.get("attn_mask")
        if kind == "bool":
            masks["attn_mask"] = bool_mask(L, src)
        elif kind == "bool3d":
            masks["attn_mask"] = bool_mask(H, L, src)
        elif kind == "float3d":
            masks["attn_mask"] = torch.tensor(rng.normal(size=(N * H, L, src)))
        kind = variant.get("key_padding_mask")
        if kind == "bool":
            masks["key_padding_mask"] = bool_mask(N, src)
        elif kind == "float":
            masks["key_padding_mask"] = torch.tensor(rng.normal(size=(N, src)))
        elif kind == "dead":
            mask = bool_mask(N, src)
            mask[1] = True  # every key of batch element 1 padded: zeros before out_proj
            masks["key_padding_mask"] = mask
        causal = variant.get("causal", False)
        torch_masks = dict(masks)
        if causal:
            torch_masks["attn_mask"] = causal_bool(L, src)
        q = inputs["query"]
        k, v = (inputs["key"], inputs["value"]) if cross else (q, q)
        out, _ = module(q, k, v, need_weights=False, is_causal=causal, **torch_masks)
        if variant.get("hint"):
            masks["attn_mask"] = causal_bool(L, src)
        cases.append(record("mha", {"embed_dim": E, "num_heads": H, **options}, inputs, masks,
                            {}, out, module, causal, variant.get("hint", False)))
    return cases


def layer_cases():
    E, H, F_, N, L = 4, 2, 6, 2, 4
    cases = []
    variants = [
        {}, {"norm_first": True}, {"activation": "gelu", "batch_first": True},
        {"activation": "gelu", "norm_first": True, "batch_first": True, "mask": True},
        {"padding": True}, {"causal": True, "norm_first": True}, {"bias": False},
        {"unbatched": True, "layer_norm_eps": 1e-3},
    ]
    for variant in variants:
        options = {key: variant[key] for key in ("norm_first", "activation", "batch_first", "bias",
                                                 "layer_norm_eps") if key in variant}
        module = randomise(torch.nn.TransformerEncoderLayer(E, H, dim_feedforward=F_, dropout=0.0,
                                                            **options))
        x = (normal(L, E) if variant.get("unbatched") else
             normal(N, L, E) if options.get("batch_first") else normal(L, N, E))
        masks = {}
        if variant.get("mask"):
            masks["src_mask"] = torch.tensor(rng.normal(size=(L, L)))
        if variant.get("padding"):
            masks["src_key_padding_mask"] = bool_mask(N, L)
        causal = variant.get("causal", False)
        torch_masks = dict(masks)
        if causal:
            torch_masks["src_mask"] = torch.nn.Transformer.generate_square_subsequent_mask(L)
        out = module(x, is_causal=causal, **torch_masks)
        cases.append(record("layer", {"d_model": E, "nhead": H, "dim_feedforward": F_,
                                      "dropout": 0.0, **options}, {"x": x}, masks, {}, out, module,
                            causal))
    return cases


def encoder_cases():
    E, H, F_, N, L = 4, 2, 6, 2, 4
    cases = []
    for variant in ({"norm": True, "padding": True}, {"causal": True, "batch_first": True},
                    {"norm": True, "norm_first": True, "mask": True}):
        options = {key: variant[key] for key in ("batch_first", "norm_first") if key in variant}
        layer = torch.nn.TransformerEncoderLayer(E, H, dim_feedforward=F_, dropout=0.0, **options)
        norm = torch.nn.LayerNorm(E) if variant.get("norm") else None
        module = randomise(torch.nn.TransformerEncoder(layer, 2, norm=norm,
                                                       enable_nested_tensor=False))
        x = normal(N, L, E) if options.get("batch_first") else normal(L, N, E)
        masks = {}
        if variant.get("mask"):
            masks["mask"] = bool_mask(L, L, p=0.2)
        if variant.get("padding"):
            masks["src_key_padding_mask"] = bool_mask(N, L)
        causal = variant.get("causal", False)
        torch_masks = dict(masks)
        if causal:
            torch_masks["mask"] = torch.nn.Transformer.generate_square_subsequent_mask(L)
        out = module(x, is_causal=causal, **torch_masks)
        cases.append(record("encoder", {"d_model": E, "nhead": H, "dim_feedforward": F_,
                                        "dropout": 0.0, "num_layers": 2,
                                        "norm": bool(variant.get("norm")), **options},
                            {"x": x}, masks, {}, out, module, causal))
    return cases


def main():
    path = pathlib.Path(__file__).with_name("attention.json")
    cases = sdpa_cases() + mha_cases() + layer_cases() + encoder_cases()
    path.write_text(json.dumps({"torch": torch.__version__, "cases": cases}))
    print(f"wrote {path} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
