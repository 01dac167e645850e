"""Data-parallel `fit` on several devices and several processes, in subprocesses.

Each configuration needs its own process (the device count is fixed when jax starts), so
`tests/distributed_worker.py` runs the training and writes its results with `fdl.checkpoint`;
these tests compare them. The reference is a single-device `fit` on the same batches: with
the gradient mean reduced across devices in another order, results agree within float32
rounding, not bitwise. Every subprocess has a timeout and is killed in a `finally`.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/distributed_worker.py mesh OUT
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/distributed_worker.py \\
        process I 2 PORT OUT          # for I in 0 1, at the same time
"""
import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from funcdl import checkpoint, train

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "distributed_worker.py"
TIMEOUT_S = 300  # generous: six engineers share two cores; a hang, not slowness, should fail
# float32 rounding of a reordered sum, grown over 42 Adam steps: the observed difference is
# ~1e-7 on params of size ~0.5; a wrong reduction (a sum instead of a mean, a dropped shard)
# is off by more than 1e-2.
RTOL, ATOL = 1e-5, 1e-6



def run_all(commands, out):
    """Run `(argv, n_devices)` commands at once; return their `(returncode, stdout, stderr)`.
    All are killed if any is still running when the timeout expires or anything fails."""
    processes = []
    try:
        for argv, n_devices in commands:
            env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
                   "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}"}
            processes.append(subprocess.Popen(
                [sys.executable, str(WORKER), *argv, str(out)], env=env, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        results = []
        for process in processes:
            try:
                stdout, stderr = process.communicate(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{process.args[2:4]} did not finish within {TIMEOUT_S} s")
            results.append((process.returncode, stdout, stderr))
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()


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
    np.testing.assert_allclose(got_history["loss"], want_history["loss"], rtol=RTOL)


@pytest.fixture(scope="module")
def mesh_run(tmp_path_factory):
    """The worker's "mesh" mode on 4 forced host devices: its output folder."""
    out = tmp_path_factory.mktemp("mesh")
    check_ok(run_all([(["mesh"], 4)], out)[0], "the 4-device worker")
    return out


def test_fit_on_a_4_device_mesh_equals_single_device_fit(mesh_run):
    single = load_run(mesh_run, "single")
    assert len(single[1]["loss"]) == 6 and single[1]["loss"][-1] < 0.6 * single[1]["loss"][0]
    assert_close_runs(load_run(mesh_run, "mesh"), single)


def test_checkpoint_and_resume_on_the_mesh(mesh_run):
    """3 epochs with a checkpoint, then `resume=True` to 6, equals 6 epochs in one go."""
    assert_close_runs(load_run(mesh_run, "mesh_resumed"), load_run(mesh_run, "mesh"))


def test_bad_meshes_are_value_errors_naming_the_argument(mesh_run):
    errors = json.loads((mesh_run / "errors.json").read_text())
    kind, message = errors["no_data_axis"]
    assert kind == "ValueError" and re.search(r"`mesh`.*\"data\".*'model'", message), message
    kind, message = errors["batch_not_divisible"]
    assert kind == "ValueError" and re.search(r"`batch_size`.*\"data\".*4.*\b6\b", message), message


def test_a_mesh_without_a_data_axis_is_refused_before_compiling():
    from funcdl import losses, nn, optim

    model = nn.Linear(1)
    x = np.ones((4, 2), np.float32)
    params = model.init(jax.random.PRNGKey(0), x)
    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    with pytest.raises(ValueError, match=r"`mesh` must have an axis named \"data\".*'batch'"):
        train.fit(model, params, losses.mse_loss, optim.sgd(0.1), x, x[:, :1], epochs=1,
                  mesh=mesh, progress=False)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # two jax starts and compiles; in the default run: nothing else tests this
def test_two_processes_on_localhost_equal_the_single_process_run(mesh_run, tmp_path):
    """jax.distributed with gloo collectives: 2 processes x 2 devices, one 4-device mesh."""
    if not hasattr(jax, "distributed") or "jax_cpu_collectives_implementation" not in jax.config.values:
        pytest.skip(f"jax {jax.__version__} has no jax.distributed with CPU collectives")
    port = free_port()
    results = run_all([(["process", str(i), "2", str(port)], 2) for i in (0, 1)], tmp_path)
    for i, result in enumerate(results):
        stdout = check_ok(result, f"process {i}")
        assert f"process {i}: shut down cleanly" in stdout
    single = load_run(mesh_run, "single")
    for i in (0, 1):
        assert_close_runs(load_run(tmp_path, f"process{i}"), single)
        assert_close_runs(load_run(tmp_path, f"process{i}_resumed"), single)
    # both processes hold the same replicated params, bit for bit
    first, second = load_run(tmp_path, "process0")[0], load_run(tmp_path, "process1")[0]
    assert all(first[k].tobytes() == second[k].tobytes() for k in first)
