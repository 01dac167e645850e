"""The host side of `fit`'s data: what each compiled call reads, and who reads which rows.

Without a mesh the data go to the device once per `fit` call and the compiled epoch gathers
its batches itself (`batches.take_rows`). On a mesh, the host builds every call's batches
(`Fed`, below) in the order the single-device program would visit them::

    shuffle_key, _ = jax.random.split(jax.random.fold_in(key, epoch))
    order = jax.random.permutation(shuffle_key, n_rows)   # shuffled minibatch runs
    order = arange(n_rows)                                # otherwise
    full[b, r] = x[order[b * B + r]]     b < n_full, r < B      (n_full, B, ...)
    last[r]    = x[order[n_full * B + r]]         r < n % B     (n % B, ...)

`full` is one global array sharded `NamedSharding(mesh, P(None, "data"))`: the device at
position k of the "data" axis (of size D) holds `full[:, k*B/D : (k+1)*B/D]`, the same rows of
every batch as the single-device program's batch would give it. `last` is sharded along
"data" when D divides `n % B`, else replicated (it is smaller than one batch); so is a
validation `full` whose batch (`min(B, n_val)`) D does not divide. Both are built
with `jax.make_array_from_callback`: jax asks only for this process's devices' shards, and
each shard reads from the host `x` (NumPy or memory-mapped) only its own rows
`x[order[b*B + lo : b*B + hi]]` (one fancy index per shard, `read_rows`). So in a run of P
processes each reads and transfers about 1/P of every batch, never the whole data set
(except the replicated `last`). Validation rows are fed the same way in their fixed order,
once per `fit` call; so are the training rows when the order does not change between calls
(no shuffling, or full batch).
"""
import functools

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from funcdl.train.batches import Fed, batch_layout
from funcdl.train.sharding import place_data


@functools.partial(jax.jit, static_argnames=("n_rows",))
def _epoch_order(key, epoch, *, n_rows):
    """The single-device program's row order of epoch `epoch` (epochs.py), bit for bit."""
    shuffle_key, _ = jax.random.split(jax.random.fold_in(key, epoch))
    return jax.random.permutation(shuffle_key, n_rows)


def epoch_order(key, epoch: int, n_rows: int) -> np.ndarray:
    """`int` (n_rows,): the rows of epoch `epoch` in the order a shuffled `fit` visits them."""
    return np.asarray(_epoch_order(key, np.int32(epoch), n_rows=n_rows))


def read_rows(host, rows: np.ndarray) -> np.ndarray:
    """`host[rows]` as a NumPy array: the only place the feed reads the caller's data (`rows`
    any int array: the result has shape `rows.shape + host.shape[1:]`)."""
    return np.asarray(host[rows])


def _host(leaf):
    """`leaf` readable by rows on the host: NumPy arrays (memory maps included) as they are."""
    return leaf if isinstance(leaf, np.ndarray) else np.asarray(leaf)


def _rows(tree) -> int:
    """The rows of an array or of a pytree of arrays (all leaves have as many: `checks`)."""
    return len(jax.tree_util.tree_leaves(tree)[0])


def _rows_array(mesh, host, rows: np.ndarray, spec: PartitionSpec):
    """The global array `host[rows]` (shape `rows.shape + host.shape[1:]`) with sharding
    `spec` on `mesh`; every addressable shard reads only its own `rows[index]`. Devices with
    the same index (replicas) share one read."""
    shape = rows.shape + host.shape[1:]
    reads = {}

    def shard(index):
        index = tuple(index)[:rows.ndim]
        key = tuple((s.start, s.stop, s.step) for s in index)
        if key not in reads:
            reads[key] = read_rows(host, rows[index])
        return reads[key]

    return jax.make_array_from_callback(shape, NamedSharding(mesh, spec), shard)


def fed_rows(mesh, tree, order: np.ndarray, batch: int):
    """Every leaf of `tree` (all with `len(order)` rows) as a `Fed` of its rows `order` in
    batches of `batch`. A batch axis is sharded along "data" where the mesh's "data" size
    divides it (always for training batches: `check_mesh`), else replicated."""
    n_full = len(order) // batch
    full_rows = order[:n_full * batch].reshape(n_full, batch)
    last_rows = order[n_full * batch:]
    size = mesh.shape["data"]
    full_spec = PartitionSpec(None, "data") if batch % size == 0 else PartitionSpec()
    last_spec = PartitionSpec("data") if len(last_rows) % size == 0 else PartitionSpec()

    def leaf(array):
        host = _host(array)
        full = _rows_array(mesh, host, full_rows, full_spec)
        return Fed(full, _rows_array(mesh, host, last_rows, last_spec) if len(last_rows) else None)

    return jax.tree_util.tree_map(leaf, tree)


class Feed:
    """`fit`'s data, call by call: `data(epoch)` is the `(x, y, x_val, y_val)` of the compiled
    call that starts at `epoch` (`run_epochs`'s `data`; `x_val`, `y_val` None without
    validation). Without a mesh: the arrays on device, the same for every call. On a mesh:
    `Fed` leaves (see the module); with `shuffle` (a shuffled minibatch run) the training
    ones are built for every epoch and hold that ONE epoch (so such a call runs one epoch),
    else they are built once, like the validation ones."""

    def __init__(self, x, y, validation, mesh, batch_size, shuffle: bool, key, val_batch=None):
        x_val, y_val = validation if validation is not None else (None, None)
        self.fixed = None
        if mesh is None:
            self.fixed = place_data((x, y, x_val, y_val))
            return
        self.mesh, self.key, self.n_rows = mesh, key, _rows(x)
        self.batch = batch_layout(self.n_rows, batch_size)[0]
        self.train = jax.tree_util.tree_map(_host, (x, y))  # x, y: arrays or pytrees of them
        self.val = (None, None) if validation is None else fed_rows(
            mesh, (x_val, y_val), np.arange(_rows(x_val)),
            val_batch if val_batch is not None else min(self.batch, _rows(x_val)))
        if not shuffle:
            self.fixed = self._build(np.arange(self.n_rows))

    def _build(self, order):
        return fed_rows(self.mesh, self.train, order, self.batch) + self.val

    def data(self, epoch: int):
        if self.fixed is not None:
            return self.fixed
        return self._build(epoch_order(self.key, epoch, self.n_rows))
