"""Helper process for tests/test_distributed.py (not a test module itself).

One training configuration, with most of `fit`'s options on at once (an MLP with dropout,
Adam, shuffling, validation, a metric, the progress bar; 82 training rows in batches of 16, so
the last batch has 2 rows, which the 4 devices do not divide), run in every way `fit` promises
to agree:

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/distributed_worker.py mesh OUT
        single-device fit (shuffled, and unshuffled: the streamed runs' reference); fit on a
        4-device Mesh(jax.devices(), ("data",)); the same mesh fit
        stopped after 3 epochs with a checkpoint and resumed to 6; a diverging run on the mesh
        (the NaN guard and its checkpoint); the two bad-input errors.
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/distributed_worker.py \\
        process ID 2 PORT OUT
        process ID of 2 (jax.distributed on 127.0.0.1:PORT, gloo collectives): fit on the mesh
        over all 4 devices of both processes, recording every row that process reads from
        `x` and `x_val` (`RowLog`), then a checkpoint/resume run; then a clean
        jax.distributed.shutdown().
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/distributed_worker.py \\
        stream ID 2 PORT OUT
        process ID of 2: streamed fit on the mesh over both processes, its generator yielding
        its own part of every unshuffled batch (`process_part`); the same batches in memory;
        a memory-mapped `x` whose reads are recorded (`MemmapLog`); then four broken streams
        of process 1, whose errors go to OUT/stream_errors<ID>.json.
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/distributed_worker.py \\
        disagree ID 2 PORT OUT
        process ID of 2 calls fit on the 4-device mesh with key PRNGKey(ID) and batch_size
        16 + 4 * ID (the other arguments equal): the ValueError it raises goes to
        OUT/disagree<ID>.json; then a clean jax.distributed.shutdown().

Results go to OUT as fdl.checkpoint files (params) and JSON (history); the test compares them.
"""
import functools
import json
import os
import sys

EPOCHS = 6
BATCH = 16
TRAIN_ROWS, VALIDATION_ROWS = 82, 16


