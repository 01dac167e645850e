"""Seed 002, backpropagation by hand: the worked 2-2-2 sigmoid network, one SGD step.

Inputs (0.05, 0.10), targets (0.01, 0.99); hidden weights w1..w4 = 0.15, 0.20, 0.25, 0.30 and
bias 0.35; output weights w5..w8 = 0.40, 0.45, 0.50, 0.55 and bias 0.60; sigmoid after both
layers; loss `0.5 * ((o1 - 0.01)² + (o2 - 0.99)²)`, which is PyTorch's `MSELoss` over the two
outputs; one SGD step with lr 0.5. The seed computes it three ways (plain Python, `nn.Linear`,
`optim.SGD`); its hand-computed numbers are those of Matt Mazur's "A Step by Step
Backpropagation Example" (2015), which this example prints beside what both autodiffs give.

As in the seed's PyTorch code (`bias.data = torch.tensor([0.35])`), each layer has ONE bias
shared by its two units: shape (1,), broadcast; its gradient is the sum over the units. The
weights are stored as `x @ w` wants them, `w[i, j]` from input i to unit j, so
`w1 = [[w1, w3], [w2, w4]]` (PyTorch's `weight` is the transpose).
Computed in float64, as the seed's plain-Python version does.
"""
import jax
import jax.numpy as jnp

import funcdl as fdl
from funcdl import ops

SEED = "002"
SHOWS = "the worked 2-2-2 sigmoid example: forward, loss, gradients, one SGD step, both autodiffs"
OPTIONS = ("lr", "backend")
INPUT, TARGET = [0.05, 0.10], [0.01, 0.99]
# Mazur (2015), to the digits published; the seed's figures show the same computation.
PUBLISHED = {
    "h1": 0.593269992, "h2": 0.596884378, "o1": 0.75136507, "o2": 0.772928465,
    "loss": 0.298371109,
    "dw1": 0.000438568, "dw2": 0.000877135, "dw3": 0.000497713, "dw4": 0.000995425,
    "dw5": 0.082167041, "dw6": 0.082667628, "dw7": -0.022602540, "dw8": -0.022740242,
    "w1": 0.149780716, "w2": 0.19956143, "w3": 0.24975114, "w4": 0.29950229,
    "w5": 0.35891648, "w6": 0.408666186, "w7": 0.511301270, "w8": 0.561370121,
}


def seed_params(dtype=jnp.float64):
    """The seed's starting weights: {"w1": (2, 2), "b1": (1,), "w2": (2, 2), "b2": (1,)}."""
    return {"w1": jnp.array([[0.15, 0.25], [0.20, 0.30]], dtype), "b1": jnp.array([0.35], dtype),
            "w2": jnp.array([[0.40, 0.50], [0.45, 0.55]], dtype), "b2": jnp.array([0.60], dtype)}


def hidden(params, x):
    """x `(..., 2)` -> (h1, h2) `(..., 2)`."""
    return ops.sigmoid(x @ params["w1"] + params["b1"])


def network(params, x):
    """x `(..., 2)` -> (o1, o2) `(..., 2)`."""
    return ops.sigmoid(hidden(params, x) @ params["w2"] + params["b2"])


def loss_fn(params, x, target):
    """0.5 * sum of squared errors over the two outputs = MSELoss's mean."""
    return fdl.losses.mse_loss(network(params, x), target)


def by_name(params):
    """w1..w8 in the seed's numbering (w1, w2 into h1; w3, w4 into h2; w5, w6 into o1; ...)."""
    w1, w2 = params["w1"], params["w2"]
    return {"w1": w1[0, 0], "w2": w1[1, 0], "w3": w1[0, 1], "w4": w1[1, 1],
            "w5": w2[0, 0], "w6": w2[1, 0], "w7": w2[0, 1], "w8": w2[1, 1]}


def one_step(grad, lr):
    """Forward values, loss, gradients and the params after one SGD step, by `grad`."""
    x, target = jnp.array(INPUT, jnp.float64), jnp.array(TARGET, jnp.float64)
    params = seed_params()
    (h1, h2), (o1, o2) = hidden(params, x), network(params, x)
    loss, gradients = grad(loss_fn)(params, x, target)
    optimizer = fdl.optim.sgd(lr)
    updates, _ = optimizer.update(gradients, optimizer.init(params), params)
    new = fdl.optim.apply_updates(params, updates)
    values = {"h1": h1, "h2": h2, "o1": o1, "o2": o2, "loss": loss,
              **{"d" + name: g for name, g in by_name(gradients).items()}, **by_name(new),
              "db1 (shared)": gradients["b1"][0], "db2 (shared)": gradients["b2"][0],
              "b1": new["b1"][0], "b2": new["b2"][0]}
    return {name: float(value) for name, value in values.items()}


def run(quick=False, out_dir="runs/backprop", *, lr=0.5, backend="both"):
    """Print the table: name, published, jax.grad, fdl.autodiff. Returns the three columns.

    quick: no effect (the example is one step). backend: "jax", "funcdl" or "both".
    """
    columns = {}
    with jax.enable_x64(True):
        if backend in ("jax", "both"):
            columns["jax"] = one_step(jax.value_and_grad, lr)
        if backend in ("funcdl", "both"):
            columns["funcdl"] = one_step(fdl.autodiff.value_and_grad, lr)
    print(f"{'':>14} {'published':>13} " + " ".join(f"{name:>13}" for name in columns))
    for name in next(iter(columns.values())):
        published = f"{PUBLISHED[name]:13.9f}" if name in PUBLISHED and lr == 0.5 else " " * 13
        print(f"{name:>14} {published} " + " ".join(f"{c[name]:13.9f}" for c in columns.values()))
    deviation = max(abs(column[name] - PUBLISHED[name]) for column in columns.values()
                    for name in PUBLISHED)
    print(f"largest difference from the published values: {deviation:.2e}")
    return {"quick": quick, "published": PUBLISHED, **columns, "max_deviation": deviation,
            "pictures": []}


def verdict(results):
    """Passes if both autodiffs give every published number to 1e-6 (quick or not: one step)."""
    reference = ("every published number to 1e-6 (the quick run is the full one step)"
                 if results["quick"] else
                 "h1 0.593270, o1 0.751365, loss 0.298371, dw5 0.082167, w5' 0.358916")
    return (reference, f"all {len(PUBLISHED)} published numbers within "
            f"{results['max_deviation']:.1e}", results["max_deviation"] < 1e-6)

