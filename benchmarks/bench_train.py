"""Time whole training runs: `fdl.train.fit` against hand-written JAX + optax (a Python loop over
a jitted step, and the same fused in one `lax.scan`), flax + optax and PyTorch eager.

Workloads (float32): XOR 2-8-4-1 (4 rows, 400 full-batch epochs, SGD 0.6, summed squared
error), Boston 13-1 (430 rows, 300 full-batch epochs, SGD 1e-2, MSE), MLP 784-256-256-10 (one
epoch of 60,000 synthetic rows, batch 128, Adam 1e-3, cross-entropy) and wide 1024-2048-2048-10
(`--wide-steps` batches of 512, Adam). Only when asked, `gpu_wide` (issue 10's GPU target):
4096-8192-8192-8192-4096, batch 8192, `--gpu-steps` batches of synthetic rows with 10 classes,
Adam, cross-entropy, in float32 and bf16 (float32 params, cast to bf16 inside the step);
`--gpu-scale K` divides its widths and batch by K (a CPU smoke check). Only when asked,
`mlp_numpy` ("MLP epoch from NumPy data", issue 13): the MLP epoch with NumPy `x, y`, every run
paying its own host->device copy: `fit` given the NumPy arrays (as a user calls it; it
`jax.device_put`s them), the hand-written scan and loop each with their own `jax.device_put`.
Only when asked, `mlp_sweep` (issue 18, `train_sweep.py`): the MLP epoch for `--sweep-k` (8)
Adam learning rates, as that many `fit` calls against one `fdl.train.sweep`, compile and run
timed apart, beside the same written by hand in JAX + optax (that many jitted scans, the scan
vmapped over them, and `lax.map` over them in one program).
Only when asked, `mlp_stream` (issue 18, `train_stream.py`): the MLP epoch with
streamed data (a memory map, a re-iterable of batches) against in-memory `fit`, and the host
memory of a streamed epoch over a `--stream-gb` (1.2) GB memory map, in a fresh process.

All implementations do the same work: the same model, optimizer, loss and steps (the last
partial batch included: MLP has 468 batches of 128 and one of 96), from the same initial
params (flax and PyTorch: their own initialisation of the same layers). Minibatch
epochs are shuffled as `fit` shuffles (per epoch e: `shuffle_key, _ = jax.random.split(
jax.random.fold_in(PRNGKey(0), e))`, `order = jax.random.permutation(shuffle_key, n)`, batch
b = rows `order[b*B:(b+1)*B]`, gathered inside the compiled step or scan; PyTorch: a
`torch.randperm` per epoch); full-batch runs are never shuffled. Every JAX implementation gets
the same device-resident `x, y`, put on the device once per workload (mlp_numpy: the NumPy
ones); the host->device copy of `x, y` (what `fit` adds when given NumPy arrays) is its own
row, timed side by side. The
Python loops pass only device arrays (and static sizes) to their jitted steps and never read a
value back before the end of a run: their loops run under `jax.transfer_guard("disallow")` in
the warm-up run, and "dispatched" says when (as % of the run) the loop had queued its last
step. "rel diff vs fit": after the first 4 steps of a minibatch workload (the partial batch
included; full batch: the whole run), how far the hand-written JAX runs' params p end from
fit's (same dtype): |p - p_fit| / |p_fit - p0|, p0 the initial params; float32 rounding
alone gives ~1e-5 (bf16: ~1e-2), another batch order ~0.5 (`same_work`).

Each row is the median of `--repeats` rounds; a round runs every implementation once, in turn,
so that a change of machine load hits all alike; the warm-up run's extra time over the median
is reported as compile time. Every run ends with its results ready.
Targets (issue 10): on MLP and wide, fit <= 1.05x the hand-written scan and never slower than
the loop, grad_backend="funcdl" <= 1.1x "jax", the progress bar <= 2%; on XOR and Boston,
fit's overhead over the hand-written scan per call (target < 2 ms) and the run against PyTorch;
on gpu_wide, fit's steps/s >= 0.97x the hand-written step's of the same dtype, with the model
FLOP/s (6 * batch * sum(in * out) per step) as a percentage of the measured matmul rate.

    python benchmarks/bench_train.py [--repeats 5] [--workloads xor,boston,mlp,wide]
    python benchmarks/bench_train.py --workloads gpu_wide [--gpu-steps 20] [--gpu-scale 64]
    python benchmarks/bench_train.py --workloads mlp_numpy \\
        --out benchmarks/results/bench_train_numpy.json
    python benchmarks/bench_train.py --devices 1,2,4   # fit on N forced host devices
    python benchmarks/bench_train.py --workloads mlp_sweep --repeats 3 \\
        --out benchmarks/results/bench_train_sweep.json
"""
import argparse
import datetime
import gc
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
from funcdl import losses, optim, train  # noqa: E402
sys.path.insert(0, str(HERE))
from train_workloads import (  # noqa: E402
    COPY, GPU_IMPLEMENTATIONS, GPU_SIZES, IMPLEMENTATIONS, NUMPY_IMPLEMENTATIONS, from_numpy,
    funcdl_model, layout, workload)
from train_sweep import sweep_markdown, sweep_rows  # noqa: E402
from train_stream import (memory_worker, run_memory_worker, stream_markdown,  # noqa: E402
                          stream_rows)


def settle(seconds=0.2):
    """Before each timed run: collect garbage and pause, so that what the previous run left
    running does not land in this one's time (PyTorch's OpenMP threads spin-wait for a while
    after its last parallel region; observed without the pause: the MLP run that followed
    PyTorch's in each round was 1.16x the scan, 0.97x with it)."""
    gc.collect()
    time.sleep(seconds)


def timed_side_by_side(runs, repeats):
    """`{name: {"seconds", "compile_s", "dispatched", "min_seconds", "cpu_seconds"}}`: a
    warm-up run of each (its extra time over the median is the compile time; loops run it
    under `jax.transfer_guard("disallow")`), then `repeats` rounds that run every
    implementation once, in turn, so that a change of machine load affects all of them alike.
    A run returns `(params, dispatched)`, dispatched the time a loop had queued its last step:
    "dispatched" is the median of that as a fraction of the run (None for the others).
    "min_seconds": the fastest round; "cpu_seconds": the median CPU time of this process (all
    its threads) per run, which other processes on a shared machine disturb less than the
    wall time."""
    first, times, queued = {}, {name: [] for name in runs}, {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for name, run in runs.items():
        start = time.perf_counter()
        run(guard=True)
        first[name] = time.perf_counter() - start
    for _ in range(repeats):
        for name, run in runs.items():
            settle()
            start, cpu_start = time.perf_counter(), time.process_time()
            _, dispatched = run()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - cpu_start)
            if dispatched is not None:
                queued[name].append((dispatched - start) / times[name][-1])
    out = {}
    for name in runs:
        median = statistics.median(times[name])
        out[name] = {"seconds": median, "compile_s": max(0.0, first[name] - median),
                     "dispatched": statistics.median(queued[name]) if queued[name] else None,
                     "min_seconds": min(times[name]), "cpu_seconds": statistics.median(cpu[name])}
    return out


def first_steps(w, steps=4):
    """`w` cut to its first `steps` steps: `steps - 1` full batches and the partial one (if
    `w` has one; else a full one) of one epoch; full batch (small: XOR, Boston): all of `w`."""
    batch, _, remainder, shuffle = layout(w)
    if not shuffle:
        return w
    rows = (steps - 1) * batch + (remainder or batch)
    if rows >= len(w.x):
        return w
    return w._replace(x=w.x[:rows], y=w.y[:rows], epochs=1,
                      data=tuple(a[:rows] for a in w.data))


