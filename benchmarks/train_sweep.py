"""bench_train's `mlp_sweep` rows (issue 18): the MLP workload (784-256-256-10, one shuffled
epoch of 60,000 synthetic rows, batch 128, Adam, cross-entropy) for K learning rates, as K
separate `fdl.train.fit` calls one after another against one `fdl.train.sweep` of the K (one
program, vmapped over the learning rates; the data and batches shared).

Compile and run are timed apart: "compiles" and "compile events s" count XLA compilations and
sum jax's compile-phase durations (trace, lowering, backend compile; `jax.monitoring`) during
the warm-up run; "compile s" is the warm-up's extra time over the median, as in the other rows
of bench_train; "seconds" is the median of the rounds after it (each round runs both, in turn,
after a garbage collection and a pause). "rel diff": |p_sweep - p_fits| / |p_fits - p0| over
all K configurations' params after the first 4 steps (bench_train's `first_steps`; float32
rounding: ~1e-5; over a whole epoch Adam on random labels amplifies rounding to O(1), as for
the other rows).
"""
import contextlib
import statistics
import time

import jax
import numpy as np

from funcdl import losses, optim, train

LEARNING_RATES = tuple(float(lr) for lr in np.geomspace(1e-4, 3e-3, 8))


@contextlib.contextmanager
def compile_events():
    """Yields `[count, seconds]`: XLA compilations and compile-phase seconds in the block."""
    seen = [0, 0.0]

    def listener(event, duration, **_):
        if event.startswith("/jax/core/compile/"):
            seen[1] += duration
            seen[0] += event == "/jax/core/compile/backend_compile_duration"

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(leaf, np.float64))
                           for leaf in jax.tree_util.tree_leaves(tree)])


def sweep_rows(w, model, repeats, settle, short, k=8):
    """`{"K fits": row, "sweep of K": row, "summary": {...}}` for workload `w` (its `data` on
    the device), `model` its funcdl model; `settle()` runs before each timed run; `short`:
    `w` cut to its first steps, for "rel diff"."""
    lrs = LEARNING_RATES[:k] if k <= len(LEARNING_RATES) else tuple(np.geomspace(1e-4, 3e-3, k))
    params = model.init(jax.random.key(0), w.x[:1])
    options = dict(epochs=w.epochs, batch_size=w.batch, progress=False)

    def fits(w=w):
        ends = [train.fit(model, params, losses.cross_entropy, optim.adam(lr), *w.data,
                          **options)[0] for lr in lrs]
        return jax.block_until_ready(ends)

    def swept(w=w):
        out = train.sweep(model, params, losses.cross_entropy, lambda lr: optim.adam(lr),
                          {"lr": np.array(lrs)}, *w.data, **options)
        return jax.block_until_ready(out[0])

    runs = {f"{k} fits": fits, f"sweep of {k}": swept}
    first, compiled = {}, {}
    for name, run in runs.items():
        with compile_events() as seen:
            start = time.perf_counter()
            run()
            first[name] = time.perf_counter() - start
        compiled[name] = tuple(seen)
    times, cpu = {name: [] for name in runs}, {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            settle()
            start, cpu_start = time.perf_counter(), time.process_time()
            run()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - cpu_start)
    rows = {}
    for name in runs:
        median = statistics.median(times[name])
        rows[name] = {"seconds": median, "min_seconds": min(times[name]),
                      "max_seconds": max(times[name]), "cpu_seconds": statistics.median(cpu[name]),
                      "compile_s": max(0.0, first[name] - median), "compiles": compiled[name][0],
                      "compile_events_s": compiled[name][1]}
    ends = {name: run(short) for name, run in runs.items()}
    p0 = _flat(params)
    p_fits = np.stack([_flat(p) for p in ends[f"{k} fits"]])
    p_sweep = np.stack([_flat(jax.tree_util.tree_map(lambda leaf: leaf[i], ends[f"sweep of {k}"]))
                        for i in range(k)])
    rows[f"sweep of {k}"]["rel_diff_vs_fits"] = float(
        np.linalg.norm(p_sweep - p_fits) / np.linalg.norm(p_fits - p0))
    rows["summary"] = {"k": k, "learning_rates": list(lrs),
                       "sweep_over_fits": rows[f"sweep of {k}"]["seconds"]
                       / rows[f"{k} fits"]["seconds"],
                       "sweep_over_fits_fastest": rows[f"sweep of {k}"]["min_seconds"]
                       / rows[f"{k} fits"]["min_seconds"],
                       "sweep_over_fits_cpu": rows[f"sweep of {k}"]["cpu_seconds"]
                       / rows[f"{k} fits"]["cpu_seconds"]}
    return rows


def sweep_markdown(name, rows):
    summary = rows["summary"]
    lines = ["| workload | implementation | median s | min-max s | compiles | compile s | "
             "compile events s | rel diff |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for impl, row in rows.items():
        if impl == "summary":
            continue
        diff = f"{row['rel_diff_vs_fits']:.1e}" if "rel_diff_vs_fits" in row else ""
        lines.append(f"| {name} | {impl} | {row['seconds']:.3f} | {row['min_seconds']:.3f}-"
                     f"{row['max_seconds']:.3f} | {row['compiles']} | {row['compile_s']:.2f} | "
                     f"{row['compile_events_s']:.2f} | {diff} |")
    lines.append(f"| {name} | sweep / fits: median, fastest round, CPU time | "
                 f"{summary['sweep_over_fits']:.2f}x, {summary['sweep_over_fits_fastest']:.2f}x, "
                 f"{summary['sweep_over_fits_cpu']:.2f}x | | | | | |")
    return "\n".join(lines)
