"""Data-parallel `fit` on several devices and several processes, in subprocesses.

Each configuration needs its own process (the device count is fixed when jax starts), so
`tests/distributed_worker.py` runs the training and writes its results with `fdl.checkpoint`;
these tests compare them. The reference is a single-device `fit` on the same batches: with
the gradient mean reduced across devices in another order, results agree within float32
rounding, not bitwise. Every subprocess has a timeout and is killed in a `finally`.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/distributed_worker.py mesh OUT
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/distributed_worker.py \\
        process I 2 PORT OUT          # for I in 0 1, at the same time (also: stream, disagree)
"""
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest

from funcdl import checkpoint

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "distributed_worker.py"
TIMEOUT_S = 300  # generous: six engineers share two cores; a hang, not slowness, should fail
# float32 rounding of reordered sums, grown over 36 Adam steps: the observed differences were
# <= 1.5e-7 on params up to 0.62 and <= 1.7e-7 relative on the history (2026-12-01).
RTOL, ATOL = 1e-5, 1e-6



def run_all(commands, out, timeout_s=TIMEOUT_S):
    """Run `(argv, n_devices)` commands at once; return their `(returncode, stdout, stderr)`.
    When one fails, the others (which would wait for it in a collective) are killed at once;
    all are killed at the timeout, and in any case before returning."""
    processes, logs = [], []
    try:
        for argv, n_devices in commands:
            env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
                   "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}"}
            logs.append((tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")))
            processes.append(subprocess.Popen([sys.executable, str(WORKER), *argv, str(out)],
                                              env=env, text=True, stdout=logs[-1][0],
                                              stderr=logs[-1][1]))
        deadline = time.monotonic() + timeout_s
        while any(p.poll() is None for p in processes):
            if any(p.poll() not in (None, 0) for p in processes):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"{[p.args[2:4] for p in processes]} did not finish in {timeout_s} s")
            time.sleep(0.1)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
    results = []
    for process, (stdout, stderr) in zip(processes, logs):
        stdout.seek(0)
        stderr.seek(0)
        results.append((process.returncode, stdout.read(), stderr.read()))
        stdout.close()
        stderr.close()
    return results


def check_ok(result, what):
    returncode, stdout, stderr = result
    assert returncode == 0, f"{what} exited with {returncode}:\n{stdout}\n{stderr[-3000:]}"
    return stdout


def load_run(out, name):
    return checkpoint.load(out / f"{name}.safetensors"), json.loads((out / f"{name}.json").read_text())


def assert_close_runs(got, want):
    (got_params, got_history), (want_params, want_history) = got, want
    assert got_params.keys() == want_params.keys()
    for key in want_params:
        assert got_params[key].dtype == want_params[key].dtype == np.float32
        np.testing.assert_allclose(got_params[key], want_params[key], rtol=RTOL, atol=ATOL, err_msg=key)
    assert got_history.keys() == want_history.keys()
    for name in want_history:
        np.testing.assert_allclose(got_history[name], want_history[name], rtol=RTOL, err_msg=name)


def assert_bitwise_runs(got, want):
    """Params bit for bit and the same history."""
    assert got[0].keys() == want[0].keys()
    assert all(got[0][k].tobytes() == want[0][k].tobytes() for k in want[0])
    assert got[1] == want[1]


@pytest.fixture(scope="module")
def mesh_run(tmp_path_factory):
    """The worker's "mesh" mode on 4 forced host devices: its output folder."""
    out = tmp_path_factory.mktemp("mesh")
    check_ok(run_all([(["mesh"], 4)], out)[0], "the 4-device worker")
    return out


@pytest.mark.slow  # ~13 s: the slow tier (`make test-slow`, run by CI)
def test_fit_on_a_4_device_mesh_equals_single_device_fit(mesh_run):
    """Dropout, shuffling, validation, a metric and progress on; the last batch of 2 rows is
    not divided by the 4 devices (it is replicated)."""
    single = load_run(mesh_run, "single")
    assert sorted(single[1]) == ["loss", "lr", "mae", "val_loss", "val_mae"]
    assert len(single[1]["loss"]) == 6 and single[1]["loss"][-1] < 0.7 * single[1]["loss"][0]
    assert_close_runs(load_run(mesh_run, "mesh"), single)


def test_checkpoint_and_resume_on_the_mesh(mesh_run):
    """3 epochs with a checkpoint, then `resume=True` to 6, equals 6 epochs in one go."""
    assert_close_runs(load_run(mesh_run, "mesh_resumed"), load_run(mesh_run, "mesh"))


def test_the_nan_guard_on_the_mesh_leaves_the_last_finite_state_in_the_checkpoint(mesh_run):
    params, info = load_run(mesh_run, "diverged")
    assert info["epoch"] >= 0 and info["step"] >= 0 and len(info["loss"]) == info["epoch"]
    stored = checkpoint.load(mesh_run / "diverged_checkpoint.safetensors")
    for key, value in params.items():
        assert np.isfinite(value).all(), key
        assert stored["['params']" + key].tobytes() == value.tobytes(), key


def test_bad_meshes_are_value_errors_naming_the_argument(mesh_run):
    errors = json.loads((mesh_run / "errors.json").read_text())
    kind, message = errors["no_data_axis"]
    assert kind == "ValueError" and re.search(r"`mesh`.*\"data\".*'model'", message), message
    kind, message = errors["batch_not_divisible"]
    assert kind == "ValueError" and re.search(r"`batch_size`.*\"data\".*4.*\b6\b", message), message


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """jax.distributed with gloo collectives: 2 processes x 2 devices, one 4-device mesh; the
    worker's "process" mode in both: their output folder."""
    return run_two_processes(tmp_path_factory.mktemp("processes"), "process")


def run_two_processes(out, mode):
    """The worker's `mode` in 2 processes x 2 devices, each shut down cleanly: `out`."""
    if not hasattr(jax, "distributed") or "jax_cpu_collectives_implementation" not in jax.config.values:
        pytest.skip(f"jax {jax.__version__} has no jax.distributed with CPU collectives")
    port = free_port()
    results = run_all([([mode, str(i), "2", str(port)], 2) for i in (0, 1)], out)
    for i, result in enumerate(results):
        assert f"process {i}: shut down cleanly" in check_ok(result, f"process {i}")
    return out


@pytest.mark.slow  # ~10 s: the slow tier (`make test-slow`, run by CI)
def test_processes_passing_different_arguments_all_raise_a_value_error_naming_them(tmp_path):
    """Process i passes key PRNGKey(i) and batch_size 16 + 4i: both raise (neither waits in a
    collective for the other), naming `key` and `batch_size` but no argument they agree on."""
    if not hasattr(jax, "distributed") or "jax_cpu_collectives_implementation" not in jax.config.values:
        pytest.skip(f"jax {jax.__version__} has no jax.distributed with CPU collectives")
    port = free_port()
    results = run_all([(["disagree", str(i), "2", str(port)], 2) for i in (0, 1)], tmp_path,
                      timeout_s=120)
    for i, result in enumerate(results):
        assert f"process {i}: shut down cleanly" in check_ok(result, f"process {i}")
        kind, message = json.loads((tmp_path / f"disagree{i}.json").read_text())
        assert kind == "ValueError", (kind, message)
        assert re.search(r"^fit: the processes disagree on `key`, `batch_size` \(`key`: process 0 "
                         r"vs process 1; `batch_size`: process 0 vs process 1\)", message), message
        assert f"this is process {i} of 2" in message
        for agreed in ("`epochs`", "`x`", "`params`", "`validation`", "`initial_epoch`"):
            assert agreed not in message, message


@pytest.mark.slow  # two jax starts and compiles; in the default run: nothing else tests this
def test_two_processes_on_localhost_equal_the_single_process_run(mesh_run, two_processes):
    single = load_run(mesh_run, "single")
    for i in (0, 1):
        assert_close_runs(load_run(two_processes, f"process{i}"), single)
        assert_close_runs(load_run(two_processes, f"process{i}_resumed"), single)
    # both processes hold the same replicated params, bit for bit
    first, second = load_run(two_processes, "process0")[0], load_run(two_processes, "process1")[0]
    assert all(first[k].tobytes() == second[k].tobytes() for k in first)


def shard_position(shard, batches):
    """k such that the rows `shard` (n_batches, B/4) are column block k of `batches`."""
    width = shard.shape[1]
    for k in range(batches.shape[1] // width):
        if np.array_equal(shard, batches[:, k * width:(k + 1) * width]):
            return k
    raise AssertionError(f"rows read {shard.tolist()} are no device's slice of the batches "
                         f"{batches.tolist()}")


@pytest.mark.slow  # the same run as the test above
def test_each_process_reads_only_its_own_devices_rows_of_every_batch(two_processes):
    """Devices 0, 1 of the mesh are process 0's, 2, 3 process 1's: in every epoch, process p
    read from `x` exactly rows `order[b*16 + 8p : b*16 + 8p + 8]` of each full batch b (one
    read per device), in the single-device order `permutation(split(fold_in(key, e))[0], 82)`,
    plus the last 2 rows (replicated: 4 devices do not divide them); of the 16 validation rows
    (one batch) rows 8p .. 8p + 7. So neither read the whole data set, and the two processes'
    rows of each full batch are disjoint and together the whole batch."""
    epochs, batch, n_rows, n_full = 6, 16, 82, 5
    key = jax.random.PRNGKey(1)
    reads = [json.loads((two_processes / f"process{i}_reads.json").read_text()) for i in (0, 1)]
    for p, read in enumerate(reads):
        assert all(isinstance(rows, list) for rows in read["x"] + read["x_val"]), read
        full = [np.array(rows) for rows in read["x"] if np.ndim(rows) == 2]
        last = [np.array(rows) for rows in read["x"] if np.ndim(rows) == 1]
        assert len(full) == 2 * epochs and len(last) == epochs, (len(full), len(last))
        for epoch in range(epochs):
            shuffle_key, _ = jax.random.split(jax.random.fold_in(key, epoch))
            order = np.asarray(jax.random.permutation(shuffle_key, n_rows))
            batches = order[:n_full * batch].reshape(n_full, batch)
            mine = full[2 * epoch:2 * epoch + 2]  # the epochs' batches are built in order
            assert sorted(shard_position(rows, batches) for rows in mine) == [2 * p, 2 * p + 1]
            np.testing.assert_array_equal(last[epoch], order[n_full * batch:])
            assert len({int(r) for rows in mine + [last[epoch]] for r in rows.ravel()}) < n_rows
        val = [np.array(rows) for rows in read["x_val"]]
        assert len(val) == 2, val
        rows = np.arange(16).reshape(1, 16)
        assert sorted(shard_position(v, rows) for v in val) == [2 * p, 2 * p + 1]


@pytest.fixture(scope="module")
def streaming_processes(tmp_path_factory):
    """The worker's "stream" mode in 2 processes x 2 devices (one 4-device mesh): streamed
    fits of each process's own part of every batch, of the same batches in memory and of a
    memory map, then four broken streams; their output folder."""
    return run_two_processes(tmp_path_factory.mktemp("streaming"), "stream")


@pytest.mark.slow  # two jax starts and compiles (~20 s of CPU), shared by the tests below
def test_a_stream_of_each_process_own_part_of_every_batch_equals_the_single_process_run(
        mesh_run, streaming_processes):
    """Process p's generator yields rows `b*16 + 8p .. b*16 + 8p + 7` of each batch b of the
    unshuffled rows (of the last batch of 2 rows: row 80 + p, replicated once gathered): the
    params and history of single-device in-memory fit on the whole batches, within float32
    rounding (the gradient mean is reduced across 4 devices), in both processes alike; and
    bit for bit those of the same 2-process fit on the in-memory rows."""
    single = load_run(mesh_run, "single_unshuffled")
    for i in (0, 1):
        streamed = load_run(streaming_processes, f"stream{i}")
        assert_close_runs(streamed, single)
        assert_bitwise_runs(streamed, load_run(streaming_processes, f"arrays{i}"))
    first, second = (load_run(streaming_processes, f"stream{i}")[0] for i in (0, 1))
    assert all(first[k].tobytes() == second[k].tobytes() for k in first)


@pytest.mark.slow  # the same run as the test above
def test_a_memory_map_on_two_processes_is_read_by_rows_and_equals_the_in_memory_run(
        mesh_run, two_processes, streaming_processes):
    """Each process read from the memory map of `x`, per epoch, only its own devices' rows of
    the epoch's full batches (one read per device, `order[b*16 + 4k : b*16 + 4k + 4]` for
    its devices k, all 5 batches at once: one chunk) and the last 2 rows (replicated); its
    params and history are the 2-process in-memory run's bit for bit (the single-device
    run's within float32 rounding)."""
    epochs, batch, n_rows, n_full = 6, 16, 82, 5
    key = jax.random.PRNGKey(1)
    single = load_run(mesh_run, "single")
    for p in (0, 1):
        streamed = load_run(streaming_processes, f"memmap{p}")
        assert_close_runs(streamed, single)
        assert_bitwise_runs(streamed, load_run(two_processes, f"process{p}"))
        reads = json.loads((streaming_processes / f"memmap{p}_reads.json").read_text())
        assert all(isinstance(rows, list) for rows in reads), reads
        full = [np.array(rows) for rows in reads if np.shape(rows) == (n_full, batch // 4)]
        last = [np.array(rows) for rows in reads if np.shape(rows) == (1, 2)]
        assert len(full) == 2 * epochs and len(last) == epochs == len(reads) - len(full)
        for epoch in range(epochs):
            shuffle_key, _ = jax.random.split(jax.random.fold_in(key, epoch))
            order = np.asarray(jax.random.permutation(shuffle_key, n_rows))
            batches = order[:n_full * batch].reshape(n_full, batch)
            mine = full[2 * epoch:2 * epoch + 2]
            assert sorted(shard_position(rows, batches) for rows in mine) == [2 * p, 2 * p + 1]
            np.testing.assert_array_equal(last[epoch][0], order[n_full * batch:])


@pytest.mark.slow  # the same run as the tests above
def test_processes_whose_streams_disagree_all_raise_instead_of_waiting(streaming_processes):
    """Process 1's stream is broken four ways; each time both processes stop with an error
    (the run goes on to the next): the ValueError names what each process held, and the
    process whose loader failed raises the loader's own error."""
    errors = [json.loads((streaming_processes / f"stream_errors{i}.json").read_text())
              for i in (0, 1)]
    expected = {"fewer_batches": r"from batch 5 \(process 0: 1 batch of 1 row; process 1: "
                                 r"its `data` ended\)",
                "other_last_rows": r"from batch 5 \(process 0: 1 batch of 1 row; process 1: "
                                   r"1 batch of 2 rows\)",
                "loader_fails": r"from batch 0 \(process 0: 5 batches of 8 rows; process 1: "
                                r"reading its `data` failed"}
    for name, pattern in expected.items():
        for i in (0, 1):
            kind, message = errors[i][name]
            if name == "loader_fails" and i == 1:
                assert (kind, message) == ("RuntimeError", "the loader of process 1 failed at "
                                                           "batch 3")
                continue
            assert kind == "ValueError", (name, i, kind, message)
            assert re.search(r"^`data`: the processes' batches disagree in epoch 0 " + pattern,
                             message), message
            assert f"this is process {i} of 2" in message
    for i in (0, 1):  # another first batch: found before anything compiles, as for arguments
        kind, message = errors[i]["other_part_rows"]
        assert kind == "ValueError" and re.search(
            r"^fit: the processes disagree on `data` \(`data`: process 0 vs process 1\)",
            message), message