@functools.lru_cache(maxsize=None)
def problem():
    """`(model, optimizer, metrics, params, x, y)`, the same in every process (NumPy data, fixed
    seeds). Built once per process: every `fit` then gets the same model, loss, optimizer and
    metric objects, so it compiles the epoch once per mesh."""
    import jax
    import numpy as np

    from funcdl import losses, nn, optim

    rng = np.random.default_rng(0)
    x = rng.standard_normal((TRAIN_ROWS + VALIDATION_ROWS, 5)).astype(np.float32)
    y = np.stack([np.sin(x[:, 0]) + x[:, 1] * x[:, 2], np.cos(x[:, 3]) - x[:, 4]], axis=1)
    model = nn.Sequential(nn.Linear(16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(2))
    params = jax.tree_util.tree_map(np.asarray, model.init(jax.random.PRNGKey(0), x[:BATCH]))
    return model, optim.adam(1e-2), {"mae": losses.l1_loss}, params, x, y.astype(np.float32)


def _logging_reads(base, doc):
    """A subclass of ndarray subclass `base` that records the index of every `[...]` read of
    it in `.reads` (a list of row lists, or `{"other": repr}` for an index that is not an int
    array)."""
    import numpy as np

    class Logged(base):
        __doc__ = doc

        def __getitem__(self, index):
            if isinstance(index, np.ndarray) and np.issubdtype(index.dtype, np.integer):
                self.reads.append(index.tolist())
            else:
                self.reads.append({"other": repr(index)})
            return np.asarray(super().__getitem__(index))

    return Logged


def row_log_class():
    import numpy as np
    return _logging_reads(np.ndarray, "An ndarray that records its reads (`_logging_reads`).")


def memmap_log_class():
    import numpy as np
    return _logging_reads(np.memmap, "A memory map that records its reads (`_logging_reads`); "
                                     "`fit` streams it as it streams any memory map.")


def logged(array):
    """A view of `array` that records its reads (see `row_log_class`)."""
    view = array.view(row_log_class())
    view.reads = []
    return view


def train(mesh, *, epochs=EPOCHS, batch_size=BATCH, x_log=None, **options):
    """`fit` of the configuration on `mesh` (None: one device); `options` go to `fit`.
    x_log: `(x_train, x_val)` to pass instead of the plain rows (e.g. `logged` views)."""
    import jax

    from funcdl import losses
    from funcdl.train import fit

    model, optimizer, metrics, params, x, y = problem()
    n = TRAIN_ROWS
    x_train, x_val = x_log if x_log is not None else (x[:n], x[n:])
    options = {"shuffle": True, **options}
    return fit(model, params, losses.mse_loss, optimizer, x_train, y[:n], epochs=epochs,
               batch_size=batch_size, key=jax.random.PRNGKey(1), progress=True,
               validation=(x_val, y[n:]), metrics=metrics, mesh=mesh, **options)


def diverging_run(mesh, path):
    """SGD with a huge step on the mesh: the NaN guard's error, after it wrote `path`."""
    from funcdl import losses, optim
    from funcdl.train import fit

    model, _, _, params, x, y = problem()
    try:
        fit(model, params, losses.mse_loss, optim.sgd(1e3), x, y, epochs=EPOCHS,
            batch_size=BATCH, mesh=mesh, progress=False, checkpoint=path)
    except FloatingPointError as error:
        return error
    raise SystemExit("fit with sgd(1e3) did not stop on a non-finite loss")


def save_run(out, name, params, history):
    from funcdl import checkpoint

    checkpoint.save(os.path.join(out, f"{name}.safetensors"), params)
    with open(os.path.join(out, f"{name}.json"), "w") as file:
        json.dump(history, file)


def error_of(call):
    try:
        call()
    except (TypeError, ValueError) as error:
        return [type(error).__name__, str(error)]
    return ["no error", ""]


def run_mesh(out):
    import jax
    from jax.sharding import Mesh

    devices = jax.devices()
    if len(devices) != 4:
        raise SystemExit(f"expected 4 forced host devices, got {len(devices)}: set XLA_FLAGS")
    mesh = Mesh(devices, ("data",))
    params, _, history = train(None)
    save_run(out, "single", params, history)
    params, _, history = train(mesh)
    save_run(out, "mesh", params, history)
    params, _, history = train(None, shuffle=False)  # the reference of the streamed runs
    save_run(out, "single_unshuffled", params, history)
    path = os.path.join(out, "mesh_checkpoint.safetensors")
    train(mesh, epochs=3, checkpoint=path)
    params, _, history = train(mesh, checkpoint=path, resume=True)
    save_run(out, "mesh_resumed", params, history)
    error = diverging_run(mesh, os.path.join(out, "diverged_checkpoint.safetensors"))
    save_run(out, "diverged", error.params,
             {"epoch": error.epoch, "step": error.step, **error.history})
    errors = {"no_data_axis": error_of(lambda: train(Mesh(devices, ("model",)))),
              "batch_not_divisible": error_of(lambda: train(mesh, batch_size=6))}
    with open(os.path.join(out, "errors.json"), "w") as file:
        json.dump(errors, file)


def run_process(process_id, num_processes, port, out):
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes,
                               process_id=process_id)
    from jax.sharding import Mesh

    if jax.process_count() != num_processes or jax.local_device_count() != 2:
        raise SystemExit(f"expected {num_processes} processes of 2 devices, got "
                         f"{jax.process_count()} of {jax.local_device_count()}")
    mesh = Mesh(jax.devices(), ("data",))
    x = problem()[4]
    x_log = logged(x[:TRAIN_ROWS]), logged(x[TRAIN_ROWS:])
    params, _, history = train(mesh, x_log=x_log)
    save_run(out, f"process{process_id}", params, history)
    with open(os.path.join(out, f"process{process_id}_reads.json"), "w") as file:
        json.dump({"x": x_log[0].reads, "x_val": x_log[1].reads}, file)
    path = os.path.join(out, "multiprocess_checkpoint.safetensors")
    train(mesh, epochs=3, checkpoint=path)
    # process 0 writes the file; fit makes every process wait for that write, so each one
    # resumes from it here without a barrier of its own
    params, _, history = train(mesh, checkpoint=path, resume=True)
    save_run(out, f"process{process_id}_resumed", params, history)
    jax.distributed.shutdown()
    print(f"process {process_id}: shut down cleanly", flush=True)


