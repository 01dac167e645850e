"""The workloads and implementations that `bench_train.py` times side by side (see its
docstring): the data sets, the models (funcdl's and flax's), and one `run()` per
implementation: `fit` (both backends, progress on and off, bf16), hand-written JAX + optax as a
Python loop over a jitted step and as one `lax.scan`, flax + optax, PyTorch eager, and the
host->device copy of the data. Every implementation does the same work as `fit`.
"""
import contextlib
import io
import os
import pathlib
import sys
import time
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import funcdl  # noqa: E402
from funcdl import losses, nn, optim, train  # noqa: E402

KEY = np.asarray(jax.random.PRNGKey(0))  # fit's default key

COPY = "host->device copy of x, y (fit with NumPy input adds this)"

GPU_SIZES, GPU_BATCH = (4096, 8192, 8192, 8192, 4096), 8192


class Workload(NamedTuple):
    sizes: tuple
    activations: str  # "relu" (hidden layers), "relu-sigmoid" (XOR) or "" (linear)
    x: np.ndarray  # (n, sizes[0]) float32
    y: np.ndarray  # (n, 1) float32 or (n,) int32 class labels
    epochs: int
    batch: Optional[int]  # None: full batch (never shuffled)
    opt: str  # "sgd" | "adam"
    lr: float
    loss: str  # "sse" | "mse" | "ce"
    data: tuple = None  # (x, y) on the device, made once per workload for every JAX run;
    # NumPy (x, y) for the "from NumPy" workloads: each run puts them on the device itself


def from_numpy(name) -> bool:
    """Whether workload `name` gives its runs NumPy data ("mlp_numpy": the MLP epoch with the
    host->device copy inside every timed run, as a user's `fit(x_numpy, ...)` pays it)."""
    return name.endswith("_numpy")


