"""Streamed data for `fit`: what counts as a stream, its checks, and its batches epoch by epoch.

Two kinds of data are streamed rather than put on the device whole:

- `fit(model, params, loss_fn, optimizer, data, None, ...)`: `data` yields `(x_batch, y_batch)`
  pairs (each an array or a pytree of arrays: NumPy, jax, torch tensors), or `(x_batch,
  y_batch, sample_weight)` triples (Keras's way to weight a stream's rows: `sample_weight` of
  shape `(rows,)`), and can be iterated
  once per epoch: a re-iterable (a grain `DataLoader` or `MapDataset`, a
  `torch.utils.data.DataLoader`, a list, any object whose `iter()` is a new iterator each
  time) or a callable returning an iterator (called once per epoch). An iterator or
  generator object (`iter(data) is data`) cannot start a second epoch: a ValueError. `fit`
  does not shuffle it (the loader does). With `steps_per_epoch`, an epoch is that many
  batches, taken from one iterator that carries on into the next epoch (Keras's rule); a new
  iterator is started when it ends, and an epoch during which it ends is shorter (a
  UserWarning). Without it, an epoch is one whole iterator. On a mesh spanning several
  processes, each process's `data` yields its own part of every batch (`process_batches.py`).
- `fit(..., x, y)` with a NumPy memory map among the leaves of `x` or `y` (`np.memmap`,
  `np.load(..., mmap_mode="r")`, or any array viewing one), in minibatches: the rows are read
  chunk by chunk in the order in-memory `fit` visits them (`feed.epoch_order` when
  shuffled), so the memory map is never copied whole and the steps are in-memory `fit`'s.

Row weights (`weights.py`) travel with the targets, as in memory: the training batches are
`(x, (y, w))`, `w` float32 `(rows,)`. A stream's `w` is its triples' `sample_weight` times the
`class_weight` of each row's class, computed batch by batch on the host (the first batch's
before anything compiles, the others' in the prefetch thread, an error naming the batch); a
memory map's are `row_weights` of all rows, one float32 per row held in host memory (`x` and
`y` stay mapped), read by rows with them.

Both are cut into chunks of whole batches (`chunks.py`) that go to the device ahead of their
use (`prefetch.py`) and train as one compiled scan each (`stream_run.py`).
"""
import collections.abc
import itertools
import mmap
from typing import Iterator, NamedTuple, Optional

import jax
import numpy as np

from funcdl.train import checks
from funcdl.train.batches import batch_layout
from funcdl.train.weights import row_weights
from funcdl.train.feed import epoch_order
from funcdl.train.process_batches import process_share


def is_memory_map(array) -> bool:
    """Whether `array` is a NumPy memory map or an array viewing one (through `.base`)."""
    while array is not None:
        if isinstance(array, (np.memmap, mmap.mmap)):
            return True
        array = getattr(array, "base", None) if isinstance(array, np.ndarray) else None
    return False


def _has_memory_map(tree) -> bool:
    return any(is_memory_map(leaf) for leaf in jax.tree_util.tree_leaves(tree))


def is_iterable_stream(x, y) -> bool:
    """Whether `fit(..., x, y)` is the streamed form `fit(..., data, None)`."""
    return y is None and getattr(x, "shape", None) is None and not isinstance(
        x, collections.abc.Mapping) and (callable(x) or hasattr(x, "__iter__"))


def _new_iterator(data) -> Iterator:
    if hasattr(data, "__iter__"):
        return iter(data)
    iterator = data()
    if not hasattr(iterator, "__next__"):
        raise TypeError(f"`data`: a callable must return an iterator of (x_batch, y_batch) "
                        f"(one per epoch), got {type(iterator).__name__}")
    return iterator


def _known_length(data) -> Optional[int]:
    try:
        length = len(data)
    except (TypeError, NotImplementedError, AttributeError):
        return None
    return length if isinstance(length, int) and length > 0 else None


def host_batch(batch, where: str):
    """`(x_batch, y_batch)` or `(x_batch, y_batch, sample_weight)` with NumPy leaves; a
    TypeError/ValueError naming `where` for anything else than a pair (or triple) of arrays (or
    pytrees of them) with one number of rows. The weights are checked by `weighted_batch`."""
    if not (isinstance(batch, (tuple, list)) and len(batch) in (2, 3)):
        raise TypeError(f"`data` must yield pairs (x_batch, y_batch) or triples (x_batch, "
                        f"y_batch, sample_weight), got {where} a {type(batch).__name__}"
                        + (f" of length {len(batch)}" if isinstance(batch, (tuple, list))
                           else ""))
    pair = jax.tree_util.tree_map(np.asarray, tuple(batch[:2]))
    for leaf in jax.tree_util.tree_leaves(pair):
        if leaf.ndim == 0:
            raise ValueError(f"`data`: every array of a batch needs a leading axis of rows, got "
                             f"{where} a 0-d array")
    checks.check_pair(*pair, f"data ({where}) x_batch", f"data ({where}) y_batch")
    return pair if len(batch) == 2 else (*pair, batch[2])