def same_work(w, table, rows, runs, steps=4):
    """Adds to each hand-written JAX row (funcdl's model and init) how far its params p end
    from fit's p_fit (same dtype) after the first `steps` steps of `w`: "max_abs_diff_vs_fit"
    and "rel_diff_vs_fit" = |p - p_fit| / |p_fit - p0| (L2 norms, p0 the initial params).
    Over a few steps the same work differs by float32 rounding alone (~1e-5 relative) and
    another batch order by ~0.5; over hundreds of Adam steps on random labels even rounding
    grows to O(1) (Adam amplifies it in near-zero gradients), hence the short runs. `runs`:
    the timed runs of `w`, reused (compiled) when `w` has no more than `steps` steps."""
    flat = lambda tree: np.concatenate(  # noqa: E731
        [np.ravel(np.asarray(leaf, np.float64)) for leaf in jax.tree_util.tree_leaves(tree)])
    short, ends = first_steps(w, steps), {}
    make = (lambda name: runs[name]) if short is w else (lambda name: table[name](short))
    p0 = flat(funcdl_model(w.sizes, w.activations).init(jax.random.key(0), w.x[:1]))
    for impl, row in rows.items():
        reference = "fit jax bf16" if impl.endswith("bf16") else "fit jax"
        if impl.startswith("jax+optax") and reference in rows:
            for name in (reference, impl):
                if name not in ends:
                    ends[name] = flat(make(name)()[0])
            p, p_fit = ends[impl], ends[reference]
            row["max_abs_diff_vs_fit"] = float(np.max(np.abs(p - p_fit)))
            row["rel_diff_vs_fit"] = float(np.linalg.norm(p - p_fit) / np.linalg.norm(p_fit - p0))


def matmul_rate(dtype, size, repeats=20, calls=5):
    """FLOP/s of a jitted (size x size) @ (size x size) matmul in `dtype` (jax's default
    precision: TF32 for float32 on recent NVIDIA GPUs): the median over `repeats` timings of
    `calls` matmuls queued back to back (so one sync is shared by several), after a warm-up."""
    a, b = (jax.random.normal(jax.random.key(i), (size, size), jnp.float32).astype(dtype)
            for i in (1, 2))
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, b))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready([matmul(a, b) for _ in range(calls)])
        times.append((time.perf_counter() - start) / calls)
    return 2 * size ** 3 / statistics.median(times)


def gpu_summary(w, rows, repeats, scale):
    """Steps/s, ratios to the hand-written step of the same dtype, model FLOP/s and its share
    of the measured matmul rate, added to `rows` of the gpu_wide workload."""
    batch, steps, _, _ = layout(w)
    flops = 6 * batch * sum(a * b for a, b in zip(w.sizes, w.sizes[1:]))
    size = GPU_SIZES[1] // scale  # 8192: the hidden width (and the batch)
    rates = {"float32": matmul_rate(jnp.float32, size, 4 * repeats),
             "bfloat16": matmul_rate(jnp.bfloat16, size, 4 * repeats)}
    for impl, row in rows.items():
        if impl == COPY:
            continue
        bf16 = impl.endswith("bf16")
        suffix, dtype = (" bf16", "bfloat16") if bf16 else ("", "float32")
        row["dtype"], row["steps_per_s"] = dtype, steps / row["seconds"]
        row["model_flops_per_s"] = flops * row["steps_per_s"]
        row["of_matmul_rate"] = row["model_flops_per_s"] / rates[dtype]
        for ref in ("scan", "loop"):
            hand = rows.get(f"jax+optax {ref}{suffix}")
            row[f"x_hand_{ref}_steps_per_s"] = hand["seconds"] / row["seconds"] if hand else None
    return {"model_flops_per_step": flops, "steps": steps, "matmul_size": size,
            "matmul_flops_per_s": rates}