def workload(name, wide_steps=8, gpu_steps=20, gpu_scale=1):
    """The workload `name` with its NumPy data (`data` still None)."""
    rng = np.random.default_rng(0)
    name = name.removesuffix("_numpy")
    if name == "xor":
        x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
        return Workload((2, 8, 4, 1), "relu-sigmoid", x, (x[:, :1] != x[:, 1:]).astype(
            np.float32), 400, None, "sgd", 0.6, "sse")
    if name == "boston":
        x, y = funcdl.datasets.load_boston()
        x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)[:430]
        return Workload((13, 1), "", x, y[:430, None].astype(np.float32), 300, None, "sgd",
                        1e-2, "mse")
    sizes, rows, batch = {
        "mlp": ((784, 256, 256, 10), 60_000, 128),
        "wide": ((1024, 2048, 2048, 10), 512 * wide_steps, 512),
        "gpu_wide": (tuple(s // gpu_scale for s in GPU_SIZES), GPU_BATCH // gpu_scale
                     * gpu_steps, GPU_BATCH // gpu_scale)}[name]
    x = rng.standard_normal((rows, sizes[0]), np.float32)
    return Workload(sizes, "relu", x, rng.integers(0, 10, rows).astype(np.int32), 1, batch,
                    "adam", 1e-3, "ce")


def layout(w):
    """`(batch, n_full, remainder, shuffle)` as fit lays out the epoch."""
    n = len(w.x)
    batch = n if w.batch is None or w.batch >= n else w.batch
    n_full, remainder = divmod(n, batch)
    return batch, n_full, remainder, n_full + (remainder > 0) > 1


def epoch_order(epoch, n):
    """fit's row order of epoch `epoch` (a traced int32)."""
    shuffle_key, _ = jax.random.split(jax.random.fold_in(KEY, epoch))
    return jax.random.permutation(shuffle_key, n)


def funcdl_model(sizes, activations):
    layers = []
    for i, size in enumerate(sizes[1:]):
        layers.append(nn.Linear(size))
        last = i == len(sizes) - 2
        if activations == "relu-sigmoid":
            layers.append(nn.Sigmoid() if last or i == 1 else nn.ReLU())
        elif activations == "relu" and not last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def flax_model(sizes, activations):
    import flax.linen as fnn

    class MLP(fnn.Module):
        @fnn.compact
        def __call__(self, h):
            for i, size in enumerate(sizes[1:]):
                h = fnn.Dense(size)(h)
                last = i == len(sizes) - 2
                if activations == "relu-sigmoid":
                    h = jax.nn.sigmoid(h) if last or i == 1 else jax.nn.relu(h)
                elif activations == "relu" and not last:
                    h = jax.nn.relu(h)
            return h
    return MLP()


def jax_loss(loss):
    if loss == "sse":
        return lambda p, t: jnp.sum((p - t) ** 2)
    if loss == "mse":
        return lambda p, t: jnp.mean((p - t) ** 2)
    return lambda p, t: -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(p), t[:, None], 1))


class Terminal(io.StringIO):
    """A stderr that says it is a terminal: `fit`'s progress is then the tqdm bar moved from
    inside the compiled program (elsewhere it prints one line per epoch after each call), so
    the "+ progress" rows time the bar."""

    def isatty(self):
        return True


def bench_funcdl(w, grad_backend, progress, compute_dtype=None):
    model = funcdl_model(w.sizes, w.activations)
    params = model.init(jax.random.key(0), w.x[:1])
    opt = optim.sgd(w.lr) if w.opt == "sgd" else optim.adam(w.lr)
    loss_fn = {"sse": lambda p, t: losses.mse_loss(p, t, reduction="sum"),
               "mse": losses.mse_loss, "ce": losses.cross_entropy}[w.loss]

    def run(guard=False):
        with contextlib.redirect_stderr(Terminal()):
            out = train.fit(model, params, loss_fn, opt, *w.data, epochs=w.epochs,
                            batch_size=w.batch, grad_backend=grad_backend, progress=progress,
                            compute_dtype=compute_dtype)
        return jax.block_until_ready(out[0]), None
    return run


def hand_jax(w, fused, compute_dtype=None, library="funcdl"):
    """optax + jax.value_and_grad of the funcdl (or flax) model: a Python loop over a jitted
    step, or all epochs in one jitted `lax.scan`; fit's batch order; state donated."""
    import optax
    net = (flax_model if library == "flax" else funcdl_model)(w.sizes, w.activations)
    params, apply = net.init(jax.random.key(0), w.x[:1]), net.apply
    opt = optax.sgd(w.lr) if w.opt == "sgd" else optax.adam(w.lr)
    loss_of, n = jax_loss(w.loss), len(w.x)
    batch, n_full, remainder, shuffle = layout(w)

    def objective(p, xb, yb):
        if compute_dtype is not None:  # float32 master params, forward and backward in bf16
            p = jax.tree_util.tree_map(lambda a: a.astype(compute_dtype), p)
            xb = xb.astype(compute_dtype)
        return loss_of(apply(p, xb).astype(jnp.float32), yb)

    def train_on(state, data, order, start, size):
        (p, s), (x, y) = state, data
        if order is not None:  # the batch's rows gathered inside the compiled step
            rows = lax.dynamic_slice_in_dim(order, start, size)
            x, y = jnp.take(x, rows, axis=0), jnp.take(y, rows, axis=0)
        value, g = jax.value_and_grad(objective)(p, x, y)
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), value

    def epoch(state, data, e):
        order = epoch_order(e, n) if shuffle else None
        if n_full == 1:
            state, values = train_on(state, data, order, 0, batch)
        else:
            state, values = lax.scan(lambda c, b: train_on(c, data, order, b * batch, batch),
                                     state, jnp.arange(n_full, dtype=jnp.int32))
        if remainder:
            state, _ = train_on(state, data, order, n_full * batch, remainder)
        return state, values

    init = jax.jit(lambda p: (jax.tree_util.tree_map(jnp.copy, p), opt.init(p)))
    all_epochs = jax.jit(lambda state, data: lax.scan(
        lambda c, e: epoch(c, data, e), state, jnp.arange(w.epochs, dtype=jnp.int32)),
        donate_argnums=0)
    one_step = jax.jit(train_on, static_argnames="size", donate_argnums=0)
    order_of = jax.jit(lambda e: epoch_order(e, n))
    epoch_ids = [jnp.asarray(e, jnp.int32) for e in range(w.epochs)]  # made once: the loop
    starts = [jnp.asarray(b * batch, jnp.int32) for b in range(n_full + 1)]  # sends no scalars

    def run(guard=False):
        state = init(params)
        # NumPy data (the "from NumPy" workloads): the run's own host->device copy, as fit's
        data = jax.device_put(w.data) if isinstance(w.data[0], np.ndarray) else w.data
        if fused:
            (p, _), _ = jax.block_until_ready(all_epochs(state, data))
            return p, None
        with jax.transfer_guard("disallow") if guard else contextlib.nullcontext():
            for e in epoch_ids:
                order = order_of(e) if shuffle else None
                for b in range(n_full):
                    state, _ = one_step(state, data, order, starts[b], size=batch)
                if remainder:
                    state, _ = one_step(state, data, order, starts[n_full], size=remainder)
        dispatched = time.perf_counter()
        return jax.block_until_ready(state)[0], dispatched
    return run


