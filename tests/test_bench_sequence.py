"""benchmarks/bench_sequence.py compares the same work: for each workload, the funcdl model's
loss (both autodiffs' gradients), the hand-written JAX loss and PyTorch's (weights copied
across) agree at the benchmark's weights, so its timings compare one computation."""
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fdl

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_sequence  # noqa: E402

pytestmark = pytest.mark.slow  # the full-size workloads: ~1-2 min on 2 busy cores


@pytest.mark.parametrize("workload", list(bench_sequence.WORKLOADS))
def test_every_implementation_computes_the_same_loss_and_gradient(workload, allow_rank_promotion):
    make_data, make_model, hand_loss, _, _, _ = bench_sequence.WORKLOADS[workload]
    x, y = (jnp.asarray(a) for a in make_data())
    model = make_model()
    params = model.init(jax.random.key(0), x)

    def loss(p):
        return fdl.losses.mse_loss(model.apply(p, x), y)

    expected, expected_grads = jax.jit(jax.value_and_grad(lambda p: hand_loss(p, x, y)))(params)
    for value_and_grad in (jax.value_and_grad, fdl.autodiff.value_and_grad):
        value, grads = jax.jit(value_and_grad(loss))(params)
        np.testing.assert_allclose(value, expected, rtol=2e-5)
        for g, e in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected_grads)):
            np.testing.assert_allclose(g, e, rtol=2e-3, atol=2e-5 * float(np.max(np.abs(e))))


@pytest.mark.parametrize("workload", list(bench_sequence.WORKLOADS))
def test_pytorch_row_trains_the_same_model(workload, allow_rank_promotion):
    torch = pytest.importorskip("torch")
    make_data, make_model, hand_loss, make_torch, _, _ = bench_sequence.WORKLOADS[workload]
    x, y = make_data()
    params = make_model().init(jax.random.key(0), jnp.asarray(x))
    losses = []  # the loss of PyTorch's first step, read as it backpropagates
    backward = torch.Tensor.backward

    def record(self, *args, **kwargs):
        losses.append(float(self.detach()))
        return backward(self, *args, **kwargs)

    torch.Tensor.backward = record
    try:
        make_torch(params, x, y)(1)
    finally:
        torch.Tensor.backward = backward
    expected = float(hand_loss(params, jnp.asarray(x), jnp.asarray(y)))
    np.testing.assert_allclose(losses[0], expected, rtol=2e-5)
