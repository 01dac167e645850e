"""Write tests/golden/layer_options.json: PyTorch float64 references for the layer options
PyTorch users pass: Conv1d/Conv2d `padding_mode` and Embedding `padding_idx`/`max_norm`.
Run once with the `bench` extra (torch==2.13.0 CPU):

    .venv/bin/python tests/golden/generate_layer_options.py

Each case stores the inputs and weights, the output y, a cotangent gy and the gradients of
sum(y * gy) with respect to the input (convolutions) and the weights. Fixed NumPy inputs, so
re-running reproduces the file exactly.
"""
import json
import pathlib

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(20261203)


def listed(t):
    return t.detach().numpy().tolist()


# (kind, x shape, out channels, kernel, stride, padding, dilation, padding_mode)
CONVS = [
    ("Conv2d", (2, 3, 6, 5), 4, 3, 1, 1, 1, "reflect"),
    ("Conv2d", (1, 2, 5, 6), 3, (3, 2), (2, 1), (2, 1), 1, "replicate"),
    ("Conv2d", (2, 2, 5, 5), 2, 3, 1, 2, 2, "circular"),
    ("Conv2d", (1, 2, 6, 6), 3, 4, 1, "same", 1, "reflect"),
    ("Conv1d", (2, 3, 7), 2, 3, 1, 2, 1, "reflect"),
    ("Conv1d", (2, 2, 6), 3, 4, 2, 3, 1, "circular"),
    ("Conv1d", (1, 2, 5), 2, 3, 1, 1, 1, "replicate"),
]


def conv_case(kind, shape, out, kernel, stride, padding, dilation, mode):
    layer = getattr(torch.nn, kind)(shape[1], out, kernel, stride=stride, padding=padding,
                                    dilation=dilation, padding_mode=mode)
    x = torch.tensor(rng.normal(size=shape), requires_grad=True)
    y = layer(x)
    gy = torch.tensor(rng.normal(size=tuple(y.shape)))
    gx, gw, gb = torch.autograd.grad((y * gy).sum(), [x, layer.weight, layer.bias])
    return {"kind": kind, "out": out, "kernel": kernel, "stride": stride, "padding": padding,
            "dilation": dilation, "padding_mode": mode, "x": listed(x),
            "w": listed(layer.weight), "b": listed(layer.bias), "y": listed(y), "gy": listed(gy),
            "grad_x": listed(gx), "grad_w": listed(gw), "grad_b": listed(gb)}


# (num_embeddings, dim, padding_idx, max_norm, indices)
EMBEDDINGS = [
    (6, 3, 2, None, [[0, 2, 5], [2, 2, 1]]),
    (5, 4, -1, None, [4, 0, 4, 3]),
    (6, 3, None, 1.0, [[1, 3, 3], [0, 5, 1]]),
    (6, 3, 0, 0.5, [0, 1, 2, 2, 5]),
]


def embedding_case(n, dim, padding_idx, max_norm, indices):
    layer = torch.nn.Embedding(n, dim, padding_idx=padding_idx, max_norm=max_norm)
    with torch.no_grad():  # norms on both sides of max_norm
        layer.weight.copy_(torch.tensor(rng.normal(size=(n, dim))))
        if padding_idx is not None:
            layer.weight[padding_idx] = torch.tensor(rng.normal(size=dim))
    w = layer.weight.detach().clone()  # before max_norm rewrites the looked-up rows
    y = layer(torch.tensor(indices))
    gy = torch.tensor(rng.normal(size=tuple(y.shape)))
    (gw,) = torch.autograd.grad((y * gy).sum(), [layer.weight])
    return {"num_embeddings": n, "dim": dim, "padding_idx": padding_idx, "max_norm": max_norm,
            "indices": indices, "w": listed(w), "y": listed(y), "gy": listed(gy),
            "grad_w": listed(gw)}


def main():
    cases = {"convs": [conv_case(*c) for c in CONVS],
             "embeddings": [embedding_case(*c) for c in EMBEDDINGS]}
    path = pathlib.Path(__file__).with_name("layer_options.json")
    path.write_text(json.dumps({"torch": torch.__version__, **cases}))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
