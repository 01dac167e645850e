"""bench_train's `mlp_stream` rows (issue 18, data larger than memory): `fdl.train.fit` on
streamed data against in-memory `fit`, on the MLP workload (784-256-256-10, one epoch of
60,000 synthetic rows, batch 128, Adam, cross-entropy), and the host memory a streamed fit
of a 1.2 GB float32 memory map takes.

Throughput (same work, side by side, `timed_side_by_side`): in-memory `fit` of device-resident
`x, y` and of NumPy `x, y` (its host->device copy inside the run), shuffled and in order;
`fit` of `x` as a memory map of a file (shuffled as in memory: the same steps) and of a
re-iterable of NumPy batches in order (the same steps as in-memory `shuffle=False`). Ratios
are "x in memory" = in-memory seconds / streamed seconds (>= 0.9 is the target: the stream
keeps 90% of the in-memory throughput).

Memory (`memory_worker`, a fresh process): a float32 memory map of `--stream-gb` GB (rows of
784) written to a temporary file, two `fit` calls of one shuffled epoch over all of it; the
first compiles, the second is "the epoch" (growth from its start), and "with the first fit"
is the growth from before the first `fit` (compiling included). Reported: the process's anonymous memory (RssAnon
of /proc/self/status: what the process itself allocated, host copies and, on CPU, device
buffers) and its resident set (VmRSS: also the file's pages the memory map has read, which
the kernel can drop at any time) at the start of the epoch and their peaks during it
(sampled every 5 ms by a thread). Target: anonymous growth < 400 MB.
"""
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

import jax
import numpy as np

from funcdl import losses, optim, train

ROWS_MLP = 60_000


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Peak:
    """The peaks of RssAnon and VmRSS while the block runs (sampled by a thread)."""

    def __init__(self, every=0.005):
        self.every, self.peaks, self.stop = every, {"RssAnon": 0.0, "VmRSS": 0.0}, None

    def _sample(self):
        while not self.stop.is_set():
            for field in self.peaks:
                self.peaks[field] = max(self.peaks[field], _status_mb(field))
            self.stop.wait(self.every)

    def __enter__(self):
        self.start = {field: _status_mb(field) for field in self.peaks}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        return False


