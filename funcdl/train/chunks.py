"""A streamed epoch cut into chunks of whole batches, on the host (`stream.py`'s sources).

A chunk is `steps` consecutive batches of `batch` rows each, starting at batch `step0` of its
epoch, stacked along a new leading axis: every leaf `(steps, batch, ...)`. The compiled
program trains on a chunk as one `lax.scan` (`stream_run.py`). Chunks hold about
`CHUNK_BYTES` of data each: `steps = ceil(n / ceil(n / k))` for an epoch of n full batches
(when n is known ahead) and `k = CHUNK_BYTES // bytes of one batch` (at least 1), so the
chunks of an epoch have one size except its last (one more compiled program, shared by all
epochs); when n is not known ahead, chunks of k batches until the iterator ends. A chunk
knows whether it ends its epoch (`ends`: the iterator is read one batch past a full chunk
before it is handed on), so that a group of accumulated micro-batches (`fit(accumulate=k)`,
which may span chunks) is applied at the epoch's last batch.

Shapes: every batch must have the first batch's structure, trailing shapes, dtypes and
number of rows, except the epoch's last batch, which may have fewer rows: it is a chunk of
its own (`steps` 1; one more compiled program). Any other change is a ValueError naming
`data` and the batch (its epoch and index).
"""
import math
from typing import Any, Callable, Iterator, NamedTuple, Optional

import jax
import numpy as np

from funcdl.train import host_arrays
from funcdl.train.stream import host_batch

# Data per chunk (x and y of its batches). 4 MB: of 2, 4, 8 and 16 MB, the fastest streamed MLP
# epoch (benchmarks/bench_train.py --workloads mlp_stream): each call's ~1 ms of overhead
# against the fresh memory of the chunks on their way at once (a `fit` call's first ones).
CHUNK_BYTES = 4 << 20


class HostChunk(NamedTuple):
    step0: int  # the epoch's index of the chunk's first batch
    steps: int  # batches in the chunk
    batch: int  # rows per batch
    data: Any  # (x, y) with leaves (steps, batch, ...) (NumPy); a memory map's: row indices
    ends: bool = False  # the chunk's last batch is its epoch's last


def chunk_steps(batch_bytes: int, n_batches: Optional[int]) -> int:
    """Batches per chunk: about CHUNK_BYTES, spread evenly over `n_batches` when known."""
    most = max(1, CHUNK_BYTES // max(1, batch_bytes))
    if n_batches is None or n_batches <= 0:
        return most
    return math.ceil(n_batches / math.ceil(n_batches / most))


def _signature(pair):
    leaves, treedef = jax.tree_util.tree_flatten(pair)
    return treedef, tuple((leaf.shape[1:], leaf.dtype) for leaf in leaves), len(leaves[0])


def _describe(signature) -> str:
    treedef, leaves, rows = signature
    shapes = ", ".join(f"{(rows,) + tuple(shape)} {dtype}" for shape, dtype in leaves)
    return f"{rows} rows ({shapes}; structure {treedef})"


def _stack(pairs, stack):
    return jax.tree_util.tree_map(lambda *leaves: stack(leaves), *pairs)


class BatchShapes:
    """The full batch of a streamed `fit` (`first`, a host pair) and the checks of the others."""

    def __init__(self, first):
        self.full = _signature(first)
        self.rows = self.full[2]
        self.bytes = sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(first))

    def kind(self, pair, where: str) -> str:
        """"full", or "short" (fewer rows, else the same): a ValueError for anything else."""
        signature = _signature(pair)
        if signature == self.full:
            return "full"
        if signature[:2] == self.full[:2] and signature[2] < self.rows:
            return "short"
        raise ValueError(f"`data`: {where} has {_describe(signature)}, but the first batch has "
                         f"{_describe(self.full)}; every batch must have the first one's shapes "
                         "and dtypes (only the last batch of an epoch may have fewer rows)")


def iterable_chunks(batches: Iterator, shapes: BatchShapes, steps: int, epoch: int,
                    convert: Callable = host_batch,
                    stack: Callable = host_arrays.stack) -> Iterator[HostChunk]:
    """The chunks (`steps` batches each, the last fewer) of the raw batches of one epoch, each
    raw batch made a host batch by `convert(raw, where)` (`stream.host_batch`, or the
    source's `training_batch`). A full chunk is handed on when the batch after it is read
    (or the iterator ends: the chunk `ends` the epoch). Each leaf of a chunk is
    `stack(leaves)` (`host_arrays`: on the CPU device's alignment, from a pool)."""
    pending, step0, index = [], 0, 0
    waiting = None  # a full chunk, handed on once the next batch shows whether it is the last
    batches = iter(batches)
    for raw in batches:
        where = f"batch {index} of epoch {epoch}"
        pair = convert(raw, where)
        kind = shapes.kind(pair, where)
        if waiting is not None:
            yield waiting
            waiting = None
        if kind == "short":
            after = next(batches, None)
            if after is not None:
                raise ValueError(
                    f"`data`: {where} has {_signature(pair)[2]} rows and is followed by more "
                    f"batches, but the first batch has {shapes.rows}; only the last batch of "
                    "an epoch may have fewer rows")
            if pending:
                yield HostChunk(step0, len(pending), shapes.rows, _stack(pending, stack))
                step0 += len(pending)
            yield HostChunk(step0, 1, _signature(pair)[2], _stack([pair], stack), ends=True)
            return
        pending.append(pair)
        index += 1
        if len(pending) == steps:
            waiting = HostChunk(step0, steps, shapes.rows, _stack(pending, stack))
            step0, pending = step0 + steps, []
    if waiting is not None:
        yield waiting._replace(ends=True)
    elif pending:
        yield HostChunk(step0, len(pending), shapes.rows, _stack(pending, stack), ends=True)
    elif index == 0:
        raise ValueError(f"`data` yielded no batches in epoch {epoch}")


def memmap_chunks(order: np.ndarray, batch: int, n_full: int, remainder: int, steps: int,
                  first_step: int = 0) -> Iterator[HostChunk]:
    """The chunks of one epoch of in-memory `fit`'s layout, as row indices into `x`, `y`:
    batch b is `order[b * batch : (b + 1) * batch]`; the last `remainder` rows one more."""
    for step0 in range(first_step, n_full, steps):
        end = min(step0 + steps, n_full)
        rows = order[step0 * batch:end * batch].reshape(end - step0, batch)
        yield HostChunk(step0, end - step0, batch, rows, ends=end == n_full and not remainder)
    if remainder:
        yield HostChunk(n_full, 1, remainder, order[n_full * batch:].reshape(1, remainder),
                        ends=True)
