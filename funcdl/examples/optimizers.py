"""Seed 002, gradient descent and its refinements, on the worked 2-2-2 network of `backprop`.

The seed trains the same network (inputs (0.05, 0.10), targets (0.01, 0.99), one shared bias
per layer) for 100 epochs with each optimizer and its hyperparameters:
`SGD(lr=0.5)` (its backprop step), `SGD(lr=1, momentum=0.5)`, `Adagrad(lr=1)`,
`RMSprop(lr=0.01, momentum=0.5)` and `Adam(lr=0.01)`, with `MSELoss`; funcdl's optimizers
follow PyTorch's update rules, so these are the seed's trajectories. One figure shows the five
loss curves (log scale).

Before the optimizers, the seed explains the exponential moving average that momentum, RMSprop
and Adam are built on, with 20 daily temperatures: S_1 = Y_1, S_t = beta S_{t-1} + (1 - beta) Y_t,
plotted for beta 0.5 and 0.9 (the larger beta, the smoother and the later the curve).
"""
import jax
import jax.numpy as jnp
import numpy as np

import funcdl as fdl
from funcdl import examples
from funcdl.examples.backprop import INPUT, TARGET, loss_fn, seed_params

SEED = "002"
SHOWS = "SGD, momentum, AdaGrad, RMSprop, Adam on the 2-2-2 net, 100 epochs; EMA of 20 temperatures"
OPTIONS = ("epochs", "lr", "optimizer", "backend")
# name: (fdl.optim factory, the seed's hyperparameters)
SEED_OPTIMIZERS = {
    "sgd": (fdl.optim.sgd, {"lr": 0.5}),
    "momentum": (fdl.optim.sgd, {"lr": 1.0, "momentum": 0.5}),
    "adagrad": (fdl.optim.adagrad, {"lr": 1.0}),
    "rmsprop": (fdl.optim.rmsprop, {"lr": 0.01, "momentum": 0.5}),
    "adam": (fdl.optim.adam, {"lr": 0.01}),
}
# Beyond the seed, trained only when named (`--optimizer adamw`): Adam's lr, PyTorch's
# default decoupled weight decay (0.01).
MORE_OPTIMIZERS = {"adamw": (fdl.optim.adamw, {"lr": 0.01})}
TEMPERATURE = np.array([10, 10.5, 11, 11.2, 11.3, 12, 12.1, 12.6, 12.4, 13, 13.8, 13.91, 14.0,
                        13.6, 14.9, 15.21, 15.64, 16, 16.89, 17.9])
BETAS = (0.5, 0.9)


def make_train(optimizer, epochs, backend):
    """A jitted `train(params) -> losses (epochs,)`: the seed's loop, one full-batch step an epoch.

    Each loss is computed before that epoch's update, as the seed prints it.
    """
    grad = jax.value_and_grad if backend == "jax" else fdl.autodiff.value_and_grad
    x, target = jnp.array(INPUT, jnp.float32), jnp.array(TARGET, jnp.float32)

    def epoch(carry, _):
        params, state = carry
        loss, gradients = grad(loss_fn)(params, x, target)
        updates, state = optimizer.update(gradients, state, params)
        return (fdl.optim.apply_updates(params, updates), state), loss

    def train(params):
        _, losses = jax.lax.scan(epoch, (params, optimizer.init(params)), None, length=epochs)
        return losses

    return jax.jit(train)


def ema(values, beta):
    """The seed's exponential moving average: S_1 = Y_1, S_t = beta S_{t-1} + (1 - beta) Y_t."""
    averages = [values[0]]
    for value in values[1:]:
        averages.append(beta * averages[-1] + (1 - beta) * value)
    return np.array(averages)


def run(quick=False, out_dir="runs/optimizers", *, epochs=100, lr=None, optimizer=None,
        backend="jax"):
    """Train with each of the seed's optimizers (or only `optimizer`, at `lr` if given).

    optimizer: a name of `SEED_OPTIMIZERS` or `MORE_OPTIMIZERS` (None: the seed's five).
    """
    known = {**SEED_OPTIMIZERS, **MORE_OPTIMIZERS}
    if optimizer is not None and optimizer not in known:
        raise ValueError(f"`optimizer` must be one of {', '.join(known)}, got {optimizer!r}")
    chosen = SEED_OPTIMIZERS if optimizer is None else {optimizer: known[optimizer]}
    epochs = 20 if quick and epochs == 100 else epochs
    curves = {}
    for name, (factory, hyperparameters) in chosen.items():
        hyperparameters = {**hyperparameters, **({} if lr is None else {"lr": lr})}
        losses = np.asarray(make_train(factory(**hyperparameters), epochs, backend)(
            seed_params(jnp.float32)))
        curves[name] = losses
        settings = ", ".join(f"{key}={value}" for key, value in hyperparameters.items())
        print(f"{name:>9}({settings}): loss {losses[0]:.6f} -> {losses[-1]:.6f} in {epochs} epochs")
    averages = {beta: ema(TEMPERATURE, beta) for beta in BETAS}
    for beta, values in averages.items():
        print(f"EMA beta={beta}: " + " ".join(f"{value:.2f}" for value in values))
    return {"quick": quick, "epochs": epochs, "losses": {name: c.tolist() for name, c in curves.items()},
            "first_loss": {name: float(c[0]) for name, c in curves.items()},
            "final_loss": {name: float(c[-1]) for name, c in curves.items()},
            "ema": {beta: values.tolist() for beta, values in averages.items()},
            "pictures": [plot_losses(curves, out_dir), plot_ema(averages, out_dir)]}


def plot_losses(curves, out_dir):
    fig, ax = examples.figure(width=7.5, height=3.8)
    for name, losses in curves.items():
        ax.plot(np.arange(1, len(losses) + 1), losses, label=name)
    ax.set(xlabel="epoch (one full-batch step)", ylabel="MSE loss (log scale)", yscale="log",
           title=f"the 2-2-2 sigmoid network trained by {len(curves)} optimizer"
                 f"{'s' if len(curves) > 1 else ''}, {len(next(iter(curves.values())))} epochs")
    examples.legend_outside(ax, title="optimizer")
    return examples.save(fig, out_dir, "optimizers.png")


def plot_ema(averages, out_dir):
    fig, ax = examples.figure(width=7.5, height=3.8)
    days = np.arange(1, len(TEMPERATURE) + 1)
    ax.scatter(days, TEMPERATURE, s=16, color="k", label="daily temperature")
    for beta, values in averages.items():
        ax.plot(days, values, label=f"EMA, beta = {beta}")
    ax.set(xlabel="day", ylabel="temperature (°C)", xticks=days[::2],
           title="exponential moving average of 20 daily temperatures")
    examples.legend_outside(ax)
    return examples.save(fig, out_dir, "ema.png")


def verdict(results):
    """Passes if every optimizer ends below where it started (the seed prints no final numbers,
    so the full run and the quick run, 20 epochs, check the same)."""
    final = ", ".join(f"{name} {loss:.4f}" for name, loss in results["final_loss"].items())
    passed = all(results["final_loss"][name] < first for name, first in results["first_loss"].items())
    if results["quick"]:
        return f"every loss falls from 0.2984 in {results['epochs']} epochs", f"final: {final}", passed
    return "every loss falls from 0.2984 (no final numbers printed)", f"final: {final}", passed
