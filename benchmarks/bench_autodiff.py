"""Time the gradient of an MLP loss: fdl.autodiff against jax.grad, HIPS autograd and PyTorch.

The network is 784-256-256-10 with ReLU hidden layers, float32, a batch of 128, and the mean
softmax cross-entropy written with `fdl.ops` (so the same function runs under jax.grad and
fdl.autodiff.grad); HIPS autograd (NumPy) and PyTorch compute the same loss with their own ops.
Each row is the median of `--repeats` calls after warm-up, each call blocked until its result
is ready; the jitted rows report their compile time apart. Targets (the foundation issue):
fdl.autodiff under jit within 1.1x of jax.grad under jit; fdl.autodiff eager faster than HIPS
autograd.

The eager tape (issue 9), side by side with PyTorch eager: a chain of ops, each step
`y = tanh(y) * 0.9 + 0.05` (3 ops: tanh's rule reads its output, the others read nothing of
y), from a leaf of 0.3s, then `sum(y)` and the backward pass.
- speed: 10,000 ops of shape (8,), microseconds per op for the forward (building the graph)
  and the backward pass, best of `--chain-repeats` runs, wall clock; beside them the same
  chain on plain jax arrays (jax.numpy's eager floor, forward only). Target: <= 15 µs per op
  forward + backward on the machine where jax.numpy's floor was 7 µs and PyTorch's 5.4 µs, i.e.
  <= 2.14x the floor (<= 2.78x PyTorch) measured in the same run; the table prints both ratios.
- memory: 100,000 ops of shape (1000,) float32, the growth of the resident set size while the
  graph is alive, per op (node). Target: <= 3 KB per node.

The Hessian-vector product (issue 20): `fdl.autodiff.hvp` of the same MLP loss (in the
parameters, along a random direction), jitted, against `jax.jvp(jax.grad(loss))` jitted,
timed interleaved. Target: <= 1.5x.

    python benchmarks/bench_autodiff.py [--repeats 30] [--chain-repeats 3] [--workloads mlp chain]
                                        [--out benchmarks/results/bench_autodiff.json]
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import funcdl
from funcdl import ops
from tape_chain import CHAIN_MEMORY, CHAIN_SPEED, chain_memory, chain_speed, chain_table

SIZES = (784, 256, 256, 10)
BATCH = 128


def make_problem(seed=0):
    """params: a list of {"w": (in, out), "b": (out,)} (PyTorch's uniform init); x, labels."""
    rng = np.random.default_rng(seed)
    params = []
    for n_in, n_out in zip(SIZES[:-1], SIZES[1:]):
        bound = 1 / np.sqrt(n_in)
        params.append({"w": rng.uniform(-bound, bound, (n_in, n_out)).astype(np.float32),
                       "b": rng.uniform(-bound, bound, (n_out,)).astype(np.float32)})
    x = rng.normal(size=(BATCH, SIZES[0])).astype(np.float32)
    labels = rng.integers(0, SIZES[-1], BATCH)
    return params, x, labels


def loss(params, x, labels):
    """Mean softmax cross-entropy of the MLP, with fdl.ops: x `(batch, 784)`, labels `(batch,)`."""
    for layer in params[:-1]:
        x = ops.relu(x @ layer["w"] + layer["b"])
    logits = x @ params[-1]["w"] + params[-1]["b"]
    targets = ops.one_hot(labels, SIZES[-1], dtype=logits.dtype)
    return -ops.mean(ops.sum(targets * ops.log_softmax(logits, axis=1), axis=1))


def median_ms(call, repeats, warmup=3):
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def jitted(grad_fn, args):
    """(compiled gradient function, compile seconds): lowering and compiling, timed apart."""
    start = time.perf_counter()
    compiled = jax.jit(grad_fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def autograd_gradient():
    """The same loss with HIPS autograd, or None when it is not installed."""
    try:
        import autograd
        import autograd.numpy as anp
        from autograd.scipy.special import logsumexp
    except ImportError:
        return None

    def np_loss(params, x, labels):
        for layer in params[:-1]:
            x = anp.maximum(x @ layer["w"] + layer["b"], 0.0)
        logits = x @ params[-1]["w"] + params[-1]["b"]
        log_probs = logits - logsumexp(logits, axis=1, keepdims=True)
        return -anp.mean(log_probs[np.arange(len(labels)), labels])

    return autograd.grad(np_loss)


def torch_gradient():
    """The same loss with PyTorch eager, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count())

    def grad(params, x, labels):
        leaves = [torch.from_numpy(p[k]).requires_grad_() for p in params for k in ("w", "b")]
        h = torch.from_numpy(x)
        for i in range(0, len(leaves) - 2, 2):
            h = torch.relu(h @ leaves[i] + leaves[i + 1])
        logits = h @ leaves[-2] + leaves[-1]
        value = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
        return torch.autograd.grad(value, leaves)

    return grad


def run(repeats):
    params, x, labels = make_problem()
    args = (jax.tree_util.tree_map(jnp.asarray, params), jnp.asarray(x), jnp.asarray(labels))
    block = jax.block_until_ready
    rows = []  # (implementation, median ms, compile s or None)

    jax_jit, jax_compile = jitted(jax.grad(loss), args)
    fdl_jit, fdl_compile = jitted(funcdl.autodiff.grad(loss), args)
    # timed in alternation: the (b)/(a) ratio is the target, and a shared machine drifts
    jax_ms, fdl_ms = interleaved_median_ms([lambda: block(jax_jit(*args)),
                                            lambda: block(fdl_jit(*args))], repeats)
    rows.append(("(a) jax.grad, jit", jax_ms, jax_compile))
    rows.append(("(b) fdl.autodiff.grad, jit", fdl_ms, fdl_compile))
    fdl_eager = funcdl.autodiff.grad(loss)
    rows.append(("(c) fdl.autodiff.grad, eager", median_ms(lambda: block(fdl_eager(*args)), repeats), None))
    reference = jax_jit(*args)
    _check_same_gradient("fdl.autodiff eager", fdl_eager(*args), reference)
    _check_same_gradient("fdl.autodiff jit", fdl_jit(*args), reference)
    hips = autograd_gradient()
    if hips is not None:
        rows.append(("(d) HIPS autograd (NumPy)", median_ms(lambda: hips(params, x, labels), repeats), None))
        _check_same_gradient("HIPS autograd", hips(params, x, labels), reference)
    torch_grad = torch_gradient()
    if torch_grad is not None:
        rows.append(("(e) PyTorch eager", median_ms(lambda: torch_grad(params, x, labels), repeats), None))
        flat = [g.numpy() for g in torch_grad(params, x, labels)]
        _check_same_gradient("PyTorch", [{"w": w, "b": b} for w, b in zip(flat[::2], flat[1::2])], reference)
    jax_eager = jax.grad(loss)
    rows.append(("(f) jax.grad, eager (for reference)", median_ms(lambda: block(jax_eager(*args)), repeats), None))
    return rows


def run_hvp(repeats):
    """Rows (implementation, median ms, compile s): H·v of the MLP loss in its parameters."""
    params, x, labels = make_problem()
    params = jax.tree_util.tree_map(jnp.asarray, params)
    x, labels = jnp.asarray(x), jnp.asarray(labels)
    rng = np.random.default_rng(1)
    v = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)

    def jax_hvp(params, v):
        return jax.jvp(jax.grad(lambda p: loss(p, x, labels)), (params,), (v,))[1]

    def fdl_hvp(params, v):
        return funcdl.autodiff.hvp(lambda p: loss(p, x, labels), (params,), (v,))[0]

    block = jax.block_until_ready
    jax_jit, jax_compile = jitted(jax_hvp, (params, v))
    fdl_jit, fdl_compile = jitted(fdl_hvp, (params, v))
    jax_ms, fdl_ms = interleaved_median_ms([lambda: block(jax_jit(params, v)),
                                            lambda: block(fdl_jit(params, v))], repeats)
    _check_same_gradient("fdl.autodiff.hvp", fdl_jit(params, v), jax_jit(params, v))
    return [("(a) jax.jvp(jax.grad), jit", jax_ms, jax_compile),
            ("(b) fdl.autodiff.hvp, jit", fdl_ms, fdl_compile)]


def _check_same_gradient(name, grads, reference):
    """Every implementation must compute the same gradient (to float32 rounding)."""
    for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(reference)):
        error = float(np.max(np.abs(np.asarray(g) - np.asarray(r))) / np.max(np.abs(np.asarray(r))))
        if not error < 1e-4:
            raise AssertionError(f"{name}'s gradient differs from jax.grad's by {error:.1e} (relative)")


def table(rows):
    base = rows[0][1]
    lines = ["| implementation | median ms | ratio to (a) | compile s |", "|---|---:|---:|---:|"]
    for name, ms, compile_s in rows:
        lines.append(f"| {name} | {ms:.3f} | {ms / base:.2f} | "
                     f"{'' if compile_s is None else f'{compile_s:.2f}'} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per row (after warm-up)")
    parser.add_argument("--chain-repeats", type=int, default=3, help="timed runs of each chain (best kept)")
    parser.add_argument("--workloads", nargs="+", choices=("mlp", "chain", "cnn", "hvp"),
                        default=["mlp", "chain", "cnn", "hvp"])
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path(__file__).parent / "results" / "bench_autodiff.json")
    options = parser.parse_args()
    previous = json.loads(options.out.read_text()) if options.out.exists() else {}
    device = jax.devices()[0]
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "jax": jax.__version__, "funcdl": funcdl.__version__,
                    "device": f"{device.platform}: {device.device_kind}",
                    "load_average_at_start": os.getloadavg()[0]},
    }
    if "mlp" in options.workloads:
        rows = run(options.repeats)
        print(table(rows))
        result["workload"] = {"sizes": SIZES, "batch": BATCH, "dtype": "float32", "hidden": "relu",
                              "loss": "mean softmax cross-entropy", "repeats": options.repeats}
        result["results"] = [{"implementation": name, "median_ms": round(ms, 4),
                              "ratio_to_jax_jit": round(ms / rows[0][1], 3),
                              "compile_s": None if compile_s is None else round(compile_s, 3)}
                             for name, ms, compile_s in rows]
    else:  # keep the MLP rows of the previous run
        result.update({k: previous[k] for k in ("workload", "results") if k in previous})
    if "chain" in options.workloads:
        speed, memory = chain_speed(options.chain_repeats), chain_memory()
        print(chain_table(speed, memory))
        result["chain"] = {
            "step": "y = tanh(y) * 0.9 + 0.05 (3 ops), then sum(y) and backward",
            "speed": {**CHAIN_SPEED, "repeats": options.chain_repeats,
                      "rows": [{"implementation": name, "forward_us_per_op": round(fwd, 2),
                                "backward_us_per_op": None if bwd is None else round(bwd, 2)}
                               for name, fwd, bwd in speed]},
            "memory": {**CHAIN_MEMORY, "dtype": "float32",
                       "rows": [{"implementation": name, "bytes_per_node": round(b)} for name, b in memory]},
        }
    elif "chain" in previous:
        result["chain"] = previous["chain"]
    if "hvp" in options.workloads:
        rows = run_hvp(options.repeats)
        print(table(rows))
        result["hvp"] = {"loss": "the MLP's, in its parameters", "target_ratio": 1.5,
                         "results": [{"implementation": name, "median_ms": round(ms, 4),
                                      "ratio_to_jax": round(ms / rows[0][1], 3),
                                      "compile_s": round(compile_s, 3)} for name, ms, compile_s in rows]}
    elif "hvp" in previous:
        result["hvp"] = previous["hvp"]
    if "cnn" in options.workloads:
        result["cnn"] = cnn_report(options.repeats)  # issue 13's CNN workloads
    elif "cnn" in previous:
        result["cnn"] = previous["cnn"]
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nsaved {options.out}")



# ---- CNN workloads (issue 13): conv, max pooling, Flatten, Linear --------------------------
# The digits CNN (1x8x8 inputs, batch 256) and a 3-layer 64-channel CNN on 3x32x32 inputs
# (batch 64), float32, mean cross-entropy. HIPS autograd has no conv2d/max-pool op with
# PyTorch's layout, so it has no row here.

def cnn_workloads():
    """{name: (model, input shape)}: the two CNNs of the issue."""
    from funcdl import nn

    def block(channels):
        return [nn.Conv2d(channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]

    return {
        "digits CNN, batch 256": (nn.Sequential(*block(16), *block(32), nn.Flatten(), nn.Linear(10)),
                                  (256, 1, 8, 8)),
        "3x64-channel CNN, 32x32, batch 64": (nn.Sequential(*block(64), *block(64), *block(64),
                                                            nn.Flatten(), nn.Linear(10)),
                                              (64, 3, 32, 32)),
    }


def hlo_op_counts(compiled):
    """(instructions, convolutions) in a compiled program's optimised HLO."""
    lines = [line.strip() for line in compiled.as_text().splitlines()]
    instructions = [line for line in lines if " = " in line and not line.startswith("//")]
    return len(instructions), sum(" convolution(" in line for line in instructions)


def _torch_cnn_gradient(params, shape):
    """PyTorch eager gradient of the same CNN with the same weights, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count())
    F = torch.nn.functional

    def grad(params, x, labels):
        leaves = [torch.from_numpy(p[k]).requires_grad_() for p in params if p for k in ("w", "b")]
        h = torch.from_numpy(x)
        for i in range(0, len(leaves) - 2, 2):
            h = F.max_pool2d(torch.relu(F.conv2d(h, leaves[i], leaves[i + 1], padding=1)), 2)
        logits = h.flatten(1) @ leaves[-2] + leaves[-1]
        return torch.autograd.grad(F.cross_entropy(logits, torch.from_numpy(labels)), leaves)

    return grad


def interleaved_median_ms(calls, repeats, warmup=3):
    """Median ms of each call, timed in alternation so that both see the same machine load
    (the (b)/(a) ratio is the target; on a shared machine back-to-back blocks drift apart)."""
    for call in calls:
        for _ in range(warmup):
            call()
    times = [[] for _ in calls]
    for _ in range(repeats):
        for call, samples in zip(calls, times):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
    return [1e3 * statistics.median(samples) for samples in times]


def run_cnn(repeats):
    """{workload: rows} with rows as `run`'s, plus the HLO op counts of the two jitted rows."""
    from funcdl import losses
    block = jax.block_until_ready
    results = {}
    for name, (model, shape) in cnn_workloads().items():
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=shape), jnp.float32)
        labels = jnp.asarray(rng.integers(0, 10, shape[0]))
        params = model.init(jax.random.key(0), x)

        def cnn_loss(params, x, labels, model=model):
            return losses.cross_entropy(model.apply(params, x), labels)

        args = (params, x, labels)
        jax_jit, jax_compile = jitted(jax.grad(cnn_loss), args)
        fdl_jit, fdl_compile = jitted(funcdl.autodiff.grad(cnn_loss), args)
        jax_ms, fdl_ms = interleaved_median_ms([lambda: block(jax_jit(*args)),
                                                lambda: block(fdl_jit(*args))], repeats)
        rows = [("(a) jax.grad, jit", jax_ms, jax_compile), ("(b) fdl.autodiff.grad, jit", fdl_ms, fdl_compile)]
        fdl_eager = funcdl.autodiff.grad(cnn_loss)
        rows.append(("(c) fdl.autodiff.grad, eager", median_ms(lambda: block(fdl_eager(*args)), repeats), None))
        reference = jax_jit(*args)
        _check_same_gradient("fdl.autodiff jit (CNN)", fdl_jit(*args), reference)
        _check_same_gradient("fdl.autodiff eager (CNN)", fdl_eager(*args), reference)
        torch_grad = _torch_cnn_gradient(params, shape)
        if torch_grad is not None:
            np_args = (jax.tree_util.tree_map(np.array, params), np.array(x), np.array(labels, np.int64))
            rows.append(("(e) PyTorch eager", median_ms(lambda: torch_grad(*np_args), repeats), None))
            _check_same_gradient("PyTorch (CNN)", [g.numpy() for g in torch_grad(*np_args)],
                                 [leaf for p in reference if p for leaf in (p["w"], p["b"])])
        jax_eager = jax.grad(cnn_loss)
        rows.append(("(f) jax.grad, eager (for reference)", median_ms(lambda: block(jax_eager(*args)), repeats), None))
        results[name] = {"rows": rows, "hlo_ops": {"jax.grad": hlo_op_counts(jax_jit),
                                                   "fdl.autodiff.grad": hlo_op_counts(fdl_jit)}}
    return results


def cnn_report(repeats):
    """Print one table per CNN workload (with HLO op counts); return them for the JSON."""
    results = run_cnn(repeats)
    for name, result in results.items():
        (jax_total, jax_convs), (fdl_total, fdl_convs) = result["hlo_ops"].values()
        print(f"\n{name}: compiled HLO instructions (convolutions): jax.grad {jax_total} "
              f"({jax_convs}), fdl.autodiff.grad {fdl_total} ({fdl_convs})")
        print(table(result["rows"]))
    return {name: {"hlo_ops": result["hlo_ops"],
                   "results": [{"implementation": row, "median_ms": round(ms, 4),
                                "ratio_to_jax_jit": round(ms / result["rows"][0][1], 3),
                                "compile_s": None if compile_s is None else round(compile_s, 3)}
                               for row, ms, compile_s in result["rows"]]}
            for name, result in results.items()}


if __name__ == "__main__":
    main()
