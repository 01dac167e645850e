"""Helper process for tests/test_distributed.py (not a test module itself).

One training configuration (an MLP, Adam, shuffling on, 98 rows in batches of 16, so the last
batch has 2 rows) run in the ways `fit` promises agree:

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/distributed_worker.py mesh OUT
        single-device fit; fit on a 4-device Mesh(jax.devices(), ("data",)); the same mesh fit
        stopped after 3 epochs with a checkpoint and resumed to 6; the two bad-input errors.
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/distributed_worker.py \\
        process ID 2 PORT OUT
        process ID of 2 (jax.distributed on 127.0.0.1:PORT, gloo collectives): fit on the mesh
        over all 4 devices of both processes, then a checkpoint/resume run; then a clean
        jax.distributed.shutdown().

Results go to OUT as fdl.checkpoint files (params, history) and JSON; the test compares them.
"""
import functools
import json
import os
import sys

EPOCHS = 6
BATCH = 16
ROWS = 98


@functools.lru_cache(maxsize=None)
def problem():
    """`(model, optimizer, params, x, y)`, the same in every process (NumPy data, fixed seeds).
    Built once per process: every `fit` then gets the same model, loss and optimizer objects,
    so it compiles the epoch once per mesh."""
    import jax
    import numpy as np

    from funcdl import nn, optim

    rng = np.random.default_rng(0)
    x = rng.standard_normal((ROWS, 5)).astype(np.float32)
    y = np.stack([np.sin(x[:, 0]) + x[:, 1] * x[:, 2], np.cos(x[:, 3]) - x[:, 4]], axis=1)
    model = nn.Sequential(nn.Linear(16), nn.Tanh(), nn.Linear(2))
    params = jax.tree_util.tree_map(np.asarray, model.init(jax.random.PRNGKey(0), x[:BATCH]))
    return model, optim.adam(1e-2), params, x, y.astype(np.float32)


def train(mesh, *, epochs=EPOCHS, checkpoint=None, resume=False, batch_size=BATCH):
    import jax

    from funcdl import losses
    from funcdl.train import fit

    model, optimizer, params, x, y = problem()
    return fit(model, params, losses.mse_loss, optimizer, x, y, epochs=epochs,
               batch_size=batch_size, shuffle=True, key=jax.random.PRNGKey(1), progress=False,
               mesh=mesh, checkpoint=checkpoint, resume=resume)


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
    path = os.path.join(out, "mesh_checkpoint.safetensors")
    train(mesh, epochs=3, checkpoint=path)
    params, _, history = train(mesh, checkpoint=path, resume=True)
    save_run(out, "mesh_resumed", params, history)
    errors = {"no_data_axis": error_of(lambda: train(Mesh(devices, ("model",)))),
              "batch_not_divisible": error_of(lambda: train(mesh, batch_size=6))}
    with open(os.path.join(out, "errors.json"), "w") as file:
        json.dump(errors, file)


def run_process(process_id, num_processes, port, out):
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes,
                               process_id=process_id)
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh

    if jax.process_count() != num_processes or jax.local_device_count() != 2:
        raise SystemExit(f"expected {num_processes} processes of 2 devices, got "
                         f"{jax.process_count()} of {jax.local_device_count()}")
    mesh = Mesh(jax.devices(), ("data",))
    params, _, history = train(mesh)
    save_run(out, f"process{process_id}", params, history)
    path = os.path.join(out, "multiprocess_checkpoint.safetensors")
    train(mesh, epochs=3, checkpoint=path)
    # process 0 writes the file; every process must see it before resuming from it
    multihost_utils.sync_global_devices("checkpoint written")
    params, _, history = train(mesh, checkpoint=path, resume=True)
    save_run(out, f"process{process_id}_resumed", params, history)
    jax.distributed.shutdown()
    print(f"process {process_id}: shut down cleanly", flush=True)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "mesh":
        run_mesh(*args)
    elif mode == "process":
        run_process(int(args[0]), int(args[1]), int(args[2]), args[3])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
