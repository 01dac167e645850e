"""One streamed epoch of `fit`: its chunks through the compiled epoch program, then its row.

`loop.train` runs a streamed `fit` epoch by epoch; `StreamRun.epoch` is one epoch. The
epoch's chunks (`chunks.py`) are read and put on the device `prefetch` chunks ahead by a
thread (`prefetch.py`), each as `batches.Fed` leaves `(steps, batch, ...)`, and each trains
as ONE call of `epochs.run_epochs` with the chunk's plan (`steps` full batches of `batch`
rows, not shuffled, one epoch, no validation) and `step0` = the epoch's index of its first
batch, so batch j of the chunk is step `step0 + j`: its dropout key
`fold_in(step_key, step0 + j)` and its place in the guard are in-memory `fit`'s. The totals
(`accumulate.Totals`) go from one chunk to the next, so after the last one they are the
epoch's: the history row is `result_row(totals, rows of the epoch)` and the validation, in
one small program of their own (`epoch_row`, compiled once per number of rows), with the same functions as in-memory `fit`'s
program. The same batches therefore give in-memory `fit`'s params and history.

NaN guard, per chunk: each call is the fast program; the host reads its one flag while the
device runs the next chunk (already queued), and a chunk whose flag is False is run again
from its own inputs with the guarded program (`epochs.py`), whose state and guard end the
epoch (`loop._stop` raises the FloatingPointError). So the device is never idle for the check,
and at most the chunk after a bad one is computed for nothing.

Memory: the chunks on their way (`prefetch` waiting, one being made, one training and one
waiting for its check), never the data set: a memory map is read by rows, chunk by chunk.
On one device a chunk's arrays come from a pool (`host_arrays.HostPool`, one per `fit` call):
aligned, so that the CPU device takes them without a copy, and given back when the chunk's
call has finished and passed its check, so later chunks reuse memory already paged in.
On a mesh, a chunk's leaves are sharded `P(None, "data")` as in `feed.py` (a memory map's
rows read shard by shard, only this process's); a streamed batch whose rows the "data" size
does not divide is replicated. On a mesh spanning several processes each process's `data`
yields its own part of every batch, assembled into the global chunk without communication,
and the processes agree on each chunk before it trains (`process_batches.py`: one small
gather per chunk, which may wait for the chunk before it to finish).

Accumulation (`fit(accumulate=k)`): a group of k micro-batches may span chunks. Each call
takes the open group the call before it left (none at the epoch's first chunk) and returns
its own, and the chunk that holds the epoch's last batch (`HostChunk.ends`) passes its index,
so the groups, the leftover group and the updates are in-memory `fit`'s
(`micro_batches.py`). Row weights (`weights.py`) are leaves of the chunk's `y`: `(y, w)`.
"""
import functools
import warnings
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from funcdl.train.accumulate import result_row
from funcdl.train.batches import Fed
from funcdl.train.chunks import BatchShapes, chunk_steps, iterable_chunks, memmap_chunks
from funcdl.train.epochs import (EpochPlan, evaluation_totals, row_width, run_epochs,
                                 run_epochs_guarded)
from funcdl.train.feed import _rows_array, fed_rows
from funcdl.train.host_arrays import HostPool, stack
from funcdl.train.prefetch import Prefetch
from funcdl.train.process_batches import (CHUNK, ENDED, FAILED, agree_on_chunk, global_chunk,
                                          replicated_chunk, spans_processes)
from funcdl.train.sharding import place_data, to_host
from funcdl.train.stream import MemmapSource


@functools.partial(jax.jit, static_argnames=("plan",))
def epoch_row(params, totals, validation, *, plan: EpochPlan):
    """`(1, row_width)`: an epoch's history row from its training `totals` over `plan.n_rows`
    rows and, when `plan.val_batch`, the validation rows' (`epochs._one_epoch`'s row). The
    rows are static, as in `_one_epoch` (XLA divides by a constant as a product with its
    reciprocal: a traced count would round differently)."""
    spec = plan.spec
    means = result_row(spec.metrics, totals, plan.n_rows)
    if plan.val_batch is not None:
        val = evaluation_totals(spec, params, validation, plan.n_val_rows, plan.val_batch,
                                plan.mesh)
        means = jnp.concatenate([means, result_row(spec.metrics, val, plan.n_val_rows)])
    return means[None]


class _Placed(NamedTuple):
    step0: int
    steps: int
    rows: int  # rows of the chunk (global)
    data: Optional[tuple]  # (x, y, None, None): run_epochs' data, x and y of Fed leaves
    plan: EpochPlan
    local_batch: int = 0  # rows per batch of this process's part (several processes)
    local: Any = None  # this process's host part, still to be replicated (process_batches)
    epoch_last: int = -1  # the epoch's index of its last batch when this chunk holds it
    host: tuple = ()  # its pooled host arrays, given back once nothing reads them


