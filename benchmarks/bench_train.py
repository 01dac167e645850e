"""Time whole training runs: `fdl.train.fit` against hand-written JAX + optax (a Python loop over
a jitted step, and the same fused in one `lax.scan`), flax + optax and PyTorch eager.

Workloads (float32): XOR 2-8-4-1 (4 rows, 400 full-batch epochs, SGD 0.6, summed squared
error), Boston 13-1 (430 rows, 300 full-batch epochs, SGD 1e-2, MSE), MLP 784-256-256-10 (one
epoch of 60,000 synthetic rows, batch 128, Adam 1e-3, cross-entropy) and wide 1024-2048-2048-10
(`--wide-steps` batches of 512, Adam). Each row is the median of `--repeats` runs after a
warm-up run (its extra time is reported as compile time); every run ends with its results ready.
Targets (issue 10): on MLP and wide, fit <= 1.05x the hand-written scan and never slower than
the loop, grad_backend="funcdl" <= 1.1x "jax", the progress bar <= 2%; on XOR and Boston,
fit's overhead over the hand-written scan per call (target < 2 ms) and the run against PyTorch.

    python benchmarks/bench_train.py [--repeats 5] [--workloads xor,boston,mlp,wide]
    python benchmarks/bench_train.py --devices 1,2,4   # fit on N forced host devices
"""
import argparse
import contextlib
import datetime
import io
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import funcdl  # noqa: E402
from funcdl import losses, nn, optim, train  # noqa: E402


def workload(name, wide_steps=8):
    """`(sizes, activations, x, y, epochs, batch, optimizer name, lr, loss name)`."""
    rng = np.random.default_rng(0)
    if name == "xor":
        x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
        return (2, 8, 4, 1), "relu-sigmoid", x, (x[:, :1] != x[:, 1:]).astype(np.float32), \
            400, None, "sgd", 0.6, "sse"
    if name == "boston":
        x, y = funcdl.datasets.load_boston()
        x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)[:430]
        return (13, 1), "", x, y[:430, None].astype(np.float32), 300, None, "sgd", 1e-2, "mse"
    sizes, rows, batch = {"mlp": ((784, 256, 256, 10), 60_000, 128),
                          "wide": ((1024, 2048, 2048, 10), 512 * wide_steps, 512)}[name]
    x = rng.normal(size=(rows, sizes[0])).astype(np.float32)
    return sizes, "relu", x, rng.integers(0, 10, rows).astype(np.int32), 1, batch, "adam", \
        1e-3, "ce"


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


def jax_loss(loss):
    if loss == "sse":
        return lambda p, t: jnp.sum((p - t) ** 2)
    if loss == "mse":
        return lambda p, t: jnp.mean((p - t) ** 2)
    return lambda p, t: -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(p), t[:, None], 1))


def timed(run, repeats):
    """`(median seconds, compile seconds)`: a warm-up run, then `repeats` timed runs."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return median, max(0.0, first - median)


def bench_funcdl(w, grad_backend, progress):
    sizes, activations, x, y, epochs, batch, opt_name, lr, loss = w
    model = funcdl_model(sizes, activations)
    params = model.init(jax.random.key(0), x[:1])
    opt = optim.sgd(lr) if opt_name == "sgd" else optim.adam(lr)
    loss_fn = {"sse": lambda p, t: losses.mse_loss(p, t, reduction="sum"),
               "mse": losses.mse_loss, "ce": losses.cross_entropy}[loss]

    def run():
        with contextlib.redirect_stderr(io.StringIO()):
            out = train.fit(model, params, loss_fn, opt, x, y, epochs=epochs,
                            batch_size=batch, grad_backend=grad_backend, progress=progress)
        jax.block_until_ready(out[0])
    return run


def hand_jax(w, fused):
    """optax + jax.value_and_grad, params as a list of (w, b); a loop or one lax.scan."""
    import optax
    sizes, activations, x, y, epochs, batch, opt_name, lr, loss = w
    model = funcdl_model(sizes, activations)
    params = model.init(jax.random.key(0), x[:1])
    opt = optax.sgd(lr) if opt_name == "sgd" else optax.adam(lr)
    loss_of = jax_loss(loss)
    n = len(x)
    batch = batch or n
    steps = n // batch

    def step(carry, rows):
        p, s = carry
        value, g = jax.value_and_grad(lambda q: loss_of(model.apply(q, xd[rows]), yd[rows]))(p)
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), value

    xd, yd = jnp.asarray(x), jnp.asarray(y)
    rows_of = jnp.arange(steps * batch, dtype=jnp.int32).reshape(steps, batch)
    one_step = jax.jit(step)
    row_batches = [rows_of[i] for i in range(steps)]  # made once: the loop dispatches steps only

    @jax.jit
    def all_epochs(p, s, order):
        def epoch(carry, _):
            return jax.lax.scan(step, carry, order)
        (p, s), values = jax.lax.scan(epoch, (p, s), None, length=epochs)
        return p, s, values

    def run():
        state = (params, opt.init(params))
        if fused:
            result = all_epochs(*state, rows_of)
        else:
            for _ in range(epochs):
                for rows in row_batches:
                    state, value = one_step(state, rows)
            result = state
        jax.block_until_ready(result)
    return run


def flax_optax(w):
    import flax.linen as fnn
    import optax
    sizes, activations, x, y, epochs, batch, opt_name, lr, loss = w

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

    net, opt, loss_of = MLP(), (optax.sgd(lr) if opt_name == "sgd" else optax.adam(lr)), \
        jax_loss(loss)
    params = net.init(jax.random.key(0), x[:1])
    batch = batch or len(x)

    @jax.jit
    def step(p, s, xb, yb):
        value, g = jax.value_and_grad(lambda q: loss_of(net.apply(q, xb), yb))(p)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, value

    xd, yd = jnp.asarray(x), jnp.asarray(y)

    def run():
        p, s = params, opt.init(params)
        for _ in range(epochs):
            for start in range(0, len(x) - batch + 1, batch):
                p, s, _ = step(p, s, xd[start:start + batch], yd[start:start + batch])
        jax.block_until_ready(p)
    return run


def pytorch_eager(w):
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    sizes, activations, x, y, epochs, batch, opt_name, lr, loss = w
    layers = []
    for i, size in enumerate(sizes[1:]):
        layers.append(torch.nn.Linear(sizes[i], size))
        last = i == len(sizes) - 2
        if activations == "relu-sigmoid":
            layers.append(torch.nn.Sigmoid() if last or i == 1 else torch.nn.ReLU())
        elif activations == "relu" and not last:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    loss_of = {"sse": torch.nn.MSELoss(reduction="sum"), "mse": torch.nn.MSELoss(),
               "ce": torch.nn.CrossEntropyLoss()}[loss]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64) if loss == "ce" else y)
    batch = batch or len(x)

    def run():
        opt = (torch.optim.SGD if opt_name == "sgd" else torch.optim.Adam)(net.parameters(), lr)
        for _ in range(epochs):
            for start in range(0, len(x) - batch + 1, batch):
                opt.zero_grad()
                loss_of(net(xt[start:start + batch]), yt[start:start + batch]).backward()
                opt.step()
    return run


IMPLEMENTATIONS = {
    "fit jax": lambda w: bench_funcdl(w, "jax", False),
    "fit jax + progress": lambda w: bench_funcdl(w, "jax", True),
    "fit funcdl": lambda w: bench_funcdl(w, "funcdl", False),
    "fit funcdl + progress": lambda w: bench_funcdl(w, "funcdl", True),
    "jax+optax loop": lambda w: hand_jax(w, False),
    "jax+optax scan": lambda w: hand_jax(w, True),
    "flax+optax loop": flax_optax,
    "pytorch eager": pytorch_eager,
}


def mesh_worker(devices, repeats):
    """fit of the MLP workload on a mesh of `devices` forced host devices: rows per second."""
    from jax.sharding import Mesh
    sizes, activations, x, y, epochs, batch, _, lr, _ = workload("mlp")
    x, y = x[:12_800], y[:12_800]
    model = funcdl_model(sizes, activations)
    params = model.init(jax.random.key(0), x[:1])
    mesh = Mesh(np.array(jax.devices()[:devices]), ("data",))

    def run():
        out = train.fit(model, params, losses.cross_entropy, optim.adam(lr), x, y, epochs=1,
                        batch_size=batch, mesh=mesh, progress=False)
        jax.block_until_ready(out[0])
    median, compile_s = timed(run, repeats)
    return {"devices": devices, "seconds": median, "rows_per_s": len(x) / median,
            "compile_s": compile_s}


def run_devices(counts, repeats):
    rows = []
    for count in counts:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={count}")
        out = subprocess.run([sys.executable, __file__, "--mesh-worker", str(count),
                              "--repeats", str(repeats)], env=env, capture_output=True,
                             text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{count} devices: {rows[-1]['rows_per_s']:.0f} rows/s "
              f"({rows[-1]['seconds'] * 1e3:.0f} ms per epoch of 12,800 rows)", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workloads", default="xor,boston,mlp,wide")
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--wide-steps", type=int, default=8)
    parser.add_argument("--devices", default=None, help="e.g. 1,2,4: fit on forced host devices")
    parser.add_argument("--mesh-worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(HERE / "results" / "bench_train.json"))
    args = parser.parse_args()
    if args.mesh_worker:
        print(json.dumps(mesh_worker(args.mesh_worker, args.repeats)))
        return
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0]}",
              "jax": jax.__version__, "command": " ".join(sys.argv), "results": {}}
    if args.devices:
        report["devices"] = run_devices([int(c) for c in args.devices.split(",")], args.repeats)
    names = args.implementations.split(",") if args.workloads else []
    for name in filter(None, args.workloads.split(",")):
        w = workload(name, args.wide_steps)
        rows = report["results"][name] = {}
        for impl in names:
            median, compile_s = timed(IMPLEMENTATIONS[impl](w), args.repeats)
            rows[impl] = {"seconds": median, "compile_s": compile_s}
            print(f"{name:7s} {impl:22s} {median * 1e3:9.2f} ms  (compile {compile_s:.2f} s)",
                  flush=True)
    print(markdown(report))
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


def markdown(report):
    lines = ["| workload | implementation | median ms | x hand scan | compile s |",
             "|---|---|---:|---:|---:|"]
    for name, rows in report["results"].items():
        scan = rows.get("jax+optax scan", {}).get("seconds")
        for impl, row in rows.items():
            ratio = f"{row['seconds'] / scan:.2f}" if scan else "-"
            lines.append(f"| {name} | {impl} | {row['seconds'] * 1e3:.2f} | {ratio} | "
                         f"{row['compile_s']:.2f} |")
        if "fit jax" in rows and scan:
            fit, bar = rows["fit jax"]["seconds"], rows.get("fit jax + progress", {})
            lines.append(f"| {name} | fit overhead over the scan | "
                         f"{(fit - scan) * 1e3:+.2f} ms per call | | |")
            if bar:
                lines.append(f"| {name} | progress bar cost | "
                             f"{(bar['seconds'] / fit - 1) * 100:+.1f}% | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
