"""Write tests/golden/recurrent.json: PyTorch float64 RNN/LSTM/GRU outputs and gradients.
Run once with the `bench` extra (torch==2.13.0 CPU):

    .venv/bin/python tests/golden/generate_recurrent.py

Each case stores the layer's options, its weights in PyTorch's order (the `_flat_weights`:
weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, then _reverse, then the next layer), the
input and initial state, the output and final state, random cotangents of both and the
gradients of sum(output * g_out) + sum(h_n * g_h) (+ sum(c_n * g_c)) with respect to the
input, the initial state and every weight. Fixed NumPy inputs: re-running reproduces the file.
"""
import json
import pathlib

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(20261204)

# (kind, hidden, options, input shape, with initial state)
CASES = [
    ("RNN", 4, {}, (5, 2, 3), False),
    ("RNN", 3, {"nonlinearity": "relu", "num_layers": 2, "batch_first": True}, (2, 4, 3), True),
    ("LSTM", 4, {}, (5, 2, 3), True),
    ("LSTM", 3, {"num_layers": 2, "bidirectional": True, "batch_first": True}, (2, 4, 3), True),
    ("LSTM", 3, {"bias": False}, (4, 3), False),  # unbatched
    ("GRU", 4, {}, (5, 2, 3), True),
    ("GRU", 3, {"num_layers": 2, "bidirectional": True}, (4, 2, 2), False),
]


def listed(t):
    return t.detach().numpy().tolist()


def case(kind, hidden, options, shape, with_state):
    layer = getattr(torch.nn, kind)(shape[-1], hidden, **options)
    with torch.no_grad():
        for w in layer._flat_weights:
            w.copy_(torch.tensor(rng.uniform(-0.6, 0.6, size=tuple(w.shape))))
    x = torch.tensor(rng.normal(size=shape), requires_grad=True)
    layers = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    batched = len(shape) == 3
    batch = (shape[0] if options.get("batch_first") else shape[1]) if batched else None
    state_shape = (layers, batch, hidden) if batched else (layers, hidden)
    inputs = [x]
    if with_state:
        h0 = torch.tensor(rng.normal(size=state_shape), requires_grad=True)
        inputs.append(h0)
        if kind == "LSTM":
            c0 = torch.tensor(rng.normal(size=state_shape), requires_grad=True)
            inputs.append(c0)
            out, (h_n, c_n) = layer(x, (h0, c0))
        else:
            out, h_n = layer(x, h0)
    else:
        out, state = layer(x)
        h_n, c_n = state if kind == "LSTM" else (state, None)
    if kind != "LSTM":
        c_n = None
    g_out = torch.tensor(rng.normal(size=tuple(out.shape)))
    g_h = torch.tensor(rng.normal(size=tuple(h_n.shape)))
    total = (out * g_out).sum() + (h_n * g_h).sum()
    g_c = None
    if c_n is not None:
        g_c = torch.tensor(rng.normal(size=tuple(c_n.shape)))
        total = total + (c_n * g_c).sum()
    weights = list(layer._flat_weights)
    grads = torch.autograd.grad(total, inputs + weights)
    return {"kind": kind, "hidden": hidden, "options": options, "x": listed(x),
            "h0": listed(inputs[1]) if with_state else None,
            "c0": listed(inputs[2]) if with_state and kind == "LSTM" else None,
            "weight_names": list(layer._flat_weights_names),
            "weights": [listed(w) for w in weights], "out": listed(out), "h_n": listed(h_n),
            "c_n": None if c_n is None else listed(c_n), "g_out": listed(g_out),
            "g_h": listed(g_h), "g_c": None if g_c is None else listed(g_c),
            "grad_x": listed(grads[0]),
            "grad_h0": listed(grads[1]) if with_state else None,
            "grad_c0": listed(grads[2]) if with_state and kind == "LSTM" else None,
            "grad_weights": [listed(g) for g in grads[len(inputs):]]}


def main():
    path = pathlib.Path(__file__).with_name("recurrent.json")
    path.write_text(json.dumps({"torch": torch.__version__, "cases": [case(*c) for c in CASES]}))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
