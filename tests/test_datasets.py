"""fdl.datasets against the shipped files' published facts (rows, ranges, known first rows), and
against paths that are not the shipped files (changed bytes, another size, FIFOs, devices)."""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import tracemalloc

import numpy as np
import pytest

import funcdl as fdl


def test_boston_shapes_and_first_row():
    x, y = fdl.datasets.load_boston()
    assert x.shape == (506, 13) and y.shape == (506,)
    assert x.dtype == np.float64 and y.dtype == np.float64
    # First district as printed in Harrison & Rubinfeld / R's MASS::Boston.
    np.testing.assert_array_equal(x[0], [0.00632, 18.0, 2.31, 0, 0.538, 6.575, 65.2, 4.09, 1,
                                         296, 15.3, 396.9, 4.98])
    assert y[0] == 24.0
    assert y.min() == 5.0 and y.max() == 50.0  # medv is censored at 50 in the original data


def test_digits_shapes_and_ranges():
    x, y = fdl.datasets.load_digits()
    assert x.shape == (1797, 64) and y.shape == (1797,)
    assert x.dtype == np.float64 and y.dtype == np.int64
    assert x.min() == 0 and x.max() == 16 and np.all(x == np.round(x))
    counts = np.bincount(y, minlength=10)
    assert counts.sum() == 1797 and counts.min() >= 174  # 174..183 of each digit


@pytest.mark.parametrize("loader, name", [(fdl.datasets.load_boston, "boston_housing.csv"),
                                          (fdl.datasets.load_digits, "digits_8x8.csv")])
def test_changed_file_fails_its_hash(tmp_path, loader, name):
    from funcdl import datasets
    changed = tmp_path / name
    data = bytearray((datasets._HERE / name).read_bytes())
    data[-3] = ord("7") if data[-3] != ord("7") else ord("6")
    changed.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted or was changed: expected SHA-256"):
        loader(changed)


# ---- paths that are not the shipped file -------------------------------------------------------
ALONE = """
import importlib.util, json, os, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2**31, 2**31))  # a read without end fails, fast
spec = importlib.util.spec_from_file_location("datasets_alone", sys.argv[1])
datasets = importlib.util.module_from_spec(spec)
spec.loader.exec_module(datasets)
fifo, shipped = sys.argv[2], {"load_boston": sys.argv[3], "load_digits": sys.argv[4]}
real_stat = os.stat
outcomes = {}
for label, path in [("fifo", fifo), ("zero", "/dev/zero"), ("swapped", fifo)]:
    for name in ("load_boston", "load_digits"):
        # "swapped": stat says the FIFO is the shipped file, as if the path changed after the stat
        os.stat = real_stat if label != "swapped" else (
            lambda p, *a, name=name, **k: real_stat(shipped[name] if p == fifo else p, *a, **k))
        try:
            getattr(datasets, name)(path)
            outcomes[f"{name} {label}"] = "returned"
        except Exception as error:
            outcomes[f"{name} {label}"] = f"{type(error).__name__}: {error}"
print(json.dumps(outcomes))
"""


def test_fifos_and_devices_are_value_errors_without_blocking_or_endless_reads(tmp_path):
    """In a process of its own with 2 GiB of address space and a timeout, so that a regression
    (an open that waits for a FIFO's writer, a read of /dev/zero until memory runs out) fails
    instead of hanging or eating the machine's memory. The module is loaded alone (no jax)."""
    from funcdl import datasets
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    try:
        done = subprocess.run([sys.executable, "-c", ALONE, datasets.__file__, str(fifo),
                               str(datasets._HERE / "boston_housing.csv"),
                               str(datasets._HERE / "digits_8x8.csv")], capture_output=True,
                              text=True, timeout=60, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:  # (subprocess.run has killed it)
        pytest.fail("a load blocked on a FIFO or read /dev/zero for 60 s")
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = json.loads(done.stdout)
    for name in ("load_boston", "load_digits"):
        for label, kind, path in [("fifo", "a FIFO", str(fifo)), ("swapped", "a FIFO", str(fifo)),
                                  ("zero", "a character device", "/dev/zero")]:
            want = f"ValueError: `path` {path!r} must be a regular file, got {kind}"
            assert outcomes[f"{name} {label}"] == want


@pytest.mark.parametrize("loader", [fdl.datasets.load_boston, fdl.datasets.load_digits])
def test_a_fifo_is_a_value_error_in_process_and_never_blocks(tmp_path, loader):
    """The package as imported (jax and all), the call in a thread: a regression that waits for
    the FIFO's writer fails here (the guard is a hang guard, generous on a busy machine), and
    the stuck thread is released by opening the writing end."""
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    outcome = []

    def load():
        try:
            loader(fifo)
            outcome.append("returned")
        except Exception as error:  # noqa: BLE001 (the test reports whatever it is)
            outcome.append(error)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=5)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the blocked open returns
        thread.join(timeout=5)
        pytest.fail(f"{loader.__name__} blocked on the FIFO {str(fifo)!r}")
    [error] = outcome
    assert isinstance(error, ValueError), error
    assert str(error) == f"`path` {str(fifo)!r} must be a regular file, got a FIFO"
    with pytest.raises(ValueError, match=re.escape("`path` '/dev/zero' must be a regular file, "
                                                   "got a character device")):
        loader("/dev/zero")  # stat says so before any open (the process test bounds the memory)


@pytest.mark.parametrize("loader", [fdl.datasets.load_boston, fdl.datasets.load_digits])
def test_a_socket_or_a_directory_is_a_value_error(tmp_path, loader):
    folder = tempfile.mkdtemp(prefix="fdl")  # short: a socket's path has ~100 characters at most
    path = os.path.join(folder, "s.csv")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    try:
        with pytest.raises(ValueError, match=re.escape(f"`path` {path!r} must be a regular file, got a socket")):
            loader(path)
    finally:
        server.close()
        os.unlink(path)
        os.rmdir(folder)
    with pytest.raises(ValueError, match=r"must be a regular file, got a directory"):
        loader(tmp_path)
    with pytest.raises(TypeError, match=r"`path` must be a str, os.PathLike or None, got int"):
        loader(3)


@pytest.mark.parametrize("loader, name", [(fdl.datasets.load_boston, "boston_housing.csv"),
                                          (fdl.datasets.load_digits, "digits_8x8.csv")])
def test_a_file_of_another_size_is_a_value_error_before_it_is_read(tmp_path, loader, name):
    from funcdl import datasets
    shipped = (datasets._HERE / name).read_bytes()
    longer = tmp_path / name
    longer.write_bytes(shipped + b"\n")
    with pytest.raises(ValueError, match=re.escape(f"data file {str(longer)!r} has {len(shipped) + 1} bytes "
                                                   f"where the shipped file has {len(shipped)}")):
        loader(longer)
    huge = tmp_path / "huge.csv"  # 64 MiB, sparse: reading it would show in the traced memory
    with open(huge, "wb") as file:
        file.truncate(64 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"has 67108864 bytes where the shipped file has"):
            loader(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak
