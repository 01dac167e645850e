"""The seeds' published numbers, reproduced with funcdl's public API and both autodiffs.

Seed 002's worked backprop example (a 2-2-2 sigmoid network; inputs 0.05 and 0.10, weights
0.15 ... 0.55, biases 0.35 and 0.60, targets 0.01 and 0.99) is Matt Mazur's classic
"A Step by Step Backpropagation Example"; the seed's code prints the same quantities. The
reference numbers below are the hand-computed ones published there (9 significant digits),
and a float64 re-derivation in plain Python `math` checks them independently.
"""
import math

import jax
import jax.numpy as jnp
import pytest

import funcdl as fdl

# Seed 002 writes torch's (out, in) weights [[w1, w2], [w3, w4]] and [[w5, w6], [w7, w8]];
# funcdl's Linear stores (in, out), hence the transposes. The seed's bias is one shared scalar
# per layer (torch.tensor([0.35])), i.e. the same value for both units.
W1, W2, W3, W4, W5, W6, W7, W8 = 0.15, 0.20, 0.25, 0.30, 0.40, 0.45, 0.50, 0.55
B1, B2 = 0.35, 0.60
X = [0.05, 0.10]
TARGET = [0.01, 0.99]

PUBLISHED = {
    "o1": 0.75136507, "o2": 0.772928465, "loss": 0.298371109,
    "dw5": 0.082167041, "dw1": 0.000438568,
    "w5_after": 0.35891648, "w6_after": 0.408666186, "w7_after": 0.511301270,
    "w8_after": 0.561370121, "w1_after": 0.149780716, "w2_after": 0.19956143,
    "w3_after": 0.24975114, "w4_after": 0.29950229,
}


def _by_hand():
    """The same example in plain Python floats: forward, loss, and the chain rule by hand."""
    sig = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731
    h1, h2 = sig(X[0] * W1 + X[1] * W2 + B1), sig(X[0] * W3 + X[1] * W4 + B1)
    o1, o2 = sig(h1 * W5 + h2 * W6 + B2), sig(h1 * W7 + h2 * W8 + B2)
    d1, d2 = (o1 - TARGET[0]) * o1 * (1 - o1), (o2 - TARGET[1]) * o2 * (1 - o2)
    dh1, dh2 = (d1 * W5 + d2 * W7) * h1 * (1 - h1), (d1 * W6 + d2 * W8) * h2 * (1 - h2)
    return {"o1": o1, "o2": o2, "loss": 0.5 * ((o1 - TARGET[0]) ** 2 + (o2 - TARGET[1]) ** 2),
            "dw5": d1 * h1, "dw6": d1 * h2, "dw7": d2 * h1, "dw8": d2 * h2,
            "dw1": dh1 * X[0], "dw2": dh1 * X[1], "dw3": dh2 * X[0], "dw4": dh2 * X[1]}


def _network():
    constant = fdl.nn.init.constant
    return fdl.nn.Sequential(
        fdl.nn.Linear(2, w_init=constant(jnp.array([[W1, W3], [W2, W4]])), b_init=constant(B1)),
        fdl.nn.Sigmoid(),
        fdl.nn.Linear(2, w_init=constant(jnp.array([[W5, W7], [W6, W8]])), b_init=constant(B2)),
        fdl.nn.Sigmoid(),
    )


@pytest.mark.parametrize("backend", ["jax", "funcdl"])
def test_seed002_backprop_worked_example(backend, x64):
    model = _network()
    x, target = jnp.array([X]), jnp.array([TARGET])  # one sample: (1, 2)
    params = model.init(jax.random.PRNGKey(0), x)

    def loss_fn(params):
        return fdl.losses.mse_loss(model.apply(params, x), target)

    value_and_grad = jax.value_and_grad if backend == "jax" else fdl.autodiff.value_and_grad
    loss, grads = value_and_grad(loss_fn)(params)
    out = model.apply(params, x)
    hand = _by_hand()

    (w_first, w_second) = grads[0]["w"], grads[2]["w"]
    got = {"o1": out[0, 0], "o2": out[0, 1], "loss": loss,
           "dw5": w_second[0, 0], "dw6": w_second[1, 0], "dw7": w_second[0, 1], "dw8": w_second[1, 1],
           "dw1": w_first[0, 0], "dw2": w_first[1, 0], "dw3": w_first[0, 1], "dw4": w_first[1, 1]}
    for name, expected in hand.items():
        assert float(got[name]) == pytest.approx(expected, rel=1e-12, abs=1e-15), name
    for name in ("o1", "o2", "loss", "dw5", "dw1"):
        assert float(got[name]) == pytest.approx(PUBLISHED[name], abs=1e-8), name

    # One SGD step with lr 0.5 gives the published updated weights.
    opt = fdl.optim.sgd(0.5)
    updates, _ = opt.update(grads, opt.init(params), params)
    new = fdl.optim.apply_updates(params, updates)
    after = {"w1_after": new[0]["w"][0, 0], "w2_after": new[0]["w"][1, 0],
             "w3_after": new[0]["w"][0, 1], "w4_after": new[0]["w"][1, 1],
             "w5_after": new[2]["w"][0, 0], "w6_after": new[2]["w"][1, 0],
             "w7_after": new[2]["w"][0, 1], "w8_after": new[2]["w"][1, 1]}
    for name, value in after.items():
        assert float(value) == pytest.approx(PUBLISHED[name], abs=1e-8), name