class Batches:
    """A re-iterable of in-order NumPy batches of `x`, `y` (what a loader hands `fit`)."""

    def __init__(self, x, y, batch):
        self.x, self.y, self.batch = x, y, batch

    def __len__(self):
        return -(-len(self.x) // self.batch)

    def __iter__(self):
        for start in range(0, len(self.x), self.batch):
            yield self.x[start:start + self.batch], self.y[start:start + self.batch]


def stream_rows(w, model, repeats, timed_side_by_side, folder=None):
    """`{implementation: row, "summary": {...}}` for workload `w` (MLP, NumPy `w.x, w.y`)."""
    params = model.init(jax.random.key(0), w.x[:1])
    folder = pathlib.Path(folder or tempfile.mkdtemp())
    np.save(folder / "x.npy", w.x)
    x_map = np.load(folder / "x.npy", mmap_mode="r")
    device = jax.block_until_ready(jax.device_put((w.x, w.y)))

    def run_of(x, y, **options):
        def run(guard=False):
            out = train.fit(model, params, losses.cross_entropy, optim.adam(w.lr), x, y,
                            epochs=w.epochs, progress=False, **options)
            return jax.block_until_ready(out[0]), None
        return run

    batched = dict(batch_size=w.batch)
    runs = {
        "in memory, device data, shuffled": run_of(*device, **batched),
        "in memory, NumPy data, shuffled": run_of(w.x, w.y, **batched),
        "streamed memory map, shuffled": run_of(x_map, w.y, **batched),
        "in memory, device data, in order": run_of(*device, shuffle=False, **batched),
        "in memory, NumPy data, in order": run_of(w.x, w.y, shuffle=False, **batched),
        "streamed batches, in order": run_of(Batches(w.x, w.y, w.batch), None),
    }
    rows = timed_side_by_side(runs, repeats)
    pairs = {"memory map / device data (shuffled)": ("streamed memory map, shuffled",
                                                     "in memory, device data, shuffled"),
             "memory map / NumPy data (shuffled)": ("streamed memory map, shuffled",
                                                    "in memory, NumPy data, shuffled"),
             "batches / device data (in order)": ("streamed batches, in order",
                                                  "in memory, device data, in order"),
             "batches / NumPy data (in order)": ("streamed batches, in order",
                                                 "in memory, NumPy data, in order")}
    summary = {name: {"x_in_memory_throughput": rows[reference]["seconds"] / rows[mine]["seconds"],
                      "x_in_memory_cpu": rows[reference]["cpu_seconds"]
                      / rows[mine]["cpu_seconds"]}
               for name, (mine, reference) in pairs.items()}
    return {**rows, "summary": summary}


def memory_worker(gigabytes: float, batch=128, width=784):
    """The memory of one shuffled streamed epoch over a `gigabytes` GB float32 memory map."""
    from train_workloads import funcdl_model
    rows = int(gigabytes * 1e9) // (width * 4)
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "x.npy")
    try:
        x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, width))
        rng = np.random.default_rng(0)
        for start in range(0, rows, 65_536):  # written in slices: no 1.2 GB array in memory
            stop = min(rows, start + 65_536)
            x[start:stop] = rng.standard_normal((stop - start, width), np.float32)
        x.flush()
        del x
        y = rng.integers(0, 10, rows).astype(np.int32)
        x_map = np.load(path, mmap_mode="r")
        model = funcdl_model((width, 256, 256, 10), "relu")
        params = model.init(jax.random.key(0), np.zeros((1, width), np.float32))

        def fit(x, y):
            return jax.block_until_ready(train.fit(
                model, params, losses.cross_entropy, optim.adam(1e-3), x, y, epochs=1,
                batch_size=batch, progress=False)[0])

        with Peak() as both:
            fit(x_map, y)  # a first epoch compiles the chunks' and the epoch row's programs
            started = time.perf_counter()
            with Peak() as peak:
                fit(x_map, y)
            seconds = time.perf_counter() - started
    finally:
        os.remove(path)
        os.rmdir(folder)
    return {"gigabytes": rows * width * 4 / 1e9, "rows": rows, "batch": batch,
            "seconds": seconds, "rows_per_s": rows / seconds,
            "start_mb": peak.start, "peak_mb": peak.peaks,
            "growth_mb": {field: peak.peaks[field] - peak.start[field] for field in peak.peaks},
            "before_first_fit_mb": both.start,
            "growth_with_first_fit_mb": {field: both.peaks[field] - both.start[field]
                                         for field in both.peaks}}


def run_memory_worker(script, gigabytes):
    out = subprocess.run([sys.executable, str(script), "--stream-memory-worker", str(gigabytes)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def stream_markdown(name, rows, memory):
    lines = [f"{name}: streamed fit against in-memory fit (MLP epoch, {ROWS_MLP:,} rows)", "",
             "| implementation | median ms | min ms | CPU s | compile s |",
             "|---|---:|---:|---:|---:|"]
    for impl, row in rows.items():
        if impl != "summary":
            lines.append(f"| {impl} | {row['seconds'] * 1e3:.1f} | {row['min_seconds'] * 1e3:.1f}"
                         f" | {row['cpu_seconds']:.2f} | {row['compile_s']:.2f} |")
    lines += ["", "| streamed / in memory | throughput ratio | CPU-time ratio |",
              "|---|---:|---:|"]
    for pair, ratio in rows["summary"].items():
        lines.append(f"| {pair} | {ratio['x_in_memory_throughput']:.2f}x | "
                     f"{ratio['x_in_memory_cpu']:.2f}x |")
    if memory:
        growth, first = memory["growth_mb"], memory["growth_with_first_fit_mb"]
        lines += ["", f"memory map of {memory['gigabytes']:.2f} GB ({memory['rows']:,} rows), one "
                  f"shuffled epoch in {memory['seconds']:.1f} s: anonymous memory grew by "
                  f"{growth['RssAnon']:.0f} MB (from {memory['start_mb']['RssAnon']:.0f} MB; "
                  f"{first['RssAnon']:.0f} MB from before the first, compiling fit), the "
                  f"resident set (the file's pages read included) by {growth['VmRSS']:.0f} MB "
                  f"({first['VmRSS']:.0f} MB)"]
    return "\n".join(lines)
