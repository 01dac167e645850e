"""PyTorch golden values for second order at kinks: `.venv/bin/python tests/golden/generate_second_order.py`.

Writes `tests/golden/second_order.json`: per case the input x (float64), PyTorch's gradient
(`torch.autograd.grad`) and Hessian (`torch.autograd.functional.hessian`) of the same function
that `tests/test_autodiff_second_order.py` (`kink_cases`) writes with `fdl.ops`: relu, abs,
leaky_relu, max (ties), maximum (ties), clip (at its bounds) and pow at the points where they
are not twice differentiable. `nan_cases` holds the one case whose PyTorch second derivative
is NaN (d²(0 ** y)/dy²). Needs torch (the `bench` extra).
"""
import json
import pathlib

OUTPUT = pathlib.Path(__file__).with_name("second_order.json")


def torch_cases():
    import torch
    return {
        "relu_at_0": ([-1.0, 0.0, 0.5, 0.0], lambda x: (torch.relu(x) * x).sum()),
        "abs_at_0": ([-1.0, 0.0, 0.5, 0.0], lambda x: (torch.abs(x) * x).sum()),
        "leaky_relu_at_0": ([-1.0, 0.0, 0.5, 0.0],
                            lambda x: (torch.nn.functional.leaky_relu(x, 0.1) * x).sum()),
        "max_ties": ([1.0, 0.3, 1.0, -2.0], lambda x: torch.amax(x) * torch.amax(x)),
        "max_axis_ties": ([[1.0, 1.0, 0.2], [0.5, -0.1, 0.5]],
                          lambda x: (torch.amax(x, dim=1) * torch.amax(x, dim=1)).sum()),
        "maximum_ties": ([0.3, -1.0, 0.7, 2.0, 0.3], lambda x: (torch.maximum(x, x.flip(0)) * x).sum()),
        "clip_at_bounds": ([-0.5, 0.5, 0.2, 1.0, -1.0], lambda x: (torch.clamp(x, -0.5, 0.5) * x).sum()),
        "sqrt_at_0": ([0.0, 1.5], lambda x: (torch.sqrt(x * x + 1.0) * x).sum()),
        "power_base_0": ([0.0, 1.0, -0.5], lambda x: (x ** 3).sum()),
    }


def build():
    import torch
    torch.set_default_dtype(torch.float64)
    cases = {}
    for name, (x, f) in torch_cases().items():
        x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(f(x), x)
        hessian = torch.autograd.functional.hessian(f, x.detach())
        cases[name] = {"x": x.tolist(), "grad": grad.tolist(), "hessian": hessian.tolist()}
    x = torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)
    y = torch.tensor([2.0, 0.5, 1.5], dtype=torch.float64)
    hessian = torch.autograd.functional.hessian(lambda a, b: (a ** b).sum(), (x, y))
    nan_cases = {"power_zero_base": {
        "x": x.tolist(), "y": y.tolist(),
        "hessian": [[_nan_safe(h.tolist()) for h in row] for row in hessian]}}
    return {"torch": torch.__version__, "cases": cases, "nan_cases": nan_cases}


def _nan_safe(values):
    """JSON has no NaN / inf: write them as strings NumPy reads back ("nan", "inf")."""
    if isinstance(values, list):
        return [_nan_safe(v) for v in values]
    return values if values == values and abs(values) != float("inf") else str(values)


if __name__ == "__main__":
    OUTPUT.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {OUTPUT}")
