"""Write tests/golden/batchnorm.json: PyTorch float64 BatchNorm1d/BatchNorm2d over several
training steps (outputs, gradients, running statistics after each step), then eval outputs.
Run once with the `bench` extra (torch==2.13.0 CPU):

    .venv/bin/python tests/golden/generate_batchnorm.py

Each step feeds a new batch x in training mode and stores y, a cotangent gy, the gradients of
sum(y * gy) with respect to x, weight and bias, and running_mean, running_var and
num_batches_tracked after the step; then one more batch in eval mode (y and its gradients).
Inputs come from a fixed NumPy generator, so re-running reproduces the file exactly.
"""
import json
import pathlib

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(20261202)

# (kind, x shape, momentum, affine, track_running_stats, steps)
CASES = [
    ("BatchNorm1d", (6, 3), 0.1, True, True, 3),
    ("BatchNorm1d", (4, 3, 5), None, True, True, 3),
    ("BatchNorm2d", (3, 2, 4, 5), 0.3, True, True, 3),
    ("BatchNorm2d", (2, 3, 3, 3), 0.1, False, True, 2),
    ("BatchNorm2d", (2, 2, 3, 4), 0.1, True, False, 1),
]


def listed(t):
    return t.detach().numpy().tolist()


def run(kind, shape, momentum, affine, track, steps):
    layer = getattr(torch.nn, kind)(shape[1], momentum=momentum, affine=affine,
                                    track_running_stats=track)
    if affine:
        with torch.no_grad():  # not the ones/zeros of init, so the gradients say something
            layer.weight.copy_(torch.tensor(rng.normal(size=shape[1])))
            layer.bias.copy_(torch.tensor(rng.normal(size=shape[1])))
    case = {"kind": kind, "momentum": momentum, "affine": affine, "track_running_stats": track,
            "w": listed(layer.weight) if affine else None,
            "b": listed(layer.bias) if affine else None, "steps": []}
    for mode in ["train"] * steps + ["eval"]:
        layer.train(mode == "train")
        x = torch.tensor(rng.normal(size=shape) * 2 + 0.5, requires_grad=True)
        y = layer(x)
        gy = torch.tensor(rng.normal(size=shape))
        inputs = [x] + ([layer.weight, layer.bias] if affine else [])
        grads = torch.autograd.grad((y * gy).sum(), inputs)
        step = {"mode": mode, "x": listed(x), "y": listed(y), "gy": listed(gy),
                "grad_x": listed(grads[0])}
        if affine:
            step.update(grad_w=listed(grads[1]), grad_b=listed(grads[2]))
        if track:
            step.update(mean=listed(layer.running_mean), var=listed(layer.running_var),
                        count=int(layer.num_batches_tracked))
        case["steps"].append(step)
    return case


def main():
    cases = [run(*case) for case in CASES]
    path = pathlib.Path(__file__).with_name("batchnorm.json")
    path.write_text(json.dumps({"torch": torch.__version__, "cases": cases}))
    print(f"wrote {path} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
