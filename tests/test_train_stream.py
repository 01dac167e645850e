"""fit on streamed data (`fit(..., data, None)` and memory-mapped `x`) against in-memory fit of
the same batches: bitwise equal params, optimizer state and history on one CPU device (the
chunks, the prefetch thread, the dropout keys, the metric totals and the validation are
in-memory fit's work), steps_per_epoch, the NaN guard, checkpoints, and the errors."""
import importlib.util
import pathlib
import re
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import checkpoint, losses, metrics, nn, optim, train
from funcdl.train import chunks, host_arrays, stream_run
from train_reference import (assert_bitwise_equal, counting_compilations,
                             run_on_four_host_devices, with_and_without_a_bad_row)

RNG = np.random.RandomState(0)
X = RNG.randn(100, 5).astype(np.float32)
Y = (X[:, :2] ** 2).astype(np.float32)
BATCH = 16  # 6 full batches and one of 4 rows
MODEL = nn.Sequential(nn.Linear(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(2))
PARAMS = MODEL.init(jax.random.key(0), X)
ADAM = optim.adam(1e-2)
LOSS = losses.mse_loss
KW = dict(progress=False, key=jax.random.key(3), validation=(X[:30], Y[:30]),
          metrics={"mae": lambda p, t: jnp.abs(p - t).mean(), "r2": metrics.r2_score()})


class Batches:
    """A plain re-iterable: `iter()` is a new pass over the rows, `BATCH` at a time."""

    def __init__(self, x=X, y=Y, batch=BATCH):
        self.x, self.y, self.batch = x, y, batch

    def __iter__(self):
        for start in range(0, len(self.x), self.batch):
            yield self.x[start:start + self.batch], self.y[start:start + self.batch]


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 2 batches (the tests' batches are 16 x 7 float32 = 448 bytes)."""
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 2 * 448)


@pytest.fixture(scope="module")
def in_memory():
    return train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=3, batch_size=BATCH, shuffle=False,
                     **KW)


@pytest.mark.parametrize("make", [Batches, lambda: (lambda: iter(Batches()))],
                         ids=["re-iterable", "callable"])
def test_a_stream_trains_as_in_memory_fit_bitwise(in_memory, small_chunks, make):
    streamed = train.fit(MODEL, PARAMS, LOSS, ADAM, make(), None, epochs=3, **KW)
    assert_bitwise_equal(streamed[:2], in_memory[:2])
    assert streamed[2] == in_memory[2]
    assert set(streamed[2]) == {"loss", "mae", "r2", "val_loss", "val_mae", "val_r2", "lr"}


def test_no_prefetch_thread_gives_the_same(in_memory, small_chunks):
    streamed = train.fit(MODEL, PARAMS, LOSS, ADAM, Batches(), None, epochs=3, prefetch=0, **KW)
    assert_bitwise_equal(streamed[:2], in_memory[:2])
    assert streamed[2] == in_memory[2]


def test_a_second_streamed_fit_compiles_nothing(small_chunks):
    args = (MODEL, PARAMS, LOSS, ADAM, Batches(), None)
    train.fit(*args, epochs=1, **KW)
    with counting_compilations() as compiled:
        train.fit(*args, epochs=2, **KW)
    assert compiled == []


