"""The mesh data feed (`funcdl/train/feed.py`) on 4 forced host devices, in a subprocess (the
device count is fixed at jax's start): every device's shard of the fed arrays holds exactly
`x[order[b*B + lo : b*B + hi]]` for its slice `lo:hi` of every batch b, with `order` the
documented single-device shuffle computed here independently, and each shard is read once
from the host data (a memory map here). Without a mesh the feed is the data on device, once."""
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from funcdl.train import feed

SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    from jax.sharding import Mesh, PartitionSpec as P
    from funcdl.train import feed
    assert len(jax.devices()) == 4, jax.devices()
    reads = []  # the shape of every row index the feed reads the host data with
    read_rows = feed.read_rows
    feed.read_rows = lambda host, rows: reads.append(rows.shape) or read_rows(host, rows)

    N, B = 50, 8  # 6 full batches and a last one of 2 rows, which 4 devices do not divide
    np.save(PATH, np.arange(N * 3, dtype=np.float32).reshape(N, 3))
    x = np.load(PATH, mmap_mode="r")
    y = np.arange(N, dtype=np.int32) * 10
    x_val, y_val = x[:20] + 0.5, y[:20] + 1  # 2 full batches of 8 and a last one of 4 rows
    key = jax.random.key(5)

    def shuffled(epoch):  # the documented order of fit's epoch `epoch`
        shuffle_key, _ = jax.random.split(jax.random.fold_in(key, epoch))
        return np.asarray(jax.random.permutation(shuffle_key, N))

    def check(fed, host, order, batch, mesh, last_spec, full_spec=P(None, "data")):
        n_full = len(order) // batch
        rows = order[:n_full * batch].reshape(n_full, batch)
        assert fed.full.shape == (n_full, batch) + host.shape[1:], fed.full.shape
        assert fed.full.sharding.spec == full_spec, fed.full.sharding
        per_device = batch // mesh.shape["data"] if full_spec == P(None, "data") else 0
        axis = mesh.axis_names.index("data")
        position = lambda device: int(np.argwhere(mesh.devices == device)[0][axis])
        for shard in fed.full.addressable_shards:
            k = position(shard.device)
            mine = rows[:, k * per_device:(k + 1) * per_device] if per_device else rows
            np.testing.assert_array_equal(np.asarray(shard.data), host[mine])
        last = order[n_full * batch:]
        if last_spec is None:
            assert fed.last is None and len(last) == 0
            return
        assert fed.last.sharding.spec == last_spec, fed.last.sharding
        np.testing.assert_array_equal(np.asarray(fed.last), host[last])
        if last_spec == P("data"):
            for shard in fed.last.addressable_shards:
                k = position(shard.device)
                n = len(last) // mesh.shape["data"]
                want = host[last[k * n:(k + 1) * n]]
                np.testing.assert_array_equal(np.asarray(shard.data), want)

    mesh = Mesh(np.array(jax.devices()), ("data",))
    reads.clear()
    f = feed.Feed(x, y, (x_val, y_val), mesh, B, True, key)
    # validation, once: per leaf 4 shards of the full batches, 4 of the last (1 row each)
    assert reads == 2 * (4 * [(2, 2)] + 4 * [(1,)]), reads
    for epoch in (0, 3):
        reads.clear()
        x_fed, y_fed, xv_fed, yv_fed = f.data(epoch)
        order = shuffled(epoch)
        check(x_fed, x, order, B, mesh, P())
        check(y_fed, y, order, B, mesh, P())
        # per leaf: each device reads its 6 x 2 rows; the replicated last 2 rows are read once
        assert reads == 2 * (4 * [(6, 2)] + [(2,)]), reads
        check(xv_fed, x_val, np.arange(20), B, mesh, P("data"))
        check(yv_fed, y_val, np.arange(20), B, mesh, P("data"))
    assert not np.array_equal(shuffled(0), shuffled(3))

    # no shuffling: the order of the rows, fed once for every epoch; 9 validation rows are
    # one batch of 9 (fewer than 16), which 4 devices do not divide: replicated
    plain = feed.Feed(x, y, (x_val[:9], y_val[:9]), mesh, 16, False, key)
    assert plain.data(0) is plain.data(4)
    x_fed, y_fed, xv_fed, _ = plain.data(2)
    check(x_fed, x, np.arange(N), 16, mesh, P())
    check(xv_fed, x_val[:9], np.arange(9), 9, mesh, None, full_spec=P())
    assert feed.Feed(x, y, None, mesh, 16, False, key).data(0)[2:] == (None, None)

    # a ("model", "data") mesh of 2 x 2: the two replicas of each shard share one read
    mesh2 = Mesh(np.array(jax.devices()).reshape(2, 2), ("model", "data"))
    reads.clear()
    x_fed, y_fed, _, _ = feed.Feed(x, y, None, mesh2, B, True, key).data(1)
    check(x_fed, x, shuffled(1), B, mesh2, P("data"))  # 2 "data" devices divide 2 rows
    assert reads == 2 * (2 * [(6, 4)] + 2 * [(1,)]), reads
    print("FEED OK")
''')


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_each_device_holds_its_own_rows_of_every_batch(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=os.getcwd())
    script = f"PATH = {str(tmp_path / 'x.npy')!r}\n" + SCRIPT
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and "FEED OK" in result.stdout, result.stderr[-3000:]


def test_the_epoch_order_is_the_single_device_programs():
    for key in (jax.random.PRNGKey(3), jax.random.key(3)):
        for epoch in (0, 7):
            shuffle_key, _ = jax.random.split(jax.random.fold_in(key, epoch))
            want = np.asarray(jax.random.permutation(shuffle_key, 37))
            np.testing.assert_array_equal(feed.epoch_order(key, epoch, 37), want)


def test_without_a_mesh_the_data_are_on_device_once_for_every_call():
    x, y = np.ones((10, 2), np.float32), np.zeros((10,), np.int32)
    f = feed.Feed(x, y, (x[:3], y[:3]), None, 4, True, jax.random.key(0))
    data = f.data(0)
    assert f.data(5) is data
    assert all(isinstance(leaf, jax.Array) for leaf in data)
    np.testing.assert_array_equal(data[2], x[:3])
