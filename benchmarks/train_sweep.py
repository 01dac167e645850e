"""bench_train's `mlp_sweep` rows (issue 18): the MLP workload (784-256-256-10, one shuffled
epoch of 60,000 synthetic rows, batch 128, Adam, cross-entropy) for K learning rates, as K
separate `fdl.train.fit` calls one after another against one `fdl.train.sweep` of the K (one
program, vmapped over the learning rates; the data and batches shared), and the same two
written by hand in JAX + optax (the bound on what vmapping gives on this machine): "K
hand-written scans", one jitted `lax.scan` epoch (the learning rate an argument: one compile)
called K times, and "hand-vmapped scan of K", `jax.vmap` of that epoch over the K learning
rates (`x`, `y` and the batch order unbatched: shared), one call, and "hand-written lax.map of
K", the K epochs one after another inside one program (`lax.map` over the learning rates: one
compile, each configuration's matrix products of one fit's shapes). All three visit fit's batches in
fit's order (train_workloads' `epoch_order`), the last partial batch included.

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
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from funcdl import losses, optim, train
from train_workloads import epoch_order, jax_loss, layout

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


def hand_written(model, params, lrs):
    """`(loops, vmapped, mapped)`: runs of workload `w` (`run(w)` -> params: a list of K, or
    stacked K): one jitted epoch called per learning rate, that epoch vmapped over them, and
    `lax.map`ped over them."""
    loss_of = jax_loss("ce")

    def epochs(p, lr, x, y, *, plan):
        batch, n_full, remainder, shuffle, n_epochs = plan
        opt = optax.adam(lr)

        def train_on(carry, order, start, size):
            p, s = carry
            rows = lax.dynamic_slice_in_dim(order, start, size)
            xb, yb = jnp.take(x, rows, axis=0), jnp.take(y, rows, axis=0)
            g = jax.grad(lambda q: loss_of(model.apply(q, xb), yb))(p)
            updates, s = opt.update(g, s, p)
            return optax.apply_updates(p, updates), s

        def epoch(carry, e):
            order = epoch_order(e, len(x)) if shuffle else jnp.arange(len(x))
            carry, _ = lax.scan(lambda c, b: (train_on(c, order, b * batch, batch), None),
                                carry, jnp.arange(n_full, dtype=jnp.int32))
            if remainder:
                carry = train_on(carry, order, n_full * batch, remainder)
            return carry, None

        start = (jax.tree_util.tree_map(jnp.copy, p), opt.init(p))
        return lax.scan(epoch, start, jnp.arange(n_epochs, dtype=jnp.int32))[0][0]

    one = jax.jit(epochs, static_argnames="plan")
    many = jax.jit(lambda p, lr, x, y, plan: jax.vmap(
        lambda rate: epochs(p, rate, x, y, plan=plan))(lr), static_argnames="plan")
    in_turn = jax.jit(lambda p, lr, x, y, plan: lax.map(
        lambda rate: epochs(p, rate, x, y, plan=plan), lr), static_argnames="plan")
    rates = [jnp.float32(lr) for lr in lrs]
    stacked = jnp.asarray(lrs, jnp.float32)

    def loops(w):
        plan = layout(w) + (w.epochs,)
        return jax.block_until_ready([one(params, lr, *w.data, plan=plan) for lr in rates])

    def vmapped(w):
        return jax.block_until_ready(many(params, stacked, *w.data, plan=layout(w) + (w.epochs,)))

    def mapped(w):
        return jax.block_until_ready(in_turn(params, stacked, *w.data,
                                             plan=layout(w) + (w.epochs,)))
    return loops, vmapped, mapped


def _configs(ends, k, stacked):
    """`(k, n)` float64: each configuration's flattened params (`ends` a list of k params, or
    one params with a leading axis k when `stacked`)."""
    if not stacked:
        return np.stack([_flat(p) for p in ends])
    return np.stack([_flat(jax.tree_util.tree_map(lambda leaf: leaf[i], ends))
                     for i in range(k)])


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

    hand_loops, hand_vmapped, hand_mapped = hand_written(model, params, lrs)
    runs = {f"{k} fits": fits, f"sweep of {k}": swept,
            f"{k} hand-written scans": lambda w=w: hand_loops(w),
            f"hand-vmapped scan of {k}": lambda w=w: hand_vmapped(w),
            f"hand-written lax.map of {k}": lambda w=w: hand_mapped(w)}
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
    stacked = {f"{k} fits": False, f"sweep of {k}": True, f"{k} hand-written scans": False,
               f"hand-vmapped scan of {k}": True, f"hand-written lax.map of {k}": True}
    p_fits = _configs(ends[f"{k} fits"], k, False)
    for name in runs:
        if name != f"{k} fits":
            rows[name]["rel_diff_vs_fits"] = float(
                np.linalg.norm(_configs(ends[name], k, stacked[name]) - p_fits) / np.linalg.norm(p_fits - p0))

    def ratio(a, b, field):
        return rows[a][field] / rows[b][field]
    pairs = {"sweep_over_fits": (f"sweep of {k}", f"{k} fits"),
             "hand_vmapped_over_hand_loops": (f"hand-vmapped scan of {k}",
                                              f"{k} hand-written scans"),
             "sweep_over_hand_vmapped": (f"sweep of {k}", f"hand-vmapped scan of {k}"),
             "hand_mapped_over_hand_loops": (f"hand-written lax.map of {k}",
                                             f"{k} hand-written scans")}
    rows["summary"] = {"k": k, "learning_rates": list(lrs)}
    for name, (a, b) in pairs.items():
        rows["summary"].update({name: ratio(a, b, "seconds"),
                                f"{name}_fastest": ratio(a, b, "min_seconds"),
                                f"{name}_cpu": ratio(a, b, "cpu_seconds")})
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
    for label, field in (("sweep / fits", "sweep_over_fits"),
                         ("hand-vmapped / hand-written scans", "hand_vmapped_over_hand_loops"),
                         ("sweep / hand-vmapped", "sweep_over_hand_vmapped"),
                         ("hand lax.map / hand-written scans", "hand_mapped_over_hand_loops")):
        if field in summary:
            lines.append(f"| {name} | {label}: median, fastest round, CPU time | "
                         f"{summary[field]:.2f}x, {summary[field + '_fastest']:.2f}x, "
                         f"{summary[field + '_cpu']:.2f}x | | | | | |")
    return "\n".join(lines)