def weighted_batch(batch, where: str, class_weight):
    """`(x, (y, w))` of a host batch from `host_batch` (a triple, or a pair with
    `class_weight`): `w` float32 `(rows,)`, the triple's `sample_weight` times the
    `class_weight` of each row's class (`weights.row_weights`); its errors name `where`."""
    x, y = batch[:2]
    rows = len(jax.tree_util.tree_leaves(x)[0])
    try:
        w = row_weights(rows, y, batch[2] if len(batch) == 3 else None, class_weight)
    except (TypeError, ValueError) as error:
        raise type(error)(f"`data` ({where}): {error}") from None
    return x, (y, w)


class IterableSource:
    """The batches of `data` (the streamed form), epoch by epoch, on the host (`batches` may
    run in the prefetch thread).

    `first` is the first batch's `(x, y)` and `first_batch` its training batch (`(x, (y, w))`
    when `weighted`: the batches are triples or `class_weight` is given; else `first`): read
    before anything compiles, they fix the batch shapes. Every batch is a pair, or every one
    a triple, as the first. `steps` the number of batches of an epoch when known ahead
    (`steps_per_epoch`, else `len(data)`), else None. On a mesh spanning several processes
    each batch is this process's part of a global batch of `share` parts
    (`process_batches.py`): `rows` are the global batch's, `share` times the first batch's."""

    resumes_mid_epoch = False  # a NaN stop's checkpoint holds the start of its epoch

    def __init__(self, data, steps_per_epoch: Optional[int], share: int = 1, class_weight=None):
        if isinstance(data, collections.abc.Iterator):  # iter(data) is data
            raise ValueError(
                f"`data` is an iterator ({type(data).__name__}), which cannot be iterated again "
                "for a second epoch; pass a re-iterable (a list, a DataLoader, a grain dataset) "
                "or a callable returning a new iterator per epoch (e.g. `lambda: "
                "make_batches()` instead of the generator `make_batches()`)")
        if not hasattr(data, "__iter__") and not callable(data):
            raise TypeError(f"`data` must be a re-iterable of (x_batch, y_batch) or a callable "
                            f"returning an iterator of them, got {type(data).__name__}")
        self.data, self.steps_per_epoch = data, steps_per_epoch
        self.steps = steps_per_epoch if steps_per_epoch is not None else _known_length(data)
        iterator = _new_iterator(data)
        try:
            first = next(iterator)
        except StopIteration:
            raise ValueError("`data` yielded no batches (its first epoch is empty)") from None
        first_batch = host_batch(first, "its first batch")
        self.triples = len(first_batch) == 3
        self.class_weight = class_weight
        self.weighted = self.triples or class_weight is not None
        self.first = first_batch[:2]
        self.first_batch = self.training_batch(first, "its first batch")
        self.share = share
        self.rows = len(jax.tree_util.tree_leaves(self.first)[0]) * share
        self._iterator = itertools.chain([first], iterator)  # the next batch is the first
        self.ran_out = None  # (epoch, batches) of the last epoch cut short by the iterator

    def training_batch(self, raw, where: str):
        """The host training batch of the raw batch `raw` (`first_batch`'s kind): a
        TypeError/ValueError naming `where` for a bad one."""
        batch = host_batch(raw, where)
        if (len(batch) == 3) != self.triples:
            kinds = ("a pair (x_batch, y_batch)", "a triple (x_batch, y_batch, sample_weight)")
            raise ValueError(f"`data`: {where} is {kinds[len(batch) == 3]}, but the first batch "
                             f"is {kinds[self.triples]}; every batch must be of the first one's "
                             "kind")
        return weighted_batch(batch, where, self.class_weight) if self.weighted else batch

    def batches(self, epoch: int) -> Iterator:
        """The raw batches of epoch `epoch` (the one after the last one asked for)."""
        iterator, self._iterator = self._iterator, None
        if iterator is None:
            iterator = _new_iterator(self.data)
        if self.steps_per_epoch is None:
            yield from iterator
            return
        taken = 0
        for batch in iterator:
            yield batch
            taken += 1
            if taken == self.steps_per_epoch:
                self._iterator = iterator  # the next epoch carries on from here
                return
        if taken == 0:  # the carried iterator ended at the epoch boundary: a new one
            for batch in itertools.islice(_new_iterator(self.data), self.steps_per_epoch):
                yield batch
                taken += 1
        if taken < self.steps_per_epoch:  # warned about by the caller's thread (stream_run)
            self.ran_out = (epoch, taken)


