"""Files for checkpoints: opened without blocking, read exactly, written whole, OSErrors that name
the path.

A FIFO blocks `open` until a writer appears and a device such as `/dev/zero` never ends, so a
path is opened only once `os.stat` says it is a regular file; it is then opened with
`O_NONBLOCK` (the path may have been swapped for a FIFO since the `stat`) and checked again on
the descriptor with `os.fstat` before anything is read. Reads go through `os.readv` straight
into the caller's buffer and must return every byte asked for: a file that shrinks while it is
read is a `ValueError`, where a memory map would be a SIGBUS.
"""
import os
import stat

try:
    import fcntl
except ImportError:  # Windows: no FIFOs to guard against, no fcntl
    fcntl = None

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def check_path(path):
    """`path` as a `str`, or a TypeError."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"`path` must be a str or os.PathLike of str, got {type(path).__name__}")
    return path


def naming(error, path, action):
    """`error` again, of the same class and errno, its message naming `path` (the temporary
    file's name or the OS's wording alone would not tell the caller which checkpoint failed)."""
    if isinstance(error, FileNotFoundError) and action == "read":
        message = f"no checkpoint at `path` {path!r}"
    else:
        message = f"cannot {action} the checkpoint `path` {path!r}: {error.strerror or error}"
    try:
        renamed = type(error)(message) if error.errno is None else type(error)(error.errno, message)
    except TypeError:  # a subclass with its own constructor
        renamed = OSError(message) if error.errno is None else OSError(error.errno, message)
    return renamed


def open_regular(path):
    """`(fd, size)` of the regular file `path`, opened read-only in blocking mode.

    Raises ValueError (with the path) for anything else, FileNotFoundError when nothing is there,
    and the OSError of `stat`/`open` (PermissionError for a file it may not read) renamed by
    `naming`.
    """
    try:
        _check_regular(os.stat(path).st_mode, path)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise naming(error, path, "read") from None
    try:
        info = os.fstat(fd)
        _check_regular(info.st_mode, path)
        if fcntl is not None:  # blocking again: O_NONBLOCK was only for the open
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException as error:
        os.close(fd)
        if isinstance(error, OSError):
            raise naming(error, path, "read") from None
        raise
    return fd, info.st_size


def _check_regular(mode, path):
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    if kind == "a directory":
        raise ValueError(f"`path` must be a checkpoint file, got the directory {path!r}")
    raise ValueError(f"`path` {path!r} must be a regular file, got {kind}")


def read_exactly(fd, buffer, path):
    """Fill `buffer` (a writable bytes-like object, e.g. a uint8 array) from `fd`'s position."""
    view, done = memoryview(buffer).cast("B"), 0
    while done < len(view):
        try:
            count = os.readv(fd, [view[done:]])
        except OSError as error:
            raise naming(error, path, "read") from None
        if count == 0:
            raise ValueError(f"`path` {path!r} is not a whole safetensors checkpoint: it ended "
                             f"{len(view) - done} bytes early (was it truncated while being read?)")
        done += count


def write_all(fd, buffer):
    """Write all of `buffer` (bytes-like) at `fd`'s position; `os.write` may write less."""
    view, done = memoryview(buffer).cast("B"), 0
    while done < len(view):
        done += os.write(fd, view[done:])


def fsync_folder(path):
    """fsync a folder, where the OS allows opening one (Windows does not)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
