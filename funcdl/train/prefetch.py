"""`Prefetch`: items of an iterator made ready ahead of their use by a background thread.

`fit` with streamed data reads the caller's loader and copies each chunk of batches to the
device (`jax.device_put`) in this thread while the device trains on the chunks before it::

    with Prefetch(host_chunks, place, depth) as placed:
        for chunk in placed:      # chunk = place(next(host_chunks)), made up to `depth` ahead
            ...

At most `depth` placed items wait in the queue, and the thread holds one more while it waits
for room, so the memory held is `depth + 1` items, whatever the length of the iterator.
`depth=0` makes each item in the consumer's thread when it is asked for (no thread).

An exception in the thread (the loader's, or a `ValueError` about the data) is raised in the
consumer at the item where it happened, with its own traceback. Leaving the `with` block
(the end, an exception, Ctrl-C) stops the thread: it reads nothing more from the iterator
after the item it is working on.
"""
import queue
import threading
from typing import Callable, Iterator

_END = object()  # the iterator is exhausted
_POLL_SECONDS = 0.1  # how often a blocked thread looks at the stop flag


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetch:
    """Iterate `place(item)` for the items of `items`, made `depth` items ahead in a thread."""

    def __init__(self, items: Iterator, place: Callable, depth: int):
        self.items, self.place, self.depth = items, place, depth
        self.stop = threading.Event()
        self.queue = queue.Queue(maxsize=max(depth, 1))
        self.thread = None
        if depth > 0:
            self.thread = threading.Thread(target=self._fill, name="funcdl-prefetch",
                                           daemon=True)
            self.thread.start()

    def _put(self, value) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(value, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self):
        try:
            for item in self.items:
                if self.stop.is_set() or not self._put(self.place(item)):
                    return
            self._put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            self._put(_Failed(error))

    def __iter__(self):
        return self

    def __next__(self):
        if self.thread is None:
            return self.place(next(self.items))
        value = self.queue.get()
        if value is _END:
            self.queue.put(_END)  # later calls see the end again
            raise StopIteration
        if isinstance(value, _Failed):
            raise value.error
        return value

    def close(self) -> None:
        """Stop the thread (waits for the item it is making) and drop the waiting items."""
        self.stop.set()
        if self.thread is not None:
            while self.thread.is_alive():
                try:
                    self.queue.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    pass
            self.thread.join()
        self.queue = queue.Queue()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