def pytorch_eager(w):
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    layers = []
    for i, size in enumerate(w.sizes[1:]):
        layers.append(torch.nn.Linear(w.sizes[i], size))
        last = i == len(w.sizes) - 2
        if w.activations == "relu-sigmoid":
            layers.append(torch.nn.Sigmoid() if last or i == 1 else torch.nn.ReLU())
        elif w.activations == "relu" and not last:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    loss_of = {"sse": torch.nn.MSELoss(reduction="sum"), "mse": torch.nn.MSELoss(),
               "ce": torch.nn.CrossEntropyLoss()}[w.loss]
    xt = torch.from_numpy(w.x)
    yt = torch.from_numpy(w.y.astype(np.int64) if w.loss == "ce" else w.y)
    batch, _, _, shuffle = layout(w)
    n = len(w.x)

    def run(guard=False):
        opt = (torch.optim.SGD if w.opt == "sgd" else torch.optim.Adam)(net.parameters(), w.lr)
        for _ in range(w.epochs):
            order = torch.randperm(n) if shuffle else None
            for start in range(0, n, batch):
                rows = order[start:start + batch] if shuffle else slice(start, start + batch)
                opt.zero_grad()
                loss_of(net(xt[rows]), yt[rows]).backward()
                opt.step()
        return net.state_dict(), None
    return run


def host_to_device(w):
    def run(guard=False):  # what fit's `place_data` does with NumPy arrays
        return jax.block_until_ready((jnp.asarray(w.x), jnp.asarray(w.y))), None
    return run

IMPLEMENTATIONS = {
    "fit jax": lambda w: bench_funcdl(w, "jax", False),
    "fit jax + progress": lambda w: bench_funcdl(w, "jax", True),
    "fit funcdl": lambda w: bench_funcdl(w, "funcdl", False),
    "fit funcdl + progress": lambda w: bench_funcdl(w, "funcdl", True),
    "jax+optax loop": lambda w: hand_jax(w, False),
    "jax+optax scan": lambda w: hand_jax(w, True),
    "flax+optax loop": lambda w: hand_jax(w, False, library="flax"),
    "pytorch eager": pytorch_eager,
    COPY: host_to_device,
}

NUMPY_IMPLEMENTATIONS = {  # the "from NumPy" workloads: every run starts from NumPy x, y
    "fit jax": lambda w: bench_funcdl(w, "jax", False),
    "fit jax + progress": lambda w: bench_funcdl(w, "jax", True),
    "jax+optax loop": lambda w: hand_jax(w, False),
    "jax+optax scan": lambda w: hand_jax(w, True),
}

GPU_IMPLEMENTATIONS = {
    "fit jax": lambda w: bench_funcdl(w, "jax", False),
    "fit jax bf16": lambda w: bench_funcdl(w, "jax", False, jnp.bfloat16),
    "jax+optax loop": lambda w: hand_jax(w, False),
    "jax+optax scan": lambda w: hand_jax(w, True),
    "jax+optax loop bf16": lambda w: hand_jax(w, False, jnp.bfloat16),
    "jax+optax scan bf16": lambda w: hand_jax(w, True, jnp.bfloat16),
    COPY: host_to_device,
}