def process_part(process_id, num_processes, drop_last=False, last_rows=None, fail_at=None,
                 part=None):
    """A generator function over process `process_id`'s part of every batch of the unshuffled
    training rows in batches of BATCH (its rows `b*BATCH + k*part .. + part` of batch b, part
    = BATCH / num_processes; the last batch of 2 rows gives each process 1 row). Broken on
    purpose: `drop_last` leaves out the last batch, `last_rows` gives the last part that many
    rows, `fail_at` raises a RuntimeError at that batch, `part` gives every full part that
    many rows."""
    _, _, _, _, x, y = problem()
    part = BATCH // num_processes if part is None else part

    def batches():
        starts = list(range(0, TRAIN_ROWS, BATCH))
        for b, start in enumerate(starts[:-1] if drop_last else starts):
            if b == fail_at:
                raise RuntimeError(f"the loader of process {process_id} failed at batch {b}")
            rows = min(BATCH, TRAIN_ROWS - start)
            mine = rows // num_processes if rows < BATCH else part
            if rows < BATCH and last_rows is not None:
                mine = last_rows
            lo = start + process_id * mine
            yield x[lo:lo + mine], y[lo:lo + mine]

    return batches


def run_streaming_process(process_id, num_processes, port, out):
    """Streamed fit on the 4-device mesh of both processes: each process's generator yields
    its own part of every batch; the same batches in memory; a memory-mapped `x` whose reads
    are recorded; then four broken streams, whose errors go to OUT/stream_errors<ID>.json."""
    import jax
    import numpy as np

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes,
                               process_id=process_id)
    from jax.sharding import Mesh

    from funcdl import losses
    from funcdl.train import fit

    model, optimizer, metrics, params, x, y = problem()
    mesh = Mesh(jax.devices(), ("data",))
    n = TRAIN_ROWS

    def stream(data, **options):
        return fit(model, params, losses.mse_loss, optimizer, data, None, epochs=EPOCHS,
                   key=jax.random.PRNGKey(1), progress=True, validation=(x[n:], y[n:]),
                   metrics=metrics, mesh=mesh, **options)

    params_out, _, history = stream(process_part(process_id, num_processes))
    save_run(out, f"stream{process_id}", params_out, history)
    params_out, _, history = train(mesh, shuffle=False)  # the same batches, in memory
    save_run(out, f"arrays{process_id}", params_out, history)
    path = os.path.join(out, f"x{process_id}.npy")
    np.save(path, x[:n])
    x_map = np.load(path, mmap_mode="r").view(memmap_log_class())
    x_map.reads = []
    params_out, _, history = train(mesh, x_log=(x_map, x[n:]))
    save_run(out, f"memmap{process_id}", params_out, history)
    with open(os.path.join(out, f"memmap{process_id}_reads.json"), "w") as file:
        json.dump(x_map.reads, file)
    errors = {}
    for name, broken in (("fewer_batches", dict(drop_last=True)),
                         ("other_last_rows", dict(last_rows=2)),
                         ("loader_fails", dict(fail_at=3)),
                         ("other_part_rows", dict(part=4))):
        data = process_part(process_id, num_processes,
                            **(broken if process_id == 1 else {}))
        try:
            stream(data)
            errors[name] = ["no error", ""]
        except Exception as error:  # noqa: BLE001 - recorded for the test
            errors[name] = [type(error).__name__, str(error)]
    with open(os.path.join(out, f"stream_errors{process_id}.json"), "w") as file:
        json.dump(errors, file)
    jax.distributed.shutdown()
    print(f"process {process_id}: shut down cleanly", flush=True)


def run_disagreeing_process(process_id, num_processes, port, out):
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes,
                               process_id=process_id)
    from jax.sharding import Mesh

    from funcdl import losses
    from funcdl.train import fit

    model, optimizer, _, params, x, y = problem()
    mesh = Mesh(jax.devices(), ("data",))
    error = error_of(lambda: fit(model, params, losses.mse_loss, optimizer, x, y, epochs=EPOCHS,
                                 batch_size=BATCH + 4 * process_id, key=jax.random.PRNGKey(
                                     process_id), mesh=mesh, progress=False))
    with open(os.path.join(out, f"disagree{process_id}.json"), "w") as file:
        json.dump(error, file)
    jax.distributed.shutdown()
    print(f"process {process_id}: shut down cleanly", flush=True)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "mesh":
        run_mesh(*args)
    elif mode == "process":
        run_process(int(args[0]), int(args[1]), int(args[2]), args[3])
    elif mode == "stream":
        run_streaming_process(int(args[0]), int(args[1]), int(args[2]), args[3])
    elif mode == "disagree":
        run_disagreeing_process(int(args[0]), int(args[1]), int(args[2]), args[3])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
