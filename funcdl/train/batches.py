"""Row-batched computation inside a compiled program: slicing batches, row-weighted means,
and stacked outputs, each as a `lax.scan` over the full batches plus one extra call for the
last, partial batch (its own shape, so any `loss_fn` is exact on it: no masking).
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec


def batch_layout(n_rows: int, batch_size):
    """`(batch, n_full, remainder)`: rows per full batch, how many full batches, rows left."""
    batch = n_rows if batch_size is None or batch_size >= n_rows else batch_size
    return batch, n_rows // batch, n_rows % batch


def validation_batch(n_val, validation_batch_size, batch: int, full_batch: bool):
    """Rows per validation batch: None without validation (`n_val` None), else
    `validation_batch_size` (at most `n_val`), else the training batch (all rows for full
    batch)."""
    if n_val is None:
        return None
    if validation_batch_size is not None:
        return min(validation_batch_size, n_val)
    return n_val if full_batch else min(batch, n_val)


class Fed(NamedTuple):
    """One leaf (e.g. `x`) of a mesh run's batches, built on the host in the order of the
    epoch (`feed.py`): row r of batch b is the epoch's row `b * B + r`."""
    full: Any  # (n_full, B, ...): the full batches, sharded P(None, "data")
    last: Any  # (n % B, ...): the last, partial batch (sharded or replicated); None if none


def _fed_batch(fed: Fed, start, size: int):
    """Batch `start // size` of `fed`: `fed.full[start // size]` for a full batch (its first
    axis is unsharded, so the batch keeps the rows' "data" sharding), `fed.last` for the last,
    partial one."""
    if size == fed.full.shape[1]:
        return lax.dynamic_index_in_dim(fed.full, start // size, axis=0, keepdims=False)
    return fed.last  # size == n % B < B


def take_rows(tree, start, size: int, order=None, mesh=None):
    """Rows `start .. start+size` of every leaf (of `order[start:start+size]` when shuffled),
    sharded along the mesh's "data" axis when `mesh` is given and divides `size`. A `Fed` leaf
    is already in order (`order` is not used for it): it gives its batch `start // size`."""
    rows = None if order is None else lax.dynamic_slice_in_dim(order, start, size)

    def leaf(a):
        if isinstance(a, Fed):
            return _fed_batch(a, start, size)
        if rows is None:
            return lax.dynamic_slice_in_dim(a, start, size)
        return jnp.take(a, rows, axis=0)

    batch = jax.tree_util.tree_map(leaf, tree, is_leaf=lambda a: isinstance(a, Fed))
    if mesh is not None and size % mesh.shape["data"] == 0:
        sharding = NamedSharding(mesh, PartitionSpec("data"))
        batch = jax.tree_util.tree_map(lambda a: lax.with_sharding_constraint(a, sharding), batch)
    return batch


def fold_batches(step, carry, arrays, n_rows: int, batch_size, mesh=None):
    """`carry` after `step(carry, batch_arrays, rows)` for every batch of `arrays` in order:
    a `lax.scan` over the full batches, then one more call for the last, partial batch (its
    own shape). `rows` is the batch's number of rows (a Python int)."""
    batch, n_full, remainder = batch_layout(n_rows, batch_size)

    def add_batch(carry, b):
        return step(carry, take_rows(arrays, b * batch, batch, mesh=mesh), batch), None

    carry, _ = lax.scan(add_batch, carry, jnp.arange(n_full, dtype=jnp.int32))
    if remainder:
        carry = step(carry, take_rows(arrays, n_full * batch, remainder, mesh=mesh), remainder)
    return carry


def stacked(fn, arrays, n_rows: int, batch_size, mesh=None):
    """`fn(*batch_arrays)` for all rows, batch by batch, concatenated along axis 0."""
    batch, n_full, remainder = batch_layout(n_rows, batch_size)

    def one_batch(_, b):
        return None, fn(*take_rows(arrays, b * batch, batch, mesh=mesh))

    _, out = lax.scan(one_batch, None, jnp.arange(n_full, dtype=jnp.int32))
    out = jax.tree_util.tree_map(lambda a: a.reshape((n_full * batch,) + a.shape[2:]), out)
    if remainder:
        last = fn(*take_rows(arrays, n_full * batch, remainder, mesh=mesh))
        out = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), out, last)
    return out