def mesh_worker(devices, repeats):
    """fit of the MLP workload on a mesh of `devices` forced host devices: rows per second."""
    from jax.sharding import Mesh
    w = workload("mlp")
    x, y = w.x[:12_800], w.y[:12_800]
    model = funcdl_model(w.sizes, w.activations)
    params = model.init(jax.random.key(0), x[:1])
    mesh = Mesh(np.array(jax.devices()[:devices]), ("data",))

    def run(guard=False):
        out = train.fit(model, params, losses.cross_entropy, optim.adam(w.lr), x, y, epochs=1,
                        batch_size=w.batch, mesh=mesh, progress=False)
        return jax.block_until_ready(out[0]), None
    row = timed_side_by_side({"fit": run}, repeats)["fit"]
    return {"devices": devices, "seconds": row["seconds"], "rows_per_s": len(x) / row["seconds"],
            "compile_s": row["compile_s"]}


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workloads", default="xor,boston,mlp,wide",
                        help="also mlp_numpy, mlp_sweep, mlp_stream and gpu_wide (not in the default list)")
    parser.add_argument("--sweep-k", type=int, default=8, help="learning rates of mlp_sweep")
    parser.add_argument("--stream-gb", type=float, default=1.2,
                        help="mlp_stream: GB of the memory map whose streamed epoch's host "
                             "memory is measured (0: skip)")
    parser.add_argument("--stream-memory-worker", type=float, default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--implementations", default=None,
                        help="comma-separated; default: all for the workload")
    parser.add_argument("--wide-steps", type=int, default=8)
    parser.add_argument("--gpu-steps", type=int, default=20, help="batches of gpu_wide")
    parser.add_argument("--gpu-scale", type=int, default=1,
                        help="divide gpu_wide's widths and batch by K (CPU smoke check)")
    parser.add_argument("--devices", default=None, help="e.g. 1,2,4: fit on forced host devices")
    parser.add_argument("--mesh-worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(HERE / "results" / "bench_train.json"))
    args = parser.parse_args(argv)
    if args.mesh_worker:
        print(json.dumps(mesh_worker(args.mesh_worker, args.repeats)))
        return
    if args.stream_memory_worker:
        print(json.dumps(memory_worker(args.stream_memory_worker)))
        return
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0]}",
              "jax": jax.__version__, "command": " ".join(sys.argv),
              "xla_flags": os.environ.get("XLA_FLAGS"), "results": {}}
    if args.devices:
        report["devices"] = run_devices([int(c) for c in args.devices.split(",")], args.repeats)
    for name in filter(None, args.workloads.split(",")):
        if name == "mlp_sweep":  # K fits against one sweep (train_sweep.py)
            w = workload("mlp")
            w = w._replace(data=jax.block_until_ready((jnp.asarray(w.x), jnp.asarray(w.y))))
            report["results"][name] = sweep_rows(w, funcdl_model(w.sizes, w.activations),
                                                 args.repeats, settle, first_steps(w),
                                                 args.sweep_k)
            continue
        if name == "mlp_stream":  # streamed fit against in-memory fit (train_stream.py)
            w = workload("mlp")
            report["results"][name] = stream_rows(w, funcdl_model(w.sizes, w.activations),
                                                  args.repeats, timed_side_by_side)
            report["mlp_stream_memory"] = (run_memory_worker(__file__, args.stream_gb)
                                           if args.stream_gb > 0 else None)
            continue
        w = workload(name, args.wide_steps, args.gpu_steps, args.gpu_scale)
        w = w._replace(data=(w.x, w.y) if from_numpy(name) else
                       jax.block_until_ready((jnp.asarray(w.x), jnp.asarray(w.y))))
        table = (GPU_IMPLEMENTATIONS if name == "gpu_wide" else
                 NUMPY_IMPLEMENTATIONS if from_numpy(name) else IMPLEMENTATIONS)
        names = args.implementations.split(",") if args.implementations else list(table)
        runs = {impl: table[impl](w) for impl in names if impl in table}
        rows = timed_side_by_side(runs, args.repeats)
        same_work(w, table, rows, runs)
        report["results"][name] = rows
        for impl, row in rows.items():
            print(f"{name:8s} {impl:26.26s} {row['seconds'] * 1e3:10.2f} ms  "
                  f"(min {row['min_seconds'] * 1e3:.2f} ms, CPU {row['cpu_seconds']:.3f} s; "
                  f"compile {row['compile_s']:.2f} s)", flush=True)
        if name == "gpu_wide":
            summary = gpu_summary(w, rows, args.repeats, args.gpu_scale)
            report["gpu_wide"] = dict(summary, sizes=w.sizes, batch=w.batch,
                                      scale=args.gpu_scale)
    print(markdown(report))
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return report