def _shard(mesh, host: np.ndarray):
    """A chunk leaf `(steps, batch, ...)` on `mesh`: batches split along "data" when its size
    divides them, else replicated."""
    spec = PartitionSpec(None, "data") if host.shape[1] % mesh.shape["data"] == 0 \
        else PartitionSpec()
    return jax.device_put(host, NamedSharding(mesh, spec))


class StreamRun:
    """The streamed data of one `fit` call and how its epochs run (`loop.Run.stream`)."""

    def __init__(self, source, plan: EpochPlan, validation, key, numbers, prefetch: int):
        self.source, self.plan, self.key = source, plan, key
        self.numbers, self.prefetch = numbers, prefetch
        self.mesh = plan.mesh
        self.memmap = isinstance(source, MemmapSource)
        self.share = getattr(source, "share", 1)  # parts of a global batch (process_batches)
        self.agree = not self.memmap and spans_processes(self.mesh)
        self.resumes_mid_epoch = source.resumes_mid_epoch
        # one device: chunks in pooled aligned arrays, put on the device without a copy
        self.pool = HostPool() if self.mesh is None else None
        if self.memmap:
            self.host = jax.tree_util.tree_map(
                lambda a: a if isinstance(a, np.ndarray) else np.asarray(a), source.tree)
            batch_bytes = sum(np.dtype(a.dtype).itemsize * int(np.prod(a.shape[1:]))
                              for a in jax.tree_util.tree_leaves(self.host)) * source.rows
            self.steps = chunk_steps(batch_bytes, source.n_full)
        else:
            self.shapes = BatchShapes(source.first_batch)
            self.steps = chunk_steps(self.shapes.bytes, source.steps)
        self.validation = (None, None)
        if validation is not None:
            self.validation = (place_data(tuple(validation)) if self.mesh is None else fed_rows(
                self.mesh, tuple(validation), np.arange(plan.n_val_rows), plan.val_batch))

    def _chunk_plan(self, steps: int, batch: int) -> EpochPlan:
        return self.plan._replace(n_rows=steps * batch, batch=batch, n_full=steps, remainder=0,
                                  shuffle=False, n_epochs=1, val_batch=None, n_val_rows=0,
                                  progress=None, guarded=False, first_step=0)

    def _place(self, chunk) -> _Placed:
        """A host chunk on the device (run in the prefetch thread): Fed leaves."""
        placed = self._placed(chunk)
        return placed._replace(epoch_last=chunk.step0 + chunk.steps - 1) if chunk.ends \
            else placed

    def _placed(self, chunk) -> _Placed:
        if self.memmap:
            rows = chunk.data
            if self.mesh is None:
                return self._on_device(chunk, jax.tree_util.tree_map(
                    lambda host: self.pool.take_rows(host, rows), self.host))
            else:
                spec = PartitionSpec(None, "data") if chunk.batch % self.mesh.shape["data"] \
                    == 0 else PartitionSpec()

                def leaf(host):
                    return Fed(_rows_array(self.mesh, host, rows, spec), None)
            x, y = jax.tree_util.tree_map(leaf, self.host)
        elif self.agree:  # this process's part of each batch (process_batches.py)
            batch = chunk.batch * self.share
            placed = _Placed(chunk.step0, chunk.steps, chunk.steps * batch, None,
                             self._chunk_plan(chunk.steps, batch), chunk.batch)
            if batch % self.mesh.shape["data"]:  # replicated, gathered by the training thread
                return placed._replace(local=chunk.data)
            x, y = jax.tree_util.tree_map(
                lambda host: Fed(global_chunk(self.mesh, host, self.share), None), chunk.data)
            return placed._replace(data=(x, y, None, None))
        elif self.mesh is None:
            return self._on_device(chunk, chunk.data)
        else:
            x, y = jax.tree_util.tree_map(lambda host: Fed(_shard(self.mesh, host), None),
                                          chunk.data)
        return _Placed(chunk.step0, chunk.steps, chunk.steps * chunk.batch, (x, y, None, None),
                       self._chunk_plan(chunk.steps, chunk.batch))

    def _on_device(self, chunk, pair) -> _Placed:
        """A chunk's host pair (pooled arrays) on the one device: Fed leaves."""
        x, y = jax.tree_util.tree_map(lambda host: Fed(jax.device_put(host), None), pair)
        return _Placed(chunk.step0, chunk.steps, chunk.steps * chunk.batch, (x, y, None, None),
                       self._chunk_plan(chunk.steps, chunk.batch),
                       host=tuple(jax.tree_util.tree_leaves(pair)))

    def _next_chunk(self, chunks, epoch: int, batch: int) -> Optional[_Placed]:
        """The epoch's next placed chunk (None after its last), its first batch `batch`; on
        a mesh spanning several processes once all agree on it (`agree_on_chunk`)."""
        if not self.agree:
            return next(chunks, None)
        try:
            chunk = next(chunks, None)
        except Exception:  # the loader's or a shape error: the others are told first
            agree_on_chunk(FAILED, 0, 0, epoch, batch)
            raise
        if chunk is None:
            agree_on_chunk(ENDED, 0, 0, epoch, batch)
            return None
        agree_on_chunk(CHUNK, chunk.steps, chunk.local_batch, epoch, batch)
        if chunk.local is None:
            return chunk
        x, y = jax.tree_util.tree_map(
            lambda host: Fed(replicated_chunk(self.mesh, host), None), chunk.local)
        return chunk._replace(data=(x, y, None, None), local=None)

    def _host_chunks(self, epoch: int, first_step: int):
        if self.memmap:
            source = self.source
            return memmap_chunks(source.order(self.key, epoch), source.rows, source.n_full,
                                 source.remainder, self.steps, first_step)
        return iterable_chunks(self.source.batches(epoch), self.shapes, self.steps, epoch,
                               self.source.training_batch,
                               stack if self.pool is None else self.pool.stack)

    def _call(self, state, chunk: _Placed, epoch: int, guarded: bool):
        """The chunk's call from `state` = `(params, opt_state, guard, totals, group)` (group:
        the open accumulation group, None at the epoch's start or without accumulation)."""
        program = run_epochs_guarded if guarded else run_epochs
        plan = chunk.plan._replace(guarded=True) if guarded else chunk.plan
        group = () if self.plan.accumulate == 1 else (state[4], np.int32(chunk.epoch_last))
        return program(*state[:4], chunk.data, self.key, np.int32(epoch), np.int32(1),
                       np.int32(1), np.int32(0), self.numbers, np.int32(chunk.step0), *group,
                       plan=plan)

    def epoch(self, pos, bar, progress_per_epoch: int):
        """Train epoch `pos.done` from `pos` (its step `pos.step`, a memory map's resumed NaN
        stop): `(out, means, guard)` as `loop.train` reads them from a compiled call, `out` =
        `(params, opt_state, guard, totals, means)`; means `(1, k)` (host), or `(0, k)` and a
        failed guard at a NaN stop."""
        epoch = pos.done
        state = (pos.params, pos.opt_state, pos.guard, pos.totals, None)
        rows_done = pos.step * self.source.rows  # only a memory map resumes mid-epoch
        steps_done = pos.step
        pending = None  # (state before, chunk, out) of the last call, not yet checked

        def check(pending):
            before, chunk, out = pending
            ok, loss_sum = to_host((out[2].ok, out[3].sums[0]))
            if bool(ok):  # the call has finished and needs no replay: its arrays are free
                if self.pool is not None:
                    self.pool.give_back(chunk.host)
                return None, loss_sum
            return self._call(before, chunk, epoch, guarded=True), None

        moving = bar.terminal and progress_per_epoch > 1
        with Prefetch(self._host_chunks(epoch, pos.step), self._place, self.prefetch) as chunks:
            while (chunk := self._next_chunk(chunks, epoch, steps_done)) is not None:
                out = self._call(state, chunk, epoch, guarded=False)
                if pending is not None:  # the device already has this chunk queued
                    failed, loss_sum = check(pending)
                    if failed is not None:
                        return self._stopped(failed)
                    if moving:
                        bar.move(epoch * progress_per_epoch + steps_done,
                                 float(loss_sum) / rows_done)
                pending = (state, chunk, out)
                state = (*out[:4], out[5] if len(out) > 5 else None)
                rows_done += chunk.rows
                steps_done += chunk.steps
            failed, _ = check(pending)
            if failed is not None:
                return self._stopped(failed)
        self._warn_if_short(epoch)
        params, opt_state, guard, totals, _ = state
        row_plan = self.plan._replace(n_rows=rows_done, batch=0, n_full=0, remainder=0,
                                      shuffle=False, n_epochs=1, progress=None)  # shared
        means = to_host(epoch_row(params, totals, self.validation, plan=row_plan))
        return (params, opt_state, guard, totals, means), means, to_host(guard)

    def _warn_if_short(self, epoch: int):
        ran_out, self.source.ran_out = getattr(self.source, "ran_out", None), None
        if ran_out is not None:
            warnings.warn(f"fit: `data` ran out after {ran_out[1]} of steps_per_epoch="
                          f"{self.source.steps_per_epoch} batches in epoch {epoch}; that epoch "
                          "is shorter and the next one starts a new iterator", UserWarning,
                          stacklevel=5)

    def _stopped(self, out):
        return out, np.zeros((0, row_width(self.plan))), to_host(out[2])
