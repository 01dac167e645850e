"""funcdl/train/host_arrays.py: aligned host arrays that the CPU device takes without a copy,
and the pool a streamed `fit` reuses them from."""
import jax
import numpy as np
import pytest

from funcdl import losses, nn, optim, train
from funcdl.train import chunks, host_arrays

CPU = jax.devices()[0].platform == "cpu"


@pytest.mark.parametrize("shape,dtype", [((3, 5, 7), np.float32), ((1,), np.int8),
                                         ((0, 4), np.float64), ((2, 1, 3), np.int32)])
def test_aligned_empty_starts_on_the_boundary_with_the_shape_and_dtype(shape, dtype):
    for _ in range(5):  # NumPy's own allocations are aligned to 16 bytes only
        array = host_arrays.aligned_empty(shape, dtype)
        assert array.shape == shape and array.dtype == dtype and array.flags.c_contiguous
        assert array.ctypes.data % host_arrays.ALIGNMENT == 0 or array.size == 0


def test_stack_and_take_rows_equal_numpys():
    rng = np.random.default_rng(0)
    leaves = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(5)]
    np.testing.assert_array_equal(host_arrays.stack(leaves), np.stack(leaves))
    host = rng.standard_normal((20, 3))
    rows = rng.permutation(20)[:12].reshape(3, 4)
    taken = host_arrays.take_rows(host, rows)
    np.testing.assert_array_equal(taken, host[rows])
    assert taken.ctypes.data % host_arrays.ALIGNMENT == 0


@pytest.mark.skipif(not CPU, reason="zero-copy device_put is the CPU backend's")
def test_the_cpu_device_takes_an_aligned_array_without_a_copy():
    aligned = host_arrays.stack([np.ones((128, 784), np.float32)] * 4)
    assert jax.device_put(aligned).unsafe_buffer_pointer() == aligned.ctypes.data
    plain = host_arrays.aligned_empty((4 * 128 * 784 + 4,), np.float32)[4:]  # 16 bytes past
    plain[:] = 1
    assert plain.ctypes.data % host_arrays.ALIGNMENT != 0
    assert jax.device_put(plain).unsafe_buffer_pointer() != plain.ctypes.data


def test_the_pool_hands_out_what_was_given_back_by_shape_and_dtype():
    pool = host_arrays.HostPool()
    a = pool.empty((2, 3), np.float32)
    pool.give_back([a])
    assert pool.empty((2, 3), np.float64) is not a  # another dtype: a new array
    assert pool.empty((3, 2), np.float32) is not a  # another shape
    assert pool.empty((2, 3), np.float32) is a
    assert pool.empty((2, 3), np.float32) is not a  # handed out once


def test_a_streamed_fit_reuses_its_chunks_arrays_and_trains_as_in_memory(monkeypatch):
    """12 epochs of 24 chunks: fresh arrays only for the chunks on their way at once (not
    one per chunk), the same params as in-memory fit (a reused array is written only after
    its chunk's call finished)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((96, 5)).astype(np.float32)
    y = rng.standard_normal((96, 2)).astype(np.float32)
    batches = [(x[i:i + 4], y[i:i + 4]) for i in range(0, 96, 4)]
    model = nn.Sequential(nn.Linear(8), nn.Tanh(), nn.Linear(2))
    params = model.init(jax.random.key(0), x)
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 4 * 7 * 4)  # one batch per chunk
    made = []
    fresh = host_arrays.aligned_empty
    monkeypatch.setattr(host_arrays, "aligned_empty",
                        lambda shape, dtype: made.append(shape) or fresh(shape, dtype))
    args = (model, params, losses.mse_loss, optim.adam(1e-2))
    streamed = train.fit(*args, batches, None, epochs=12, progress=False)
    expected = train.fit(*args, x, y, epochs=12, batch_size=4, shuffle=False, progress=False)
    for a, b in zip(jax.tree_util.tree_leaves(streamed[0]), jax.tree_util.tree_leaves(expected[0])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert streamed[2] == expected[2]
    assert 2 <= len(made) <= 2 * 8, made  # x and y of at most 8 chunks, of 288 made