def markdown(report):
    lines = ["| workload | implementation | median ms | x hand scan | compile s | dispatched | "
             "rel diff vs fit |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, rows in report["results"].items():
        if name in ("gpu_wide", "mlp_sweep", "mlp_stream"):
            continue
        scan = rows.get("jax+optax scan", {}).get("seconds")
        for impl, row in rows.items():
            ratio = f"{row['seconds'] / scan:.2f}" if scan and impl != COPY else "-"
            queued = f"{row['dispatched']:.0%}" if row["dispatched"] is not None else ""
            lines.append(f"| {name} | {impl} | {row['seconds'] * 1e3:.2f} | {ratio} | "
                         f"{row['compile_s']:.2f} | {queued} | {diff_of(row)} |")
        if "fit jax" in rows and scan:
            fit, bar = rows["fit jax"]["seconds"], rows.get("fit jax + progress", {})
            lines.append(f"| {name} | fit overhead over the scan | "
                         f"{(fit - scan) * 1e3:+.2f} ms per call | | | | |")
            if bar:
                lines.append(f"| {name} | progress bar cost | "
                             f"{(bar['seconds'] / fit - 1) * 100:+.1f}% | | | | |")
            fastest, cpu = (rows["fit jax"][key] / rows["jax+optax scan"][key]
                            for key in ("min_seconds", "cpu_seconds"))
            lines.append(f"| {name} | fit jax / hand scan: fastest round, CPU time | "
                         f"{fastest:.2f}x, {cpu:.2f}x | | | | |")
            for other, label in (("fit funcdl", "fit funcdl / fit jax"),
                                 ("jax+optax loop", "fit jax / hand loop")):
                if other in rows:
                    ratio = (rows[other]["seconds"] / fit if other == "fit funcdl"
                             else fit / rows[other]["seconds"])
                    lines.append(f"| {name} | {label} | {ratio:.2f}x | | | | |")
    if "mlp_sweep" in report["results"]:
        lines += ["", sweep_markdown("mlp_sweep", report["results"]["mlp_sweep"])]
    if "mlp_stream" in report["results"]:
        lines += ["", stream_markdown("mlp_stream", report["results"]["mlp_stream"],
                                      report.get("mlp_stream_memory"))]
    if "gpu_wide" in report:
        lines += ["", gpu_markdown(report["gpu_wide"], report["results"]["gpu_wide"])]
    return "\n".join(lines)


def diff_of(row):
    return f"{row['rel_diff_vs_fit']:.1e}" if "rel_diff_vs_fit" in row else ""


def gpu_markdown(summary, rows):
    rates = summary["matmul_flops_per_s"]
    size = summary["matmul_size"]
    lines = [f"gpu_wide {'-'.join(map(str, summary['sizes']))}, batch {summary['batch']}, "
             f"{summary['steps']} steps (scale 1/{summary['scale']}): model "
             f"{summary['model_flops_per_step'] / 1e12:.4g} TFLOP per step; matmul "
             f"{size}x{size}@{size}x{size}: float32 {rates['float32'] / 1e12:.4g}, "
             f"bf16 {rates['bfloat16'] / 1e12:.4g} TFLOP/s", "",
             "| implementation | median ms | steps/s | x hand scan | x hand loop | "
             "model TFLOP/s | % matmul rate | compile s | rel diff vs fit |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for impl, row in rows.items():
        if impl == COPY:
            lines.append(f"| {impl} | {row['seconds'] * 1e3:.2f} | | | | | | | |")
            continue
        ratios = [f"{r:.3f}" if r else "-" for r in
                  (row["x_hand_scan_steps_per_s"], row["x_hand_loop_steps_per_s"])]
        lines.append(f"| {impl} | {row['seconds'] * 1e3:.2f} | {row['steps_per_s']:.2f} | "
                     f"{ratios[0]} | {ratios[1]} | {row['model_flops_per_s'] / 1e12:.3g} | "
                     f"{row['of_matmul_rate']:.1%} | {row['compile_s']:.2f} | {diff_of(row)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
