"""Streamed batches on a mesh spanning several processes: each process holds its own part.

On a mesh whose devices belong to several processes, every process's `data` yields its
*process-local* part of each global batch, as a loader sharded by process does (grain's
`ShardByJaxProcess`): with the "data" axis of size D and this process's devices at `d` of
its positions, one global batch of B rows is made of `share = D / d` parts of `B / share`
rows each (the usual mesh over `jax.devices()`, devices process by process: `share` = P,
the number of processes, and the global batch is the concatenation of the parts in process
order). `jax.make_array_from_process_local_data` assembles a chunk `(steps, B / share, ...)`
of each process into the global `(steps, B, ...)` sharded `P(None, "data")` without any
communication: each process sends to its own devices only its own rows.

A last batch whose global rows D does not divide is replicated (as `feed.py` replicates
in-memory `fit`'s last batch): its parts are gathered (`multihost_utils.process_allgather`,
in the training thread) and placed on every device.

The processes meet in the compiled program's collectives, so before each chunk trains they
compare what they hold (`agree_on_chunk`: one `process_allgather` of three numbers per
chunk, on the devices, so it may wait for the chunk before it to finish): its number of
batches and rows, or that their `data` ended, or that reading it failed. Where they differ,
every process raises a ValueError naming each process's part (the failed process raises its
own error), so none waits for ever for another's program.
"""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

ENDED, CHUNK, FAILED = 0, 1, 2  # what a process holds at a chunk (agree_on_chunk)


def spans_processes(mesh) -> bool:
    """Whether `mesh` (a Mesh with a "data" axis; anything else: False, left to
    `sharding.check_mesh`) has devices of another process than this one."""
    return isinstance(mesh, Mesh) and "data" in mesh.axis_names and any(
        device.process_index != jax.process_index() for device in mesh.devices.flat)


def _data_positions(mesh) -> dict:
    """`{process: sorted "data" positions of its devices in mesh}`."""
    axis = mesh.axis_names.index("data")
    positions = {}
    for index, device in np.ndenumerate(mesh.devices):
        positions.setdefault(device.process_index, set()).add(index[axis])
    return {process: sorted(found) for process, found in positions.items()}


def process_share(mesh) -> int:
    """Parts of one global batch, one per group of processes holding the same "data"
    positions: the "data" size over this process's number of positions (1 off a mesh
    spanning processes)."""
    if not spans_processes(mesh):
        return 1
    return mesh.shape["data"] // len(_data_positions(mesh)[jax.process_index()])


def global_chunk(mesh, local: np.ndarray, share: int):
    """The global chunk leaf `(steps, rows * share, ...)` sharded `P(None, "data")` from this
    process's `local` `(steps, rows, ...)`, for `rows * share` that D divides (else the leaf
    is replicated: `replicated_chunk`)."""
    shape = (local.shape[0], local.shape[1] * share) + local.shape[2:]
    return jax.make_array_from_process_local_data(
        NamedSharding(mesh, PartitionSpec(None, "data")), local, shape)


def replicated_chunk(mesh, local: np.ndarray):
    """The global chunk leaf, replicated on every device of `mesh`, from the processes' parts
    `local` `(steps, rows, ...)`: gathered, one part per group of processes holding the same
    "data" positions (in their order), joined along the rows. A collective: every process
    calls it at the same chunk, in the training thread."""
    from jax.experimental import multihost_utils

    parts = np.asarray(multihost_utils.process_allgather(local))  # (P, steps, rows, ...)
    groups = {}
    for process, positions in sorted(_data_positions(mesh).items()):
        groups.setdefault(tuple(positions), process)
    whole = np.concatenate([parts[groups[key]] for key in sorted(groups)], axis=1)
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.make_array_from_callback(whole.shape, sharding, lambda index: whole[index])


def _describe(status: int, steps: int, rows: int) -> str:
    if status == ENDED:
        return "its `data` ended"
    if status == FAILED:
        return "reading its `data` failed (its own error says why)"
    return f"{steps} batch{'es' if steps != 1 else ''} of {rows} row{'s' if rows != 1 else ''}"


def agree_on_chunk(status: int, steps: int, rows: int, epoch: int, batch: int) -> None:
    """Compare this process's next chunk (`status` CHUNK: `steps` batches of `rows` rows each,
    its own part; ENDED: the epoch's batches ended; FAILED: reading them raised) with every
    other process's; `batch`: the epoch's batches before it. Returns when all hold the same,
    and in a FAILED process (which raises its own error); else a ValueError naming what each
    process holds. A collective: every process calls it once per chunk, in the same order."""
    from jax.experimental import multihost_utils

    mine = np.array([status, steps, rows], np.int64)
    gathered = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, 3)
    if status == FAILED or (gathered == gathered[0]).all():
        return
    parts = "; ".join(f"process {p}: {_describe(*map(int, row))}"
                      for p, row in enumerate(gathered))
    raise ValueError(
        f"`data`: the processes' batches disagree in epoch {epoch} from batch {batch} ({parts}); "
        "on a mesh spanning several processes each process's `data` yields its own part of "
        "every batch, so all must yield the same number of batches per epoch, each with the "
        f"same rows (this is process {jax.process_index()} of {jax.process_count()})")