class MemmapSource:
    """`x`, `y` (with memory-mapped leaves) read chunk by chunk in in-memory `fit`'s order:
    `order(epoch)` is the epoch's rows (`feed.epoch_order` when shuffled, else all in order),
    batch b its rows `order[b * batch : (b + 1) * batch]`. `weights`: None, or the float32
    `(n_rows,)` row weights (`weights.row_weights`), read by rows with `y`: the training tree
    is then `(x, (y, weights))`; `first` is `(x, y)` either way."""

    resumes_mid_epoch = True  # the rows of every step are known: a NaN stop resumes at it

    def __init__(self, x, y, n_rows: int, batch_size: int, shuffle: bool, weights=None):
        self.weighted = weights is not None
        self.tree = (x, y) if weights is None else (x, (y, weights))
        self.n_rows, self.shuffle = n_rows, shuffle
        self.rows, self.n_full, self.remainder = batch_layout(n_rows, batch_size)
        self.steps = self.n_full + bool(self.remainder)
        self.first = (x, y)  # shapes only (fit's checks trace one batch of them)

    def order(self, key, epoch: int) -> np.ndarray:
        if self.shuffle:
            return epoch_order(key, epoch, self.n_rows)
        return np.arange(self.n_rows)


def open_source(x, y, *, batch_size, shuffle, steps_per_epoch, mesh=None, sample_weight=None,
                class_weight=None):
    """`(source, shuffle)`: the stream of `fit(..., x, y)` (`IterableSource`, `MemmapSource`, or
    None for in-memory arrays, trained as before) and `shuffle` resolved (None: True for
    arrays, False for a stream). Raises fit's errors about `data`, `batch_size`, `shuffle`,
    `steps_per_epoch`, `sample_weight` and `class_weight` before anything compiles (a
    stream's weights: its first batch's; `sample_weight=` with an iterable is a ValueError:
    its batches carry their weights as triples)."""
    if steps_per_epoch is not None:
        steps_per_epoch = checks.check_int(steps_per_epoch, "steps_per_epoch", 1)
    if shuffle is not None and not isinstance(shuffle, bool):
        raise TypeError(f"`shuffle` must be a bool, got {type(shuffle).__name__}")
    if is_iterable_stream(x, y):
        if shuffle:
            raise ValueError("`shuffle=True` with streamed `data`: fit does not shuffle a stream "
                             "(its batches arrive in the loader's order); shuffle in the loader "
                             "(e.g. DataLoader(shuffle=True)) and leave `shuffle` unset")
        if batch_size is not None:
            raise ValueError(f"`batch_size` must be None with streamed `data` (its batches "
                             f"come from the loader), got {batch_size!r}")
        if sample_weight is not None:
            raise ValueError(
                "`sample_weight=` with streamed `data` (an iterable of batches): yield "
                "`(x_batch, y_batch, sample_weight)` triples instead (Keras's way), "
                "`sample_weight_batch` of shape (rows,); `class_weight=` may be given with a "
                "stream")
        return IterableSource(x, steps_per_epoch, process_share(mesh), class_weight), False
    shuffle = True if shuffle is None else shuffle
    if steps_per_epoch is not None:
        raise ValueError(f"`steps_per_epoch` is for streamed `data` (an iterable of batches); "
                         f"with arrays every epoch is all rows of `x`, got "
                         f"steps_per_epoch={steps_per_epoch}")
    if y is None or not (_has_memory_map(x) or _has_memory_map(y)):
        return None, shuffle
    n_rows = checks.check_pair(x, y, "x", "y")
    batch, n_full, remainder = batch_layout(n_rows, batch_size)
    if n_full + bool(remainder) == 1:
        return None, shuffle  # one full batch: the whole data is that batch
    return MemmapSource(x, y, n_rows, batch_size, shuffle,
                        row_weights(n_rows, y, sample_weight, class_weight)), shuffle


class Layout(NamedTuple):
    """How `fit` lays out a streamed epoch: `n_rows` (0: unknown ahead), rows per full batch,
    batches per epoch (1 when unknown ahead) and the progress unit."""
    n_rows: int
    batch: int
    n_full: int
    remainder: int
    unit: str


def layout(source) -> Layout:
    if isinstance(source, MemmapSource):
        return Layout(source.n_rows, source.rows, source.n_full, source.remainder, "step")
    if source.steps is None:
        return Layout(0, source.rows, 1, 0, "epoch")
    return Layout(0, source.rows, source.steps, 0, "step")
