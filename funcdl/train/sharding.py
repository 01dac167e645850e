"""Where `fit`'s arrays live: one device, or a `jax.sharding.Mesh` with a "data" axis.

On a mesh of D "data" devices (over one or many processes):

- params, optimizer state and the guard are replicated, `NamedSharding(mesh, P())`
  (`place_copy`); each process fills its own devices' copies from its own (equal) values;
- the training and validation rows are fed by the host call by call (`feed.py`): one epoch's
  full batches as ONE array `(n_full, B, ...)` sharded `P(None, "data")`, so the device at
  position k of the "data" axis holds rows `k*B/D .. (k+1)*B/D` of every batch b, i.e. the
  epoch's rows `order[b*B + k*B/D : b*B + (k+1)*B/D]`; each process reads and sends only
  the rows of its own devices;
- inside the compiled step each batch `(B, ...)` is `NamedSharding(mesh, P("data"))`
  (`batches.take_rows`): XLA splits the forward and backward passes by rows and reduces the
  gradient mean across devices itself, inside the program.

Without a mesh the data go to the device once per `fit` call (`place_data`). Every placement
of params and state makes a fresh copy, so that the compiled programs may donate (consume) it
while the caller's own arrays stay valid.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def check_mesh(mesh, batch: int) -> None:
    """TypeError/ValueError unless `mesh` is None or a Mesh with a "data" axis dividing `batch`."""
    if mesh is None:
        return
    if not isinstance(mesh, Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh or None, got {type(mesh).__name__}")
    if "data" not in mesh.axis_names:
        raise ValueError(f"`mesh` must have an axis named \"data\", got axes {mesh.axis_names}")
    size = mesh.shape["data"]
    if batch % size:
        raise ValueError(f"`batch_size` must be divisible by the mesh's \"data\" size {size}, "
                         f"got a batch of {batch} rows")


def _replicated(mesh, leaf):
    host = np.asarray(leaf)
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def place_copy(tree, mesh):
    """A fresh device copy of every leaf (replicated over `mesh` when given)."""
    if mesh is None:
        return jax.tree_util.tree_map(lambda leaf: jnp.array(leaf, copy=True), tree)
    return jax.tree_util.tree_map(lambda leaf: _replicated(mesh, leaf), tree)


def place_data(tree):
    """The data set on the default device, once per `fit` call without a mesh (not copied
    when it is already there). `jax.device_put`, not `jnp.asarray`: for NumPy data it is one
    host-to-device transfer (for a 188 MB `x`, `jnp.asarray` took twice as long)."""
    return jax.device_put(tree)


def to_host(tree):
    """NumPy copies of the leaves; a replicated array spanning several processes is read from
    this process's own copy (`np.asarray` of it alone would refuse)."""
    def host(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(leaf)
    return jax.tree_util.tree_map(host, tree)


def is_main_process() -> bool:
    """Whether this process shows the progress bar and writes checkpoints: process 0 only."""
    return jax.process_index() == 0


def writes_files(mesh) -> bool:
    """Whether this process writes checkpoints: process 0 only."""
    return jax.process_index() == 0