@pytest.mark.slow  # ~7 s: the slow tier (`make test-slow`, run by CI)
def test_a_memory_map_is_read_chunk_by_chunk_and_shuffled_as_in_memory(tmp_path, small_chunks,
                                                                        monkeypatch, in_memory):
    np.save(tmp_path / "x.npy", X)
    x_map = np.load(tmp_path / "x.npy", mmap_mode="r")
    reads = []
    take_rows = host_arrays.take_rows  # the one place a single-device stream reads rows
    monkeypatch.setattr(host_arrays, "take_rows", lambda host, rows, empty: reads.append(
        rows.size) or take_rows(host, rows, empty))
    kwargs = dict(KW, epochs=3, batch_size=BATCH)  # shuffled: the default for arrays
    mapped = train.fit(MODEL, PARAMS, LOSS, ADAM, x_map, Y, **kwargs)
    expected = train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, **kwargs)
    assert_bitwise_equal(mapped[:2], expected[:2])
    # the steps are bitwise the same; the reported loss of a batch that in-memory fit gathers
    # inside its program (shuffled) may round its last bit otherwise (XLA fuses the gather)
    for name, values in expected[2].items():
        np.testing.assert_allclose(mapped[2][name], values, rtol=1e-6, atol=0)
    in_order = train.fit(MODEL, PARAMS, LOSS, ADAM, x_map, Y, **dict(kwargs, shuffle=False))
    assert_bitwise_equal(in_order[:2], in_memory[:2])
    assert in_order[2] == in_memory[2]
    # x and y read by rows (2 fits of 3 epochs): per epoch 3 chunks of 2 batches and the last
    # 4 rows, never all 100
    assert sorted(set(reads)) == [4, 2 * BATCH] and sum(reads) == 2 * 6 * len(X)
    view = np.asarray(x_map)[10:]  # a view of the memory map is streamed too
    assert stream_run.MemmapSource is type(train.stream.open_source(
        view, Y[10:], batch_size=BATCH, shuffle=None, steps_per_epoch=None)[0])


def fit(data, y=None, params=PARAMS, **kwargs):
    """fit with the tests' model, loss, optimizer and KW (so they share compiled programs)."""
    return train.fit(MODEL, params, LOSS, ADAM, data, y, **{**KW, **kwargs})


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_steps_per_epoch_takes_batches_from_one_iterator_across_epochs(small_chunks):
    """Keras's rule: 8 batches of 16 rows (128), 4 per epoch: epoch 0 is batches 0-3, epoch 1
    batches 4-7, epoch 2 a new iterator's 0-3: as in-memory fits of those rows, continued."""
    x, y = RNG.randn(128, 5).astype(np.float32), RNG.randn(128, 2).astype(np.float32)
    streamed = fit(Batches(x, y), epochs=3, steps_per_epoch=4)
    params, state, losses_ = PARAMS, None, []
    for epoch, rows in enumerate([slice(0, 64), slice(64, 128), slice(0, 64)]):
        params, state, history = fit(x[rows], y[rows], params, epochs=epoch + 1,
                                     initial_epoch=epoch, batch_size=BATCH, shuffle=False,
                                     opt_state=state)
        losses_ += history["loss"]
    assert_bitwise_equal(streamed[:2], (params, state))
    assert streamed[2]["loss"] == losses_


def test_a_stream_that_runs_out_before_steps_per_epoch_ends_that_epoch_with_a_warning(
        small_chunks):
    with pytest.warns(UserWarning, match="ran out after 3 of steps_per_epoch=4 batches in "
                                         "epoch 1"):
        _, _, history = fit(Batches(), epochs=2, steps_per_epoch=4)
    assert len(history["loss"]) == 2  # 100 rows = 7 batches: 4, then 3 (the last one short)


def test_a_generator_function_without_len_ends_its_epoch_with_the_iterator(
        capsys, small_chunks, in_memory):
    def batches():
        yield from Batches()
    _, _, history = fit(batches, epochs=3, progress=True)
    assert history == in_memory[2]
    err = capsys.readouterr().err  # not a terminal: one line per epoch
    assert "Epoch 1/3 - " in err and "Epoch 3/3 - " in err


@pytest.mark.slow  # ~11 s: the slow tier (`make test-slow`, run by CI)
def test_the_nan_guard_stops_a_stream_where_in_memory_fit_stops(small_chunks):
    bad = X.copy()
    bad[70, 0] = np.inf  # batch 4: the first of the third chunk
    with pytest.raises(FloatingPointError) as streamed:
        fit(Batches(bad), epochs=2)
    with pytest.raises(FloatingPointError) as in_memory:
        fit(bad, Y, epochs=2, batch_size=BATCH, shuffle=False)
    assert (streamed.value.epoch, streamed.value.step) == (0, 4)
    assert (in_memory.value.epoch, in_memory.value.step) == (0, 4)
    assert_bitwise_equal((streamed.value.params, streamed.value.opt_state),
                         (in_memory.value.params, in_memory.value.opt_state))


