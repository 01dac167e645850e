"""fit on streamed data with `accumulate`, `class_weight` and per-row weights (a stream's
`(x, y, sample_weight)` triples, Keras's way; a memory map's `sample_weight=`) against
in-memory fit of the same batches with the same options (bitwise on one CPU device) and a
hand-written loop of Keras's weighting rule and Lightning's accumulation; the NaN guard of
groups that span chunks; and the bad inputs."""
import functools
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import checkpoint, losses, metrics, nn, optim, train
from funcdl.train import chunks
from funcdl.train.lr_history import first_count
from train_reference import (assert_bitwise_equal, assert_trees_close, counting_compilations,
                             run_on_four_host_devices, with_and_without_a_bad_row)

RNG = np.random.RandomState(0)
X = RNG.randn(100, 5).astype(np.float32)
Y = (X[:, :2] ** 2).astype(np.float32)
CLASSES = ((X[:, 0] > 0).astype(np.int32) + (X[:, 1] > 0.5)).astype(np.int32)  # 0, 1, 2
SW = RNG.uniform(0, 2, size=len(X)).astype(np.float32)
CW = {0: 2.0, 2: 0.25}  # class 1 not listed: weight 1
BATCH = 16  # 6 full batches and one of 4 rows
MODEL = nn.Sequential(nn.Linear(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(2))
PARAMS = MODEL.init(jax.random.key(0), X)
CLASSIFIER = nn.Sequential(nn.Linear(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(3))
CLASSIFIER_PARAMS = CLASSIFIER.init(jax.random.key(1), X)
ADAM = optim.adam(1e-2)
KW = dict(progress=False, key=jax.random.key(3), epochs=3, validation=(X[:30], Y[:30]),
          metrics={"mae": lambda p, t: jnp.abs(p - t).mean(), "r2": metrics.r2_score()})


class Batches:
    """A re-iterable of `(x, y)` pairs, or `(x, y, w)` triples when `w` is given."""

    def __init__(self, x=X, y=Y, w=None, batch=BATCH):
        self.x, self.y, self.w, self.batch = x, y, w, batch

    def __iter__(self):
        for start in range(0, len(self.x), self.batch):
            rows = slice(start, start + self.batch)
            yield (self.x[rows], self.y[rows]) + (() if self.w is None else (self.w[rows],))


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 2 batches (16 x 7 float32 = 448 bytes; a triple's 16 x 8), so that a group
    of 3 or 4 micro-batches spans chunks."""
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 2 * 512)


def fit(data, y=None, **options):
    """The regression model, loss and optimizer (shared programs) with KW and `options`."""
    return train.fit(MODEL, PARAMS, losses.mse_loss, ADAM, data, y, **{**KW, **options})


def classify(data, y=None, **options):
    options = {**KW, "validation": (X[:30], CLASSES[:30]), "metrics": None, **options}
    return train.fit(CLASSIFIER, CLASSIFIER_PARAMS, losses.cross_entropy, ADAM, data, y,
                     **options)


def in_memory(fit_fn, rows=len(X), y=Y, **options):
    return fit_fn(X[:rows], y[:rows], batch_size=BATCH, shuffle=False, **options)


def endless_free(rows):
    """A generator function (no len): an epoch ends when it does."""
    def batches():
        yield from Batches(X[:rows], Y[:rows])
    return batches


# k = 3: groups {0,1,2} {3,4,5} {6}, over chunks [0,1] [2,3] [4,5] [6 (4 rows)];
# k = 4: {0..3} {4,5,6}: the leftover group spans the last full chunk and the short batch;
# 96 rows without a length, k = 4: {0..3} {4,5}: the leftover group ends the last full chunk,
# known to be the last only when the iterator ends
@pytest.mark.parametrize("k, rows, make", [(3, 100, Batches), (4, 100, Batches),
                                           (4, 96, endless_free)],
                         ids=["k3", "k4-leftover-with-short-batch", "k4-unknown-length"])
def test_accumulate_on_a_stream_is_in_memory_accumulation_bitwise(small_chunks, k, rows, make):
    streamed = fit(make(X[:rows], Y[:rows]) if make is Batches else make(rows), accumulate=k)
    expected = in_memory(fit, rows, accumulate=k)
    assert_bitwise_equal(streamed[:2], expected[:2])
    assert streamed[2] == expected[2]
    batches = -(-rows // BATCH)
    assert int(first_count(streamed[1])) == 3 * -(-batches // k)  # one update per group


def test_a_second_accumulated_stream_compiles_nothing(small_chunks):
    fit(Batches(), accumulate=3, epochs=1)
    with counting_compilations() as compiled:
        fit(Batches(), accumulate=3, epochs=2)
    assert compiled == []


def test_triples_weight_rows_as_sample_weight_does_in_memory(small_chunks):
    streamed = fit(Batches(w=SW))
    expected = in_memory(fit, sample_weight=SW)
    assert_bitwise_equal(streamed[:2], expected[:2])
    assert streamed[2] == expected[2]
    plain = fit(Batches())
    assert streamed[2]["loss"] != plain[2]["loss"]
    assert streamed[2]["val_loss"] != plain[2]["val_loss"]  # other params, unweighted loss
    accumulated = fit(Batches(w=SW), accumulate=3)
    expected = in_memory(fit, sample_weight=SW, accumulate=3)
    assert_bitwise_equal(accumulated[:2], expected[:2])
    assert accumulated[2] == expected[2]


def test_class_weight_with_a_stream_of_pairs_and_of_triples(small_chunks):
    streamed = classify(Batches(y=CLASSES), class_weight=CW)
    expected = in_memory(classify, y=CLASSES, class_weight=CW)
    assert_bitwise_equal(streamed[:2], expected[:2])
    assert streamed[2] == expected[2]
    both = classify(Batches(y=CLASSES, w=SW), class_weight=CW, accumulate=4)
    expected = in_memory(classify, y=CLASSES, class_weight=CW, sample_weight=SW, accumulate=4)
    assert_bitwise_equal(both[:2], expected[:2])
    assert both[2] == expected[2]


@pytest.mark.slow  # ~6 s: the slow tier (`make test-slow`, run by CI)
def test_torch_dataloader_of_three_tensors_gives_triples(small_chunks):
    torch = pytest.importorskip("torch", reason="torch is not installed (the bench extra)")
    dataset = torch.utils.data.TensorDataset(*map(torch.from_numpy, (X, Y, SW)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=False)
    streamed = fit(loader, None)
    expected = in_memory(fit, sample_weight=SW)
    assert_bitwise_equal(streamed[:2], expected[:2])
    assert streamed[2] == expected[2]


@pytest.mark.slow  # ~8 s: the slow tier (`make test-slow`, run by CI)
def test_with_steps_per_epoch_the_groups_start_again_every_epoch(small_chunks):
    """8 batches, 4 per epoch (Keras's rule: one iterator across epochs), k = 3: every epoch
    is the groups {0, 1, 2} {3} of its 4 batches, as in-memory fits of those rows, continued."""
    x, y = RNG.randn(128, 5).astype(np.float32), RNG.randn(128, 2).astype(np.float32)
    streamed = fit(Batches(x, y), steps_per_epoch=4, accumulate=3, validation=None)
    params, state, history = PARAMS, None, {}
    for epoch, rows in enumerate([slice(0, 64), slice(64, 128), slice(0, 64)]):
        params, state, part = train.fit(
            MODEL, params, losses.mse_loss, ADAM, x[rows], y[rows], batch_size=BATCH,
            shuffle=False, accumulate=3, opt_state=state, initial_epoch=epoch,
            **{**KW, "epochs": epoch + 1, "validation": None})
        history = {name: history.get(name, []) + values for name, values in part.items()}
    assert_bitwise_equal(streamed[:2], (params, state))
    assert streamed[2] == history
    assert int(first_count(state)) == 3 * 2


# ---- a hand-written loop: Keras's weighting rule and Lightning's accumulation -------------

SMALL = nn.Sequential(nn.Linear(8), nn.Tanh(), nn.Linear(2))  # no dropout: keys play no part
SMALL_PARAMS = SMALL.init(jax.random.key(1), X)


@functools.lru_cache(maxsize=None)
def _weighted_value_and_grad():
    def loss(p, xb, yb, wb):  # Σ_i w_i mean_j (pred - y)²_ij / rows
        per_row = jnp.mean((SMALL.apply(p, xb) - yb) ** 2, axis=1)
        return jnp.sum(wb * per_row) / xb.shape[0]
    return jax.jit(jax.value_and_grad(loss))


def hand_loop(opt, epochs, k, batch):
    """Micro-batches of `batch` rows in order, grouped k by k (the last group what is left),
    each group's gradients averaged weighted by rows, one update per group."""
    value_and_grad = _weighted_value_and_grad()
    params, state, history = SMALL_PARAMS, opt.init(SMALL_PARAMS), []
    starts = list(range(0, len(X), batch))
    for _ in range(epochs):
        total = 0.0
        for first in range(0, len(starts), k):
            summed, rows = jax.tree_util.tree_map(np.zeros_like, params), 0
            for start in starts[first:first + k]:
                s = slice(start, start + batch)
                value, grads = value_and_grad(params, X[s], Y[s], SW[s])
                n = len(X[s])
                summed = jax.tree_util.tree_map(lambda a, g: a + n * g, summed, grads)
                rows += n
                total += n * float(value)
            updates, state = opt.update(jax.tree_util.tree_map(lambda a: a / rows, summed),
                                        state, params)
            params = optim.apply_updates(params, updates)
        history.append(total / len(X))
    return params, state, history


def test_an_accumulated_stream_of_triples_follows_the_hand_written_loop(small_chunks):
    opt = optim.sgd(0.1, momentum=0.9)
    params, _, history = train.fit(SMALL, SMALL_PARAMS, losses.mse_loss, opt,
                                   Batches(w=SW, batch=8), None, epochs=3, accumulate=3,
                                   progress=False)  # 13 micro-batches: groups of 3, 3, 3, 3, 1
    ref_params, _, ref_history = hand_loop(opt, 3, 3, 8)
    assert_trees_close(params, ref_params)
    np.testing.assert_allclose(history["loss"], ref_history, rtol=2e-5)


# ---- memory maps ----------------------------------------------------------------------------

@pytest.fixture
def mapped(tmp_path):
    """`X`, `CLASSES` and `SW` as memory maps."""
    out = []
    for name, array in [("x", X), ("y", CLASSES), ("w", SW)]:
        np.save(tmp_path / f"{name}.npy", array)
        out.append(np.load(tmp_path / f"{name}.npy", mmap_mode="r"))
    return out


@pytest.mark.slow  # ~6 s: the slow tier (`make test-slow`, run by CI)
def test_a_memory_map_with_weights_and_accumulate_is_in_memory_fit(small_chunks, mapped):
    x_map, y_map, w_map = mapped
    options = dict(batch_size=BATCH, class_weight=CW, accumulate=3)  # shuffled: arrays' default
    streamed = classify(x_map, y_map, sample_weight=w_map, **options)
    expected = classify(X, CLASSES, sample_weight=SW, **options)
    assert_bitwise_equal(streamed[:2], expected[:2])
    # the reported loss of a batch that in-memory fit gathers inside its program (shuffled)
    # may round its last bit otherwise (test_train_stream.py)
    for name, values in expected[2].items():
        np.testing.assert_allclose(streamed[2][name], values, rtol=1e-6, atol=0)


def test_a_memory_maps_bad_sample_weight_is_refused_as_in_memory(mapped):
    x_map, y_map, _ = mapped
    for weights, match in [(SW[:10], r"one weight per row, shape \(100,\), got shape \(10,\)"),
                           (-SW, r"`sample_weight` must hold finite numbers >= 0")]:
        with counting_compilations() as compiled, pytest.raises(ValueError, match=match):
            classify(x_map, y_map, batch_size=BATCH, sample_weight=weights)
        assert compiled == []


# ---- the NaN guard: a group that spans chunks -----------------------------------------------

@pytest.mark.slow  # both guarded programs, twice: ~12 s of CPU
@pytest.mark.parametrize("bad_row", [50, 70], ids=["in-the-first-chunk", "in-the-second"])
def test_the_nan_guard_stops_an_accumulated_stream_where_in_memory_fit_stops(small_chunks,
                                                                             bad_row):
    """k = 3: the group of batches 3, 4, 5 spans chunks [2, 3] and [4, 5]; a NaN in batch 3
    (row 50: the chunk [2, 3] ends with the group open) or batch 4 (row 70) stops at step 3
    with the params of the group's start."""
    bad = X.copy()
    bad[bad_row, 0] = np.inf
    with pytest.raises(FloatingPointError) as streamed:
        fit(Batches(bad), accumulate=3, epochs=2)
    with pytest.raises(FloatingPointError) as expected:
        fit(bad, Y, batch_size=BATCH, shuffle=False, accumulate=3, epochs=2)
    assert (streamed.value.epoch, streamed.value.step) == (0, 3)
    assert (expected.value.epoch, expected.value.step) == (0, 3)
    assert_bitwise_equal((streamed.value.params, streamed.value.opt_state),
                         (expected.value.params, expected.value.opt_state))


@pytest.mark.slow  # 4 fits and both guarded programs: ~10 s of CPU
def test_an_accumulated_memory_map_resumes_a_nan_stop_at_its_groups_start(tmp_path,
                                                                          small_chunks):
    """Shuffled, k = 3: the stop is at the first micro-batch of the non-finite group, the
    checkpoint holds that step, and a resume from it is in-memory fit's, bitwise."""
    runs = []
    for name, bad_x, good_x in with_and_without_a_bad_row(tmp_path, X):
        path = tmp_path / f"{name}.safetensors"
        options = dict(epochs=2, batch_size=BATCH, accumulate=3, checkpoint=path)
        with pytest.raises(FloatingPointError) as stop:
            fit(bad_x, Y, **options)
        assert stop.value.step % 3 == 0 and stop.value.step > 0  # a group's first
        assert checkpoint.metadata(path)["step"] == str(stop.value.step)
        runs.append((stop.value.params, fit(good_x, Y, resume=True, **options)))
    assert_bitwise_equal(runs[0][0], runs[1][0])
    assert_bitwise_equal(runs[0][1][:2], runs[1][1][:2])


# ---- bad inputs -----------------------------------------------------------------------------

def _no_reduction(pred, target):
    return jnp.mean((pred - target) ** 2)


@pytest.mark.parametrize("data, options, error, match", [
    (Batches(), dict(sample_weight=SW), ValueError,
     r"`sample_weight=` with streamed `data`.*yield `\(x_batch, y_batch, sample_weight\)` "
     r"triples"),
    (Batches(w=np.stack([SW, SW], axis=1)), {}, ValueError,
     r"`data` \(its first batch\): `sample_weight` must have one weight per row, shape "
     r"\(16,\), got shape \(16, 2\)"),
    (Batches(w=-SW), {}, ValueError,
     r"`data` \(its first batch\): `sample_weight` must hold finite numbers >= 0, got "
     r"sample_weight\[0\]"),
    ([(X[:16], Y[:16], ["a"] * 16)], {}, TypeError,
     r"`data` \(its first batch\): `sample_weight` must be an array of real numbers"),
    (Batches(), dict(class_weight=CW), TypeError,
     r"`data` \(its first batch\): `class_weight` needs integer class targets"),
    (Batches(y=CLASSES), dict(class_weight={0: -1.0}), ValueError,
     r"class_weight\[0\] = -1.0"),
    (Batches(y=CLASSES), dict(class_weight=[1.0]), TypeError, r"`class_weight` must be a dict"),
    (Batches(w=SW), dict(loss=_no_reduction), TypeError,
     r"need a `loss_fn` that takes `reduction=`"),
    ([(X[:16],) * 4], {}, TypeError,
     r"`data` must yield pairs \(x_batch, y_batch\) or triples \(x_batch, y_batch, "
     r"sample_weight\), got its first batch a tuple of length 4"),
], ids=["sample_weight=", "weight-shape", "negative", "not-numbers", "class-float-targets",
        "class-negative", "class-not-a-dict", "no-reduction", "four"])
def test_bad_stream_weights_are_refused_before_anything_compiles(data, options, error, match):
    loss = options.pop("loss", losses.mse_loss)
    with counting_compilations() as compiled, pytest.raises(error, match=match):
        train.fit(MODEL, PARAMS, loss, ADAM, data, None, epochs=1, progress=False, **options)
    assert compiled == []


def test_a_later_batch_with_bad_weights_or_of_another_kind_is_named(small_chunks):
    weights = SW.copy()
    weights[50] = -1.0  # batch 3, row 2
    with pytest.raises(ValueError, match=r"`data` \(batch 3 of epoch 0\): `sample_weight` must "
                                         r"hold finite numbers >= 0, got sample_weight\[2\] = "
                                         r"-1.0"):
        fit(Batches(w=weights), epochs=1)
    mixed = [(X[:16], Y[:16], SW[:16]), (X[16:32], Y[16:32])]
    with pytest.raises(ValueError, match=r"`data`: batch 1 of epoch 0 is a pair \(x_batch, "
                                         r"y_batch\), but the first batch is a triple"):
        fit(mixed, epochs=1)


MESH_SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    from jax.sharding import Mesh
    from funcdl import nn, losses, optim, train
    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.RandomState(0)
    x = rng.randn(104, 5).astype(np.float32); y = (x[:, :2] ** 2).astype(np.float32)
    w = rng.uniform(0, 2, size=104).astype(np.float32)
    np.save(PATH, x)
    model = nn.Sequential(nn.Linear(16), nn.ReLU(), nn.Linear(2))
    params = model.init(jax.random.key(0), x)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    kw = dict(epochs=2, progress=False, accumulate=3, validation=(x[:30], y[:30]))
    triples = [(x[s:s + 16], y[s:s + 16], w[s:s + 16]) for s in range(0, 104, 16)]
    one = train.fit(model, params, losses.mse_loss, optim.adam(1e-2), x, y, batch_size=16,
                    shuffle=False, sample_weight=w, **kw)
    four = train.fit(model, params, losses.mse_loss, optim.adam(1e-2), triples, None,
                     mesh=mesh, **kw)
    close = lambda a, b: np.testing.assert_allclose(a, b, 1e-5, 1e-6)
    jax.tree_util.tree_map(close, one[:2], four[:2])
    np.testing.assert_allclose(one[2]["loss"], four[2]["loss"], 1e-5)
    shuffled = dict(kw, batch_size=16, sample_weight=w)
    one = train.fit(model, params, losses.mse_loss, optim.adam(1e-2), x, y, **shuffled)
    four = train.fit(model, params, losses.mse_loss, optim.adam(1e-2),
                     np.load(PATH, mmap_mode="r"), y, mesh=mesh, **shuffled)
    jax.tree_util.tree_map(close, one[:2], four[:2])
    np.testing.assert_allclose(one[2]["loss"], four[2]["loss"], 1e-5)
    print("MESH OK")
''')


@pytest.mark.slow  # a fresh jax process on 4 forced host devices: ~15 s of CPU
def test_weighted_accumulated_streams_on_a_four_device_mesh(tmp_path):
    run_on_four_host_devices(MESH_SCRIPT, tmp_path / "x.npy")
