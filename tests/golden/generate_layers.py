"""Write tests/golden/layers.json: PyTorch float64 reference values and gradients for
tests/test_ops_layers.py and tests/test_layers.py. Run once with the `bench` extra
(torch==2.13.0 CPU):

    .venv/bin/python tests/golden/generate_layers.py

Each case stores its inputs, the output y, a random cotangent `gy` and the gradients of
sum(y * gy) with respect to every floating input (`grad_<name>`). Inputs come from a fixed
NumPy generator, so re-running reproduces the file exactly.
"""
import json
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(20261201)


def tensor(shape, scale=1.0):
    return torch.tensor(rng.normal(size=shape) * scale, requires_grad=True)


def listed(t):
    return t.detach().numpy().tolist()


def with_gradients(inputs, y, **extra):
    """The case: inputs, y, a cotangent gy and d(sum(y * gy))/d(input) for each input."""
    gy = torch.tensor(rng.normal(size=tuple(y.shape)))
    floats = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.requires_grad}
    grads = torch.autograd.grad((y * gy).sum(), list(floats.values()))
    case = {k: listed(v) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    case.update(extra, y=listed(y), gy=listed(gy))
    case.update({f"grad_{k}": listed(g) for k, g in zip(floats, grads)})
    return case


# (x shape, C_out, kernel, stride, padding, dilation, groups, bias): strides, paddings,
# dilations and groups over odd sizes, "same" with even kernels, 1x1, unbatched, size-1 axes.
CONV2D = [
    ((2, 3, 7, 6), 4, 3, 1, 0, 1, 1, True),
    ((2, 3, 7, 6), 4, 3, 2, 1, 1, 1, True),
    ((1, 4, 9, 8), 6, (3, 2), (2, 3), (1, 2), (2, 1), 2, True),
    ((2, 4, 8, 7), 4, 3, 1, "same", 2, 4, False),
    ((2, 2, 6, 5), 3, (2, 4), 1, "same", 1, 1, True),
    ((1, 3, 5, 5), 2, 5, 1, "valid", 1, 1, True),
    ((2, 6, 5, 7), 9, 1, 3, 0, 1, 3, True),
    ((3, 2, 1, 6), 2, (1, 3), (1, 2), (0, 1), 1, 2, True),
    ((3, 8, 8), 5, 3, 2, 1, 1, 1, True),  # unbatched (C, H, W)
    ((2, 1, 11, 4), 3, (4, 2), (3, 1), (2, 0), (2, 3), 1, True),
]
CONV1D = [
    ((2, 3, 11), 4, 3, 2, 1, 2, 1, True),
    ((1, 4, 9), 2, 4, 1, "same", 1, 2, True),
    ((3, 7), 5, 2, 3, 0, 1, 1, False),  # unbatched (C, L)
]
# (x shape, kernel, stride, padding, input kind): "relu" has many exact zeros (ties),
# "integers" many equal values, "normal" none.
POOL = [
    ((2, 3, 6, 6), 2, None, 0, "normal"),
    ((2, 2, 7, 5), 3, 2, 1, "relu"),
    ((1, 2, 6, 7), (2, 3), (1, 2), (1, 1), "integers"),
    ((2, 2, 5, 5), 3, 1, 1, "relu"),
    ((3, 5, 4), 2, 1, 0, "integers"),  # unbatched (C, H, W)
    ((1, 1, 4, 4), 3, 1, 1, "zeros"),  # every window a tie, windows overlap
]


def conv_cases(op, configs, spatial):
    cases = []
    for x_shape, c_out, kernel, stride, padding, dilation, groups, bias in configs:
        kernel_size = (kernel,) * spatial if isinstance(kernel, int) else kernel
        c_in = x_shape[-spatial - 1]
        inputs = {"x": tensor(x_shape), "w": tensor((c_out, c_in // groups, *kernel_size), 0.5)}
        if bias:
            inputs["b"] = tensor((c_out,))
        y = op(inputs["x"], inputs["w"], inputs.get("b"), stride=stride, padding=padding,
               dilation=dilation, groups=groups)
        cases.append(with_gradients(inputs, y, stride=stride, padding=padding,
                                    dilation=dilation, groups=groups))
    return cases


def pool_input(shape, kind):
    if kind == "relu":
        return torch.relu(torch.tensor(rng.normal(size=shape))).requires_grad_()
    if kind == "integers":
        return torch.tensor(rng.integers(0, 3, size=shape).astype(np.float64), requires_grad=True)
    if kind == "zeros":
        return torch.zeros(shape, requires_grad=True)
    return tensor(shape)


def pool_cases(op, **options):
    cases = []
    for shape, kernel, stride, padding, kind in POOL:
        x = pool_input(shape, kind)
        y = op(x, kernel, stride, padding, **options)
        cases.append(with_gradients({"x": x}, y, kernel_size=kernel, stride=stride,
                                    padding=padding, kind=kind))
    return cases


def max_pool_non_finite():
    """Max pooling where the choice of element is the question: all -inf inputs with padding
    (PyTorch never selects a padded position: an all -inf window's gradient goes to its first
    element inside the input) and NaN in overlapping windows (PyTorch selects a window's last
    NaN). Its own generator, so that the other cases keep their numbers."""
    local = np.random.default_rng(20261203)
    cases = []
    for shape, kernel, stride, padding, kind in [
            ((1, 1, 4, 4), 3, 1, 1, "neg_inf"), ((2, 2, 5, 6), (3, 2), (2, 1), (1, 1), "neg_inf"),
            ((2, 2, 6, 6), 3, 1, 1, "nan"), ((1, 3, 5, 5), (2, 3), (1, 2), (1, 1), "nan"),
            ((2, 2, 5, 5), 3, 2, 1, "mixed")]:
        if kind == "neg_inf":
            values = np.full(shape, -np.inf)
        else:
            values = local.normal(size=shape)
            values[local.random(shape) < 0.25] = np.nan
            if kind == "mixed":  # -inf rows along the padded border, NaN and finite values
                values[..., 0, :] = -np.inf
                values[..., :, -1] = -np.inf
        x = torch.tensor(values, requires_grad=True)
        y = F.max_pool2d(x, kernel, stride, padding)
        gy = torch.tensor(local.normal(size=tuple(y.shape)))
        (grad,) = torch.autograd.grad(y, x, gy)
        cases.append({"x": listed(x), "y": listed(y), "gy": listed(gy), "grad_x": listed(grad),
                      "kernel_size": kernel, "stride": stride, "padding": padding, "kind": kind})
    return cases


def elementwise():
    x = torch.cat([torch.linspace(-6, 6, 25), torch.tensor([0.0, -0.0, 1e-8, 30.0, -30.0])])
    cases = {}
    for name, fn in {"erf": torch.erf, "gelu": F.gelu,
                     "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"), "silu": F.silu}.items():
        leaf = x.clone().requires_grad_()
        cases[name] = with_gradients({"x": leaf}, fn(leaf))
    return cases


def take_cases():
    x = tensor((5, 3))
    indices = np.array([[0, 4, 4], [2, 0, 4]])  # repeated indices accumulate
    rows = with_gradients({"x": x}, x[torch.tensor(indices)], indices=indices.tolist(), axis=0)
    x = tensor((2, 4, 3))
    indices = np.array([3, 1, 3, 3])
    middle = with_gradients({"x": x}, torch.index_select(x, 1, torch.tensor(indices)),
                            indices=indices.tolist(), axis=1)
    return [rows, middle]


def embedding():
    layer = torch.nn.Embedding(6, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(rng.normal(size=(6, 3))))
    indices = np.array([[1, 5, 1], [0, 1, 2]])
    y = layer(torch.tensor(indices))
    return with_gradients({"w": layer.weight}, y, indices=indices.tolist())


def layer_norm():
    cases = []
    for x_shape, normalized_shape, affine in [((2, 3, 4), (4,), True), ((2, 3, 4), (3, 4), True),
                                              ((5, 6), (6,), False)]:
        layer = torch.nn.LayerNorm(normalized_shape, elementwise_affine=affine)
        inputs = {"x": tensor(x_shape, 3.0)}
        if affine:
            with torch.no_grad():
                layer.weight.copy_(torch.tensor(rng.normal(size=normalized_shape)))
                layer.bias.copy_(torch.tensor(rng.normal(size=normalized_shape)))
            inputs.update(w=layer.weight, b=layer.bias)
        cases.append(with_gradients(inputs, layer(inputs["x"]),
                                    normalized_shape=list(normalized_shape), affine=affine))
    return cases


def torch_conv2d_module():
    """A torch.nn.Conv2d with its own default init (seeded): funcdl given its weight must give
    its output, in float32 as PyTorch's default dtype would."""
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(3, 5, 3, stride=2, padding=1, dtype=torch.float32)
    x = torch.tensor(rng.normal(size=(2, 3, 9, 8)), dtype=torch.float32)
    return {"x": listed(x), "weight": listed(layer.weight), "bias": listed(layer.bias),
            "y": listed(layer(x)), "fan_in": 27}


def main():
    golden = {
        "conv2d": conv_cases(F.conv2d, CONV2D, 2),
        "conv1d": conv_cases(F.conv1d, CONV1D, 1),
        "max_pool2d": pool_cases(F.max_pool2d),
        "avg_pool2d": pool_cases(F.avg_pool2d, count_include_pad=True),
        "max_pool2d_non_finite": max_pool_non_finite(),
        "elementwise": elementwise(),
        "take": take_cases(),
        "embedding": embedding(),
        "layer_norm": layer_norm(),
        "torch_conv2d_module": torch_conv2d_module(),
    }
    path = pathlib.Path(__file__).with_name("layers.json")
    path.write_text(json.dumps(golden) + "\n")
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