class Spoiled:
    """Batches() whose epoch `bad_epoch` has an inf in batch 4 (epochs counted by iter())."""

    def __init__(self, bad_epoch):
        self.bad_epoch, self.epochs = bad_epoch, 0

    def __iter__(self):
        x = X.copy()
        if self.epochs == self.bad_epoch:
            x[70, 0] = np.inf
        self.epochs += 1
        return iter(Batches(x))


def test_a_streamed_nan_stop_checkpoints_its_epoch_start_and_resume_runs_it_again(
        tmp_path, small_chunks, in_memory):
    path = tmp_path / "stream.safetensors"
    with pytest.raises(FloatingPointError, match="runs that epoch again") as stop:
        fit(Spoiled(1), epochs=3, checkpoint=path)
    assert (stop.value.epoch, stop.value.step) == (1, 4)
    meta = checkpoint.metadata(path)
    assert (meta["epochs_done"], meta["step"]) == ("1", "0")
    resumed = fit(Batches(), epochs=3, checkpoint=path, resume=True)
    assert_bitwise_equal(resumed[:2], in_memory[:2])
    assert resumed[2] == in_memory[2]


@pytest.mark.slow  # 4 fits and both guarded programs: ~7 s of CPU
def test_a_memory_map_resumes_a_nan_stop_at_its_step_as_in_memory_fit(tmp_path, small_chunks):
    runs = []
    for name, bad_x, good_x in with_and_without_a_bad_row(tmp_path, X):
        path = tmp_path / f"{name}.safetensors"
        kwargs = dict(epochs=2, batch_size=BATCH, checkpoint=path)
        with pytest.raises(FloatingPointError) as stop:
            fit(bad_x, Y, **kwargs)
        assert checkpoint.metadata(path)["step"] == str(stop.value.step) != "0"
        runs.append(fit(good_x, Y, resume=True, **kwargs))
    assert_bitwise_equal(runs[0][:2], runs[1][:2])
    for name, values in runs[1][2].items():  # shuffled: the loss's last bit (see above)
        np.testing.assert_allclose(runs[0][2][name], values, rtol=1e-6, atol=0)


def test_callbacks_see_every_streamed_epoch_and_can_stop(small_chunks):
    seen = []

    class StopAfterTwo:
        def on_epoch_end(self, epoch, state):
            seen.append((epoch, len(state.history["loss"])))
            return epoch == 1

    _, _, history = fit(Batches(), epochs=5, callbacks=[StopAfterTwo()])
    assert seen == [(0, 1), (1, 2)] and len(history["loss"]) == 2


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_an_error_in_the_loader_reaches_the_caller(small_chunks):
    def broken():
        yield X[:16], Y[:16]
        yield X[16:32], Y[16:32]
        raise RuntimeError("disk gone")
    with pytest.raises(RuntimeError, match="disk gone"):
        fit(broken, epochs=1)


def _fit(data, y=None, **kwargs):
    return train.fit(MODEL, PARAMS, LOSS, ADAM, data, y, **{"epochs": 1, "progress": False,
                                                            **kwargs})


