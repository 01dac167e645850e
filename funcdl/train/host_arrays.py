"""Host arrays that the CPU device takes without copying, and a pool that reuses them.

`jax.device_put` of a NumPy array on the CPU backend uses the array's memory as the device
buffer (no copy) when the data start on a 64-byte boundary, and copies it otherwise. NumPy's
allocator aligns to 16 bytes only, so a freshly stacked chunk of 4 MB would be copied once
more on its way to the device. `aligned_empty` allocates on that boundary; the streamed feed
(`chunks.py`, `stream_run.py`, `feed.read_rows`) writes its chunks into such arrays, so the
only copy of the data on the host is the one that gathers the batches. Other backends copy
to the device as before.

A fresh array also costs the kernel its zeroed pages when it is first written (about 1 ms per
MB here: a tenth of a streamed MLP epoch's CPU time with 16 MB chunks). `HostPool` hands out arrays that a
chunk gave back after its compiled call finished, so one `fit` call's stream touches fresh
memory only for the few chunks on their way at once. A pooled array is written again only
after `give_back`: the caller gives back a chunk once nothing will read it (its call has
finished and its check passed, so no replay needs it).
"""
import threading

import numpy as np

ALIGNMENT = 64  # bytes: XLA's CPU buffers' alignment


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of `shape` and `dtype` whose data start on an
    `ALIGNMENT`-byte boundary."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(size + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + size].view(dtype).reshape(shape)


def stack(leaves, empty=aligned_empty) -> np.ndarray:
    """`np.stack(leaves)` (same shapes and dtypes, along a new leading axis) into
    `empty(shape, dtype)`."""
    first = np.asarray(leaves[0])
    return np.stack(leaves, out=empty((len(leaves),) + first.shape, first.dtype))


def take_rows(host: np.ndarray, rows: np.ndarray, empty=aligned_empty) -> np.ndarray:
    """`host[rows]` (rows: an int array of valid rows, `0 <= rows < len(host)`, as a
    stream's row order always is; shape `rows.shape + host.shape[1:]`) into
    `empty(shape, dtype)`. `mode="clip"`: NumPy's default mode buffers the whole result
    before writing it to `out` (5x slower), to leave `out` untouched on a bad index."""
    out = empty(rows.shape + host.shape[1:], host.dtype)
    return np.take(host, rows, axis=0, out=out, mode="clip")


class HostPool:
    """Aligned arrays of one streamed `fit` call: `empty` reuses an array given back (same
    shape and dtype) or makes one; `give_back` returns arrays nothing will read again.
    Thread-safe (the prefetch thread takes, the training thread gives back)."""

    def __init__(self):
        self._free: dict = {}
        self._lock = threading.Lock()

    def empty(self, shape, dtype) -> np.ndarray:
        key = (tuple(shape), np.dtype(dtype))
        with self._lock:
            free = self._free.get(key)
            if free:
                return free.pop()
        return aligned_empty(shape, dtype)

    def give_back(self, arrays) -> None:
        with self._lock:
            for array in arrays:
                self._free.setdefault((array.shape, array.dtype), []).append(array)

    def stack(self, leaves) -> np.ndarray:
        return stack(leaves, self.empty)

    def take_rows(self, host: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return take_rows(host, rows, self.empty)
