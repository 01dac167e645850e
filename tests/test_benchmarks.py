"""benchmarks/bench_train.py: its command line runs end to end (the scaled-down gpu_wide path
and XOR), and its hand-written JAX loops and scans train exactly what `fit` trains (the same
shuffled batch order per epoch), as the benchmark itself checks on every run: else its
timings would compare different work. Needs the bench extra (optax); no torch.
"""
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

pytest.importorskip("optax", reason="bench_train's hand-written loops need the bench extra")

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import train_workloads  # noqa: E402

IMPLS = "fit jax,jax+optax loop"  # few compiles: the module costs ~14 s on 2 idle cores


def test_layout_is_the_one_fit_uses():
    mlp = train_workloads.Workload((784, 10), "", np.zeros((60_000, 1)), None, 1, 128, "", 0, "")
    assert train_workloads.layout(mlp) == (128, 468, 96, True)
    assert train_workloads.layout(train_workloads.workload("xor")) == (4, 1, 0, False)
    assert train_workloads.layout(train_workloads.workload("gpu_wide", gpu_steps=3, gpu_scale=64)) \
        == (128, 3, 0, True)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """`(report, stdout)` of one run: XOR and gpu_wide at 1/64 scale, 2 steps, 1 repeat."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--workloads",
         "xor,gpu_wide", "--gpu-scale", "64", "--gpu-steps", "2", "--repeats", "1",
         "--implementations", IMPLS, "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.read_text()), done.stdout


@pytest.mark.slow  # a fresh jax process and 6 small compiles
def test_gpu_wide_scaled_down_reports_throughput_ratios_and_matmul_share(ran):
    report, stdout = ran
    gpu = report["results"]["gpu_wide"]
    assert list(gpu) == IMPLS.split(",")
    summary = report["gpu_wide"]
    assert summary["sizes"] == [64, 128, 128, 128, 64] and summary["batch"] == 128
    assert summary["steps"] == 2 and summary["matmul_size"] == 128
    assert summary["model_flops_per_step"] == 6 * 128 * (64 * 128 + 2 * 128 * 128 + 128 * 64)
    fit, loop = gpu["fit jax"], gpu["jax+optax loop"]
    assert fit["dtype"] == "float32" == loop["dtype"]
    assert fit["x_hand_loop_steps_per_s"] == pytest.approx(loop["seconds"] / fit["seconds"])
    assert loop["x_hand_loop_steps_per_s"] == 1.0
    assert fit["x_hand_scan_steps_per_s"] is None  # no scan in this run
    assert summary["matmul_flops_per_s"]["bfloat16"] > 0
    rate = summary["matmul_flops_per_s"]["float32"]
    for row in (fit, loop):
        assert row["steps_per_s"] == pytest.approx(2 / row["seconds"])
        assert row["of_matmul_rate"] == pytest.approx(
            summary["model_flops_per_step"] * 2 / row["seconds"] / rate)
    assert "| jax+optax loop |" in stdout and "% matmul rate" in stdout


@pytest.mark.slow
def test_hand_written_runs_end_where_fit_ends(ran):
    report, _ = ran
    gpu, xor = report["results"]["gpu_wide"], report["results"]["xor"]
    # 2 shuffled float32 Adam steps: rounding alone (another order: 4e-3 max, 0.6 rel)
    assert gpu["jax+optax loop"]["max_abs_diff_vs_fit"] < 1e-5
    assert gpu["jax+optax loop"]["rel_diff_vs_fit"] < 1e-4
    assert xor["jax+optax loop"]["rel_diff_vs_fit"] < 1e-5  # 400 full-batch SGD epochs
    assert gpu["jax+optax loop"]["dispatched"] is not None
    assert list(xor) == ["fit jax", "jax+optax loop"]


def test_the_numpy_workload_s_hand_written_runs_put_the_numpy_data_on_the_device_themselves():
    assert train_workloads.from_numpy("mlp_numpy") and not train_workloads.from_numpy("mlp")
    assert list(train_workloads.NUMPY_IMPLEMENTATIONS) == [
        "fit jax", "fit jax + progress", "jax+optax loop", "jax+optax scan"]
    xor = train_workloads.workload("xor")
    on_device = xor._replace(data=tuple(map(jax.device_put, (xor.x, xor.y))))
    from_numpy = xor._replace(data=(xor.x, xor.y))  # as the mlp_numpy runs get them
    for fused in (True, False):
        expected = train_workloads.hand_jax(on_device, fused)()[0]
        got = train_workloads.hand_jax(from_numpy, fused)(guard=True)[0]  # no implicit copy
        for a, b in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(got)):
            np.testing.assert_array_equal(a, b)