@pytest.mark.parametrize("data, kwargs, error, match", [
    (iter(Batches()), {}, ValueError, r"`data` is an iterator .* callable returning a new "
                                      "iterator"),
    ((b for b in Batches()), {}, ValueError, r"`data` is an iterator \(generator\)"),
    (Batches(), {"shuffle": True}, ValueError, r"`shuffle=True` with streamed `data`"),
    (Batches(), {"shuffle": "yes"}, TypeError, r"`shuffle` must be a bool, got str"),
    (Batches(), {"batch_size": 16}, ValueError, r"`batch_size` must be None with streamed"),
    (Batches(), {"prefetch": -1}, ValueError, r"`prefetch` must be >= 0, got -1"),
    (Batches(), {"steps_per_epoch": 0}, ValueError, r"`steps_per_epoch` must be >= 1"),
    ([], {}, ValueError, r"`data` yielded no batches"),
    ([X[:16]], {}, TypeError, r"`data` must yield pairs \(x_batch, y_batch\) or triples "
                              r"\(x_batch, y_batch, sample_weight\), got its first batch a "
                              "ndarray"),
    ([(X[:16], Y[:8])], {}, ValueError, r"same number of rows"),
    (lambda: [1, 2], {}, TypeError, r"a callable must return an iterator"),
    (42, {}, TypeError, r"`x` must be an array"),
    (Batches(), {"accumulate": 0}, ValueError, r"`accumulate` must be >= 1, got 0"),
], ids=["iterator", "generator", "shuffle", "shuffle-type", "batch_size", "prefetch", "steps",
        "empty", "not-a-pair", "rows", "callable", "int", "accumulate"])
def test_bad_streams_are_refused_before_anything_compiles(data, kwargs, error, match):
    with counting_compilations() as compiled:
        with pytest.raises(error, match=match):
            _fit(data, **kwargs)
    assert compiled == []


def test_steps_per_epoch_with_arrays_is_refused():
    with pytest.raises(ValueError, match=r"`steps_per_epoch` is for streamed `data`"):
        _fit(X, Y, batch_size=BATCH, steps_per_epoch=2)


def test_batches_of_changing_shapes_are_refused_naming_data():
    short_in_the_middle = [(X[:16], Y[:16]), (X[16:20], Y[16:20]), (X[20:36], Y[20:36])]
    with pytest.raises(ValueError, match=r"`data`: batch 1 of epoch 0 has 4 rows and is "
                                         "followed by more batches"):
        _fit(short_in_the_middle)
    other_width = [(X[:16], Y[:16]), (X[16:32, :4], Y[16:32])]
    with pytest.raises(ValueError, match=r"`data`: batch 1 of epoch 0 has 16 rows \(\(16, 4\)"):
        _fit(other_width)
    more_rows = [(X[:16], Y[:16]), (X[16:48], Y[16:48])]
    with pytest.raises(ValueError, match=r"first batch has 16 rows"):
        _fit(more_rows)


def test_a_short_last_batch_is_one_more_program_and_the_epoch_row_one_more():
    """Batches of 16 then one of 4: the chunk of 6 batches, the 4-row step, the epoch's row."""
    def loss(pred, target):  # a loss of its own: no other test compiled these programs
        return LOSS(pred, target)
    model = nn.Linear(2)
    params = model.init(jax.random.key(0), X)
    with counting_compilations() as compiled:
        train.fit(model, params, loss, optim.sgd(0.1), Batches(), None, epochs=1,
                  progress=False)
    programs = sorted(name for name in compiled if "_run_epochs" in name or "epoch_row" in name)
    assert programs == ["jit(_run_epochs)"] * 2 + ["jit(epoch_row)"]


@pytest.mark.slow  # ~9 s: the slow tier (`make test-slow`, run by CI)
def test_torch_dataloader_trains_as_in_memory_fit(in_memory, small_chunks):
    torch = pytest.importorskip("torch", reason="torch is not installed (the bench extra)")
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(Y))
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=False)
    streamed = train.fit(MODEL, PARAMS, LOSS, ADAM, loader, None, epochs=3, **KW)
    assert_bitwise_equal(streamed[:2], in_memory[:2])
    assert streamed[2] == in_memory[2]


def test_grain_map_dataset_trains_as_in_memory_fit(in_memory, small_chunks):
    grain = pytest.importorskip("grain", reason="grain is not installed (the stream extra)")
    dataset = grain.MapDataset.range(len(X)).map(lambda i: (X[i], Y[i])).batch(BATCH)
    streamed = train.fit(MODEL, PARAMS, LOSS, ADAM, dataset, None, epochs=3, **KW)
    assert_bitwise_equal(streamed[:2], in_memory[:2])
    assert streamed[2] == in_memory[2]


