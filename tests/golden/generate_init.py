"""Write tests/golden/init.json: what torch.nn.init computes, for tests/test_init.py. Run once with
the `bench` extra (torch==2.13.0 CPU):

    .venv/bin/python tests/golden/generate_init.py

For the weights of torch.nn.Linear, Conv1d, Conv2d (several shapes and groups), Embedding and a
bare rank-2 `(out, in)` weight (as MultiheadAttention and the RNNs store theirs), it records
`_calculate_fan_in_and_fan_out`, and the exact std or bound that `kaiming_uniform_`,
`kaiming_normal_` (both modes, several nonlinearities and `a`), `xavier_uniform_` and
`xavier_normal_` (several gains) draw with: the weight is a Tensor subclass that records the
arguments of the `uniform_(-bound, bound)` or `normal_(0, std)` call each initializer ends in,
so the numbers are PyTorch's own, not a formula written again here. Also `calculate_gain`.
Nothing is random; re-running reproduces the file exactly.
"""
import json
import math
import pathlib

import torch

init = torch.nn.init


class Recording(torch.Tensor):
    """A weight that remembers the distribution torch.nn.init last drew it from."""
    calls = []

    def uniform_(self, low=0.0, high=1.0, *, generator=None):
        Recording.calls.append({"low": low, "high": high})
        return super().uniform_(low, high, generator=generator)

    def normal_(self, mean=0.0, std=1.0, *, generator=None):
        Recording.calls.append({"mean": mean, "std": std})
        return super().normal_(mean, std, generator=generator)


def drawn_with(initializer, shape, **kwargs):
    Recording.calls.clear()
    initializer(torch.empty(shape).as_subclass(Recording), **kwargs)
    (call,) = Recording.calls
    return call


KAIMING = [{"a": a, "mode": mode, "nonlinearity": nonlinearity}
           for mode in ("fan_in", "fan_out")
           for nonlinearity, a in (("leaky_relu", 0.0), ("leaky_relu", math.sqrt(5)),
                                   ("leaky_relu", 0.2), ("relu", 0.0), ("tanh", 0.0),
                                   ("linear", 0.0), ("selu", 0.0))]
XAVIER = [{"gain": gain} for gain in (1.0, 0.5, 5.0 / 3, math.sqrt(2.0))]


def weight_case(layer, description):
    shape = tuple(layer.weight.shape)
    fan_in, fan_out = init._calculate_fan_in_and_fan_out(layer.weight)
    scales = []
    for kwargs in KAIMING:
        uniform = drawn_with(init.kaiming_uniform_, shape, **kwargs)
        normal = drawn_with(init.kaiming_normal_, shape, **kwargs)
        assert uniform["low"] == -uniform["high"] and normal["mean"] == 0
        scales.append({"init": "kaiming", **kwargs, "bound": uniform["high"], "std": normal["std"]})
    for kwargs in XAVIER:
        uniform = drawn_with(init.xavier_uniform_, shape, **kwargs)
        normal = drawn_with(init.xavier_normal_, shape, **kwargs)
        assert uniform["low"] == -uniform["high"] and normal["mean"] == 0
        scales.append({"init": "xavier", **kwargs, "bound": uniform["high"], "std": normal["std"]})
    return {**description, "torch_shape": list(shape), "fan_in": fan_in, "fan_out": fan_out,
            "scales": scales}


def linear(in_features, out_features):
    return weight_case(torch.nn.Linear(in_features, out_features),
                       {"layer": "Linear", "in_features": in_features, "out_features": out_features})


def conv(kind, in_channels, out_channels, kernel_size, groups=1):
    layer = getattr(torch.nn, kind)(in_channels, out_channels, kernel_size, groups=groups)
    return weight_case(layer, {"layer": kind, "in_channels": in_channels,
                               "out_channels": out_channels, "kernel_size": kernel_size,
                               "groups": groups})


def embedding(num_embeddings, embedding_dim):
    return weight_case(torch.nn.Embedding(num_embeddings, embedding_dim),
                       {"layer": "Embedding", "num_embeddings": num_embeddings,
                        "embedding_dim": embedding_dim})


class Bare(torch.nn.Module):
    """A bare `(out, in)` parameter, as MultiheadAttention's in_proj_weight (3E, E)."""
    def __init__(self, shape):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(shape))


def bare(shape):
    return weight_case(Bare(shape), {"layer": None})


GAINS = [("linear", None), ("sigmoid", None), ("tanh", None),
         ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)),
         ("leaky_relu", 0), ("selu", None), ("conv1d", None), ("conv2d", None),
         ("conv_transpose2d", None)]

golden = {
    "torch_version": torch.__version__,
    "weights": [
        linear(4, 3), linear(784, 128), linear(50, 4000), linear(1, 7),
        conv("Conv2d", 32, 64, 3),  # the case of the issue: fan_in 288, fan_out 576
        conv("Conv2d", 3, 16, (5, 3)), conv("Conv2d", 8, 12, 3, groups=4),
        conv("Conv2d", 6, 6, 1, groups=6), conv("Conv1d", 4, 10, 5), conv("Conv1d", 6, 4, 3, groups=2),
        embedding(10, 3),
        bare((48, 16)), bare((20, 5)),
    ],
    "gains": [{"nonlinearity": name, "param": param, "gain": init.calculate_gain(name, param)}
              for name, param in GAINS],
}

path = pathlib.Path(__file__).parent / "init.json"
path.write_text(json.dumps(golden, indent=1) + "\n")
print(f"wrote {path}")
