"""Write tests/golden/norms.json: PyTorch float64 GroupNorm and RMSNorm outputs and gradients.
Run once with the `bench` extra (torch==2.13.0 CPU):

    .venv/bin/python tests/golden/generate_norms.py

Each case stores the options, the input, the weights (random, so that the checks see them),
the output, a random cotangent and the gradients of sum(out * g_out) for the input and each
weight. One float16 case of RMSNorm (eps=None: PyTorch normalises it in float32 with float32's
epsilon) stores its output only. Fixed NumPy draws: re-running reproduces the file.
"""
import json
import pathlib

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(20261206)

# (layer, constructor options, input shape)
CASES = [
    ("GroupNorm", {"num_groups": 2, "num_channels": 6}, (3, 6, 5)),
    ("GroupNorm", {"num_groups": 3, "num_channels": 6, "eps": 1e-3}, (2, 6, 4, 3)),
    ("GroupNorm", {"num_groups": 1, "num_channels": 4}, (2, 4, 3, 3)),
    ("GroupNorm", {"num_groups": 4, "num_channels": 4, "affine": False}, (2, 4, 5)),
    ("GroupNorm", {"num_groups": 2, "num_channels": 4}, (3, 4)),
    ("RMSNorm", {"normalized_shape": 5}, (3, 4, 5)),
    ("RMSNorm", {"normalized_shape": (3, 4), "eps": 1e-2}, (2, 3, 4)),
    ("RMSNorm", {"normalized_shape": 6, "elementwise_affine": False}, (4, 6)),
]


def listed(t):
    return t.detach().double().numpy().tolist()


def case(kind, options, shape):
    layer = getattr(torch.nn, kind)(**options)
    with torch.no_grad():
        for w in layer.parameters():
            w.copy_(torch.tensor(1.0 + 0.3 * rng.normal(size=tuple(w.shape))))
    # a large mean as well: the statistics must not cancel
    x = torch.tensor(rng.normal(size=shape) * 2 + 0.5, requires_grad=True)
    out = layer(x)
    g_out = torch.tensor(rng.normal(size=tuple(out.shape)))
    weights = dict(layer.named_parameters())
    grads = torch.autograd.grad((out * g_out).sum(), [x] + list(weights.values()))
    return {"kind": kind, "options": options, "x": listed(x),
            "weights": {k: listed(v) for k, v in weights.items()}, "out": listed(out),
            "g_out": listed(g_out), "grad_x": listed(grads[0]),
            "grad_weights": {k: listed(g) for k, g in zip(weights, grads[1:])}}


def half_rms_case():
    """float16, eps=None, tiny values: the default epsilon is float32's, not float16's."""
    x = torch.tensor(rng.normal(size=(2, 4)) * 1e-3, dtype=torch.float16)
    out = torch.nn.RMSNorm(4, dtype=torch.float16)(x)
    return {"x": listed(x), "out": listed(out)}


def main():
    path = pathlib.Path(__file__).with_name("norms.json")
    path.write_text(json.dumps({"torch": torch.__version__, "cases": [case(*c) for c in CASES],
                                "rms_float16": half_rms_case()}))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