MESH_SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    from jax.sharding import Mesh
    from funcdl import nn, losses, optim, train
    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.RandomState(0)
    x = rng.randn(104, 5).astype(np.float32); y = (x[:, :2] ** 2).astype(np.float32)
    np.save(PATH, x)
    model = nn.Sequential(nn.Linear(16), nn.ReLU(), nn.Linear(2))
    params = model.init(jax.random.key(0), x)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    kw = dict(epochs=2, progress=False, validation=(x[:30], y[:30]))
    batches = [(x[s:s + 16], y[s:s + 16]) for s in range(0, 104, 16)]  # the last: 8 rows
    one = train.fit(model, params, losses.mse_loss, optim.adam(1e-2), x, y, batch_size=16,
                    shuffle=False, **kw)
    four = train.fit(model, params, losses.mse_loss, optim.adam(1e-2), batches, None,
                     mesh=mesh, **kw)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, 1e-5, 1e-6),
                           one[:2], four[:2])
    np.testing.assert_allclose(one[2]["val_loss"], four[2]["val_loss"], 1e-5)
    assert four[0][0]["w"].sharding.is_fully_replicated
    shuffled = dict(kw, batch_size=16)
    one = train.fit(model, params, losses.mse_loss, optim.adam(1e-2), x, y, **shuffled)
    four = train.fit(model, params, losses.mse_loss, optim.adam(1e-2),
                     np.load(PATH, mmap_mode="r"), y, mesh=mesh, **shuffled)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, 1e-5, 1e-6),
                           one[:2], four[:2])
    np.testing.assert_allclose(one[2]["loss"], four[2]["loss"], 1e-5)
    print("MESH OK")
''')


@pytest.mark.slow  # a fresh jax process on 4 forced host devices: ~15 s of CPU
def test_streams_and_memory_maps_on_a_four_device_mesh(tmp_path):
    run_on_four_host_devices(MESH_SCRIPT, tmp_path / "x.npy")


def test_no_warning_for_a_stream_of_the_in_memory_shapes(small_chunks):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(Batches(), epochs=1)


@pytest.mark.slow  # ~16 s: the slow tier (`make test-slow`, run by CI)
def test_every_python_block_of_the_streaming_guide_runs_alone():
    """Each block in a namespace of its own, in order; a torch block only where torch is, a
    block marked `<!-- skip: ... -->` (several processes) not here."""
    guide = pathlib.Path(__file__).resolve().parents[1] / "docs" / "guides" / "streaming.md"
    blocks = re.findall(r"(<!-- needs torch -->\n|<!-- skip: [^\n]*-->\n)?```python\n(.*?)```",
                        guide.read_text(), re.S)
    assert len(blocks) >= 5
    for marker, code in blocks:
        if marker.startswith("<!-- skip"):
            continue
        if marker and importlib.util.find_spec("torch") is None:
            print("skipped a block of the streaming guide: torch is not installed")
            continue
        exec(compile(code, str(guide), "exec"), {"__name__": "__guide__"})


@pytest.mark.parametrize("option", ["steps_per_epoch", "prefetch"])
def test_sweep_does_not_take_the_stream_options(option):
    with pytest.raises(TypeError, match=f"sweep does not take `{option}`"):
        train.sweep(MODEL, PARAMS, LOSS, optim.adam, {"lr": [0.1, 0.2]}, X, Y, epochs=1,
                    **{option: 2})


def test_the_prefetch_thread_reads_at_most_depth_plus_one_items_ahead():
    import time
    from funcdl.train.prefetch import Prefetch
    pulled = []

    def items():
        for i in range(100):
            pulled.append(i)
            yield i

    with Prefetch(items(), lambda i: i * 10, depth=3) as ahead:
        assert next(ahead) == 0
        time.sleep(0.5)  # the thread fills the queue (3) and holds one more
        assert len(pulled) == 1 + 3 + 1
        assert list(ahead) == [10 * i for i in range(1, 100)]
    with Prefetch(items(), lambda i: i, depth=2) as ahead:  # leaving early stops the thread
        next(ahead)
    assert not ahead.thread.is_alive()
