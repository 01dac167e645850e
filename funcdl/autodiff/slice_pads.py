"""A static index as padding: where `x[index]` sits inside `x`, for getitem's transpose.

For an index of ints, slices with a positive step and at most one `...` (no arrays, no None),
`zeros(shape)` with g placed at `index` is `lax.pad(expand_dims(g, int axes), 0, config)`:
per axis `(low, high, interior)` = `(start, n - last - 1, step - 1)` for a slice and
`(i, n - i - 1, 0)` for an int i. That is how jax transposes a slice; a scatter computes the
same but runs many times slower on XLA's CPU backend.
"""
import numpy as np


def slice_pads(shape, index):
    """`(axes to insert, lax.pad config)` placing g at a static index of ints, slices with a
    positive step and `...` into zeros(shape) (a read of x[index] is then its transpose), or
    None for any other index."""
    entries = index if isinstance(index, tuple) else (index,)
    if sum(e is Ellipsis for e in entries) > 1 or not all(
            e is Ellipsis or isinstance(e, slice) or (isinstance(e, (int, np.integer))
                                                       and not isinstance(e, bool))
            for e in entries):
        return None
    if Ellipsis in entries:
        at = entries.index(Ellipsis)
        entries = entries[:at] + (slice(None),) * (len(shape) - len(entries) + 1) + entries[at + 1:]
    if len(entries) > len(shape):
        return None
    entries = entries + (slice(None),) * (len(shape) - len(entries))
    inserted, config = [], []
    for axis, (e, n) in enumerate(zip(entries, shape)):
        if isinstance(e, slice):
            start, stop, step = e.indices(n)
            if step < 1:
                return None
            count = max(0, -(-(stop - start) // step))
            if count == 0:
                return None
            config.append((start, n - (start + (count - 1) * step + 1), step - 1))
        else:
            i = int(e) + n if e < 0 else int(e)
            if not 0 <= i < n:
                return None
            inserted.append(axis)
            config.append((i, n - i - 1, 0))
    return tuple(inserted), config
