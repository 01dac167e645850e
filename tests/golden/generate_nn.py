"""Write tests/golden/nn.json: PyTorch float64 reference values for tests/test_nn.py and
tests/test_init.py. Run once with the `bench` extra (torch==2.13.0 CPU):

    .venv/bin/python tests/golden/generate_nn.py

Inputs are drawn from a fixed NumPy generator, so re-running reproduces the file exactly.
Weights are stored in PyTorch's `(out, in)` layout under `weight`; the tests transpose them
into funcdl's `(in, out)`.
"""
import json
import pathlib

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(20240601)


def tensor(shape, scale=1.0):
    return torch.tensor(rng.normal(size=shape) * scale)


def listed(t):
    return t.detach().numpy().tolist()


def linear_case(x_shape, in_features, out_features, bias):
    layer = torch.nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(tensor((out_features, in_features)))
        if bias:
            layer.bias.copy_(tensor((out_features,)))
    x = tensor(x_shape)
    case = {"x": listed(x), "weight": listed(layer.weight), "y": listed(layer(x))}
    if bias:
        case["bias"] = listed(layer.bias)
    return case


def activations():
    # Exact zeros (kinks), negatives, and logits large enough to overflow a naive softmax.
    x = torch.cat([tensor((2, 3, 4), 3.0).flatten()[:-4],
                   torch.tensor([0.0, -0.0, 800.0, -800.0])]).reshape(2, 3, 4)
    layers = {
        "ReLU()": torch.nn.ReLU(), "LeakyReLU(0.01)": torch.nn.LeakyReLU(0.01),
        "LeakyReLU(0.2)": torch.nn.LeakyReLU(0.2), "Sigmoid()": torch.nn.Sigmoid(),
        "Tanh()": torch.nn.Tanh(),
        "Softmax(axis=-1)": torch.nn.Softmax(dim=-1), "Softmax(axis=1)": torch.nn.Softmax(dim=1),
        "LogSoftmax(axis=-1)": torch.nn.LogSoftmax(dim=-1),
        "LogSoftmax(axis=0)": torch.nn.LogSoftmax(dim=0),
        "Flatten()": torch.nn.Flatten(),
    }
    return {"x": listed(x), "y": {name: listed(layer(x)) for name, layer in layers.items()}}


def seed_002():
    """Section 2.2.4 of seed 002: a 2-2-2 sigmoid network with fixed weights, written as the
    seed's PyTorch version ("方式2"), except that each bias is given per unit (the seed shares
    one scalar per layer; per unit, its gradient is per unit too). Loss: the seed's
    0.5 * sum((o - target)^2)."""
    x = torch.tensor([[0.05, 0.10]])
    layer1, layer2 = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        layer1.weight.copy_(torch.tensor([[0.15, 0.20], [0.25, 0.30]]))
        layer1.bias.copy_(torch.tensor([0.35, 0.35]))
        layer2.weight.copy_(torch.tensor([[0.40, 0.45], [0.50, 0.55]]))
        layer2.bias.copy_(torch.tensor([0.60, 0.60]))
    target = torch.tensor([[0.01, 0.99]])
    h = torch.sigmoid(layer1(x))
    o = torch.sigmoid(layer2(h))
    loss = 0.5 * ((o - target) ** 2).sum()
    loss.backward()
    return {
        "x": listed(x), "target": listed(target), "h": listed(h), "o": listed(o),
        "loss": loss.item(),
        "weights": [listed(layer1.weight), listed(layer2.weight)],
        "biases": [listed(layer1.bias), listed(layer2.bias)],
        "weight_grads": [listed(layer1.weight.grad), listed(layer2.weight.grad)],
        "bias_grads": [listed(layer1.bias.grad), listed(layer2.bias.grad)],
    }


def initializers():
    """torch.nn.init's gains, and its fans of weights given in PyTorch's layout."""
    gains = {"linear": [None], "sigmoid": [None], "tanh": [None], "relu": [None],
             "leaky_relu": [None, 0.2, 5 ** 0.5], "selu": [None]}
    torch_shapes = [(5, 3), (300, 20), (32, 16, 3, 3), (8, 4, 5)]
    fans = []
    for shape in torch_shapes:
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
        fans.append({"torch_shape": list(shape), "fan_in": fan_in, "fan_out": fan_out})
    return {
        "gains": [{"nonlinearity": name, "param": param,
                   "gain": torch.nn.init.calculate_gain(name, param)}
                  for name, params in gains.items() for param in params],
        "fans": fans,
    }


golden = {
    "torch_version": torch.__version__,
    "linear": linear_case((3, 4), 4, 5, bias=True),
    "linear_batched": linear_case((2, 1, 3, 4), 4, 2, bias=True),
    "linear_vector": linear_case((4,), 4, 3, bias=True),
    "linear_no_bias": linear_case((3, 4), 4, 5, bias=False),
    "activations": activations(),
    "seed_002": seed_002(),
    "init": initializers(),
}
path = pathlib.Path(__file__).with_name("nn.json")
path.write_text(json.dumps(golden, indent=1) + "\n")
print(f"wrote {path} ({path.stat().st_size} bytes)")
