"""What `fit(..., resume=True)` checks against its checkpoint, and what the file holds.

A file written with another number of rows, batch size, shuffle setting, validation size or
key is refused with every difference named (the file's value and the call's), before
training; `epochs` before the file's position is refused; files of the earlier layout (no
`step`, no `run`) resume unchecked; the NaN stop's step and a partial epoch's totals round-trip
bitwise; and a file written with x64 on resumes with it off and the other way round (the
reference: `fit` continued from the writing run's returned state with `initial_epoch`)."""
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import checkpoint, metrics, optim, train
from funcdl.train import resume
from train_reference import ADAM, BATCH, LOSS, MODEL, PARAMS, X, Y

KEY = jax.random.key(11)
X_VAL, Y_VAL = X[:10], Y[:10]
BASE = dict(batch_size=BATCH, shuffle=True, key=KEY, validation=(X_VAL, Y_VAL))


def assert_bitwise_equal(actual, expected):
    jax.tree_util.tree_map(
        lambda a, e: np.testing.assert_array_equal(np.asarray(a), np.asarray(e)),
        actual, expected)
    assert jax.tree_util.tree_map(lambda a: np.asarray(a).dtype, actual) == \
        jax.tree_util.tree_map(lambda e: np.asarray(e).dtype, expected)


def fit(epochs, x=X, y=Y, opt=ADAM, **options):
    return train.fit(MODEL, PARAMS, LOSS, opt, x, y, epochs=epochs, progress=False,
                     **{**BASE, **options})


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A checkpoint after 2 of 4 epochs of the BASE run: `(path, bytes of the file, result)`."""
    path = tmp_path_factory.mktemp("checks") / "run.safetensors"
    result = fit(2, checkpoint=path)
    return path, path.read_bytes(), result


# ---- each difference named -------------------------------------------------------------------
@pytest.mark.parametrize("change, named", [
    (dict(x=X[:40], y=Y[:40]), r"`x` \(its number of rows\): the file's 50, this call's 40"),
    (dict(batch_size=8), r"`batch_size`: the file's 16, this call's 8"),
    (dict(batch_size=None), r"`batch_size`: the file's 16, this call's None \(full batch\)"),
    (dict(shuffle=False), r"`shuffle`: the file's True, this call's False"),
    (dict(validation=(X[:8], Y[:8])), r"`validation` \(its number of rows\): the file's 10, "
                                      r"this call's 8"),
    (dict(key=jax.random.key(12)), r"`key` \(its key data\): the file's \[0, 11\], this call's "
                                   r"\[0, 12\]"),
    (dict(accumulate=2), r"`accumulate`: the file's 1, this call's 2"),
], ids=["rows", "batch_size", "full_batch", "shuffle", "validation", "key", "accumulate"])
def test_resume_with_another_setting_is_a_value_error_naming_it(two_epochs, change, named):
    path, written, _ = two_epochs
    with pytest.raises(ValueError, match=r"`resume=True`: `checkpoint` .*run\.safetensors.* "
                                         r"other settings.*" + named):
        fit(4, checkpoint=path, resume=True, **change)
    assert path.read_bytes() == written  # refused before training: the file is untouched


def test_every_difference_is_named_in_one_message(two_epochs):
    path, _, _ = two_epochs
    with pytest.raises(ValueError) as caught:
        fit(4, checkpoint=path, resume=True, batch_size=8, key=jax.random.key(3), shuffle=False)
    message = str(caught.value)
    for part in ("`batch_size`: the file's 16, this call's 8", "`shuffle`: the file's True",
                 "`key` (its key data): the file's [0, 11], this call's [0, 3]"):
        assert part in message, message
    assert "`x`" not in message and "`validation`" not in message


def test_a_new_learning_rate_and_a_raw_key_of_the_same_data_resume(two_epochs, tmp_path):
    """Fine-tuning: adam(1e-3) over the adam(1e-2) file equals fit continued from the
    2-epoch run's returned state with `initial_epoch=2`; `jax.random.PRNGKey(11)` has the key
    data of `jax.random.key(11)`."""
    path, written, (params, opt_state, history) = two_epochs
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(written)
    slower = optim.adam(1e-3)
    resumed = fit(4, opt=slower, checkpoint=copy, resume=True, key=jax.random.PRNGKey(11))
    continued = train.fit(MODEL, params, LOSS, slower, X, Y, epochs=4, opt_state=opt_state,
                          initial_epoch=2, progress=False, **BASE)
    assert_bitwise_equal(resumed[:2], continued[:2])
    assert resumed[2] == {name: history[name] + continued[2][name] for name in history}


def test_full_batch_runs_compare_the_batch_and_shuffle_as_they_act(tmp_path):
    """`batch_size=None` and `batch_size >= rows` are both a full batch, never shuffled."""
    path = tmp_path / "full.safetensors"
    fit(2, checkpoint=path, batch_size=None, shuffle=True)
    fit(3, checkpoint=path, resume=True, batch_size=len(X) + 5, shuffle=False)
    assert checkpoint.metadata(path)["epochs_done"] == "3"


# ---- epochs and the position ------------------------------------------------------------------
def test_epochs_before_the_files_position_is_a_value_error(two_epochs):
    path, written, _ = two_epochs
    with pytest.raises(ValueError, match=r"`epochs` \(the epoch to stop at\) must not be before "
                                         r"the position of `checkpoint` .* \(2 epochs done\), "
                                         r"got epochs=1"):
        fit(1, checkpoint=path, resume=True)
    params, _, history = fit(2, checkpoint=path, resume=True)  # at the position: nothing to do
    assert_bitwise_equal(params, two_epochs[2][0])
    assert path.read_bytes() == written


def test_a_nan_stop_records_its_step(tmp_path):
    path = tmp_path / "nan.safetensors"
    x = X.copy()
    x[40, 0] = np.nan  # rows 32..47 are step 2 of every epoch without shuffling
    with pytest.raises(FloatingPointError) as caught:
        fit(3, x=x, shuffle=False, checkpoint=path)
    meta = checkpoint.metadata(path)
    assert (meta["epochs_done"], meta["step"]) == ("0", "2") == ("0", str(caught.value.step))
    with pytest.raises(ValueError, match=r"\(0 epochs done and step 2 of the next\), got epochs=0"):
        fit(0, x=x, shuffle=False, checkpoint=path, resume=True)


# ---- files of the earlier layout, damaged metadata --------------------------------------------
def old_layout_file(path, result, key=KEY):
    """What fit wrote before `step`, `run` and `"lr"`: float32 history, two metadata entries."""
    params, opt_state, history = result
    checkpoint.save(path, {"params": params, "opt_state": opt_state,
                           "key": jax.random.key_data(key),
                           "history": {k: np.asarray(v, np.float32) for k, v in history.items()
                                       if k != "lr"}},
                    metadata={"funcdl": "fit", "epochs_done": "2"})


def test_other_metrics_or_validation_than_the_files_are_a_value_error_naming_both(two_epochs):
    """(Without validation, the number of validation rows differs first: named as a setting.)"""
    path, written, _ = two_epochs
    with pytest.raises(ValueError, match=r"`resume=True`: `checkpoint` .*run\.safetensors.* "
                                         r"holds the history of \['loss', 'val_loss'\], this "
                                         r"call records \['loss', 'mae', 'val_loss', "
                                         r"'val_mae'\]: its `metrics` and `validation`"):
        fit(4, checkpoint=path, resume=True, metrics={"mae": metrics.mean_absolute_error()})
    assert path.read_bytes() == written


def test_a_file_without_accumulate_in_its_settings_resumes(two_epochs, tmp_path):
    """Files written before `accumulate` was recorded: the other settings are still checked."""
    path = tmp_path / "before.safetensors"
    params, opt_state, history = two_epochs[2]
    run = resume.run_settings(len(X), BATCH, True, len(X_VAL), KEY)
    del run["accumulate"]
    checkpoint.save(path, {"params": params, "opt_state": opt_state,
                           "key": jax.random.key_data(KEY),
                           "history": {k: np.asarray(v) for k, v in history.items()}},
                    metadata={"funcdl": "fit", "epochs_done": "2", "step": "0",
                              "run": json.dumps(run)})
    assert_bitwise_equal(fit(4, checkpoint=path, resume=True)[:2], fit(4)[:2])
    with pytest.raises(ValueError, match=r"`batch_size`: the file's 16, this call's 8"):
        fit(4, checkpoint=path, resume=True, batch_size=8)


def test_a_file_of_the_earlier_layout_resumes_without_the_checks(two_epochs, tmp_path):
    path = tmp_path / "old.safetensors"
    old_layout_file(path, two_epochs[2])
    full = fit(4)
    resumed = fit(4, checkpoint=path, resume=True)
    assert_bitwise_equal(resumed[:2], full[:2])
    # the file has no "lr": NaN for its 2 epochs, then this call's values
    assert {**resumed[2], "lr": None} == {**full[2], "lr": None}
    np.testing.assert_array_equal(resumed[2]["lr"], [np.nan] * 2 + full[2]["lr"][2:])
    old_layout_file(path, two_epochs[2])
    fit(3, checkpoint=path, resume=True, key=jax.random.key(5))  # nothing recorded to compare


@pytest.mark.parametrize("metadata, named", [
    ({"step": "two"}, r"step 'two' is not an int >= 0"),
    ({"step": "-1"}, r"step '-1' is not an int >= 0"),
    ({"epochs_done": "2.5"}, r"epochs_done '2.5' is not an int >= 0"),
    ({"run": "{not json"}, r"run '\{not json' is not a JSON object of rows, batch_size"),
    ({"run": '{"rows": 50}'}, r"run .* is not a JSON object of"),
    ({"step": "4"}, r"step 4 of an epoch of 4 steps"),
], ids=["step-text", "step-negative", "epochs-float", "run-not-json", "run-fields", "step-range"])
def test_damaged_metadata_is_a_value_error_naming_the_path(two_epochs, tmp_path, metadata,
                                                            named):
    path = tmp_path / "damaged.safetensors"
    stored = resume.run_settings(len(X), BATCH, True, len(X_VAL), KEY)
    good = {"funcdl": "fit", "epochs_done": "2", "step": "0",
            "run": '{"accumulate": 1, "batch_size": 16, "key": [0, 11], "rows": 50, '
                   '"shuffle": true, "validation_rows": 10}'}
    assert json.loads(good["run"]) == stored  # what fit writes, but for the damaged entry
    params, opt_state, history = two_epochs[2]
    checkpoint.save(path, {"params": params, "opt_state": opt_state,
                           "key": jax.random.key_data(KEY),
                           "history": {k: np.asarray(v) for k, v in history.items()}},
                    metadata={**good, **metadata})
    with pytest.raises(ValueError, match=re.escape(repr(str(path))) + r" has damaged metadata: "
                                         + named):
        fit(4, checkpoint=path, resume=True)


# ---- step and totals round-trip ---------------------------------------------------------------
TOTALS = {"sums": np.array([1 / 3, 2e-38, -7.25], np.float32),
          "metric": (np.array([[0.1, 3.0]], jnp.bfloat16), np.int32(41)),
          "count": np.array(2**40 + 3, np.int64)}


def save_and_load(path, totals, totals_like, step=3):
    params, opt_state = {"w": np.float32([[0.5, -1.0]])}, (np.int32(7),)
    history = {"loss": [0.1, 1 / 3], "val_loss": [2.0, 1e-300]}
    run = resume.run_settings(50, 16, True, 10, KEY)
    resume.save_state(path, params, opt_state, history, 2, KEY, step=step, totals=totals,
                      run=run)
    return resume.load_state(path, params, opt_state, list(history), KEY,
                             totals_like=totals_like, run=run, epochs=3), history


def test_step_and_totals_round_trip_bitwise(tmp_path):
    loaded, history = save_and_load(tmp_path / "s.safetensors", TOTALS, TOTALS)
    assert isinstance(loaded, resume.Resumed)
    assert (loaded.epochs_done, loaded.step) == (2, 3)
    assert loaded.history == history
    assert_bitwise_equal(loaded.totals, TOTALS)
    assert_bitwise_equal(loaded.params, {"w": np.float32([[0.5, -1.0]])})
    assert_bitwise_equal(jax.random.key_data(loaded.key), jax.random.key_data(KEY))
    stored = checkpoint.load(tmp_path / "s.safetensors")
    assert stored["['totals']['metric'][0]"].dtype == jnp.bfloat16
    assert checkpoint.metadata(tmp_path / "s.safetensors")["step"] == "3"


def test_totals_are_read_only_when_asked_for_and_present(tmp_path):
    loaded, _ = save_and_load(tmp_path / "a.safetensors", TOTALS, None)
    assert loaded.totals is None and loaded.step == 3
    loaded, _ = save_and_load(tmp_path / "b.safetensors", None, TOTALS, step=0)
    assert loaded.totals is None and loaded.step == 0
    other = {**TOTALS, "sums": np.zeros(4, np.float32)}
    with pytest.raises(ValueError, match=r"differs from `like` at leaf \['totals'\]\['sums'\]: "
                                         r"expected shape \(4,\) float32, found shape \(3,\)"):
        save_and_load(tmp_path / "c.safetensors", TOTALS, other)


# ---- x64 on when written, off when resumed, and the other way round ---------------------------
@pytest.fixture(scope="module")
def written_with_x64(tmp_path_factory):
    """fit's 2 epochs and its checkpoint with 64-bit types on; and a file of int64/float64
    leaves from `save_state`."""
    folder = tmp_path_factory.mktemp("x64")
    with jax.enable_x64(True):
        result = fit(2, checkpoint=folder / "fit.safetensors")
        jax.tree_util.tree_map(lambda a: a.block_until_ready(), result[:2])
        resume.save_state(folder / "ints.safetensors", {"w": np.float32([1.5])},
                          {"count": jnp.zeros((), int) + 7}, {"loss": [0.1]}, 1, KEY,
                          totals={"sum": jnp.asarray(0.1)})
        resume.save_state(folder / "big.safetensors", {"w": np.float32([1.5])},
                          {"count": jnp.zeros((), int) + 2**40}, {"loss": [0.1]}, 1, KEY)
        resume.save_state(folder / "f64.safetensors", {"w": jnp.ones(1)}, {}, {}, 1, KEY)
    return folder, result


@pytest.fixture(scope="module")
def written_without_x64(tmp_path_factory):
    folder = tmp_path_factory.mktemp("x32")
    result = fit(2, checkpoint=folder / "fit.safetensors")
    resume.save_state(folder / "ints.safetensors", {"w": np.float32([1.5])},
                      {"count": jnp.zeros((), int) + 7}, {"loss": [0.1]}, 1, KEY,
                      totals={"sum": jnp.asarray(0.1)})
    return folder, result


def resumed_equals_the_continuation(path, result):
    params, opt_state, history = result
    resumed = fit(3, checkpoint=path, resume=True)
    continued = train.fit(MODEL, params, LOSS, ADAM, X, Y, epochs=3, opt_state=opt_state,
                          initial_epoch=2, progress=False, **BASE)
    assert_bitwise_equal(resumed[:2], continued[:2])
    assert resumed[2] == {name: history[name] + continued[2][name] for name in history}


def test_a_checkpoint_written_with_x64_resumes_without_it(written_with_x64):
    folder, result = written_with_x64
    assert checkpoint.load(folder / "fit.safetensors")["['history']['loss']"].dtype == np.float64
    resumed_equals_the_continuation(folder / "fit.safetensors", result)
    assert not jax.config.jax_enable_x64
    loaded = resume.load_state(folder / "ints.safetensors", {"w": np.float32([0])},
                               {"count": jnp.zeros((), int)}, ["loss"], KEY,
                               totals_like={"sum": jnp.zeros(())})
    assert loaded.opt_state["count"].dtype == np.int32 and int(loaded.opt_state["count"]) == 7
    assert loaded.totals["sum"].dtype == np.float32 and loaded.totals["sum"] == np.float32(0.1)
    assert loaded.history == {"loss": [0.1]}


def test_an_int64_out_of_int32_range_or_a_float64_param_is_refused(written_with_x64):
    folder, _ = written_with_x64
    with pytest.raises(ValueError, match=r"leaf \['opt_state'\]\['count'\] holds int64 values in "
                                         r"\[1099511627776, 1099511627776\], outside .* int32"):
        resume.load_state(folder / "big.safetensors", {"w": np.float32([0])},
                          {"count": jnp.zeros((), int)}, ["loss"], KEY)
    with pytest.raises(ValueError, match=r"differs from `like` at leaf \['params'\]\['w'\]: "
                                         r"expected shape \(1,\) float32, found shape \(1,\) "
                                         r"float64"):
        resume.load_state(folder / "f64.safetensors", {"w": jnp.ones(1)}, {}, [], KEY)


def test_a_checkpoint_written_without_x64_resumes_with_it(written_without_x64, x64):
    folder, result = written_without_x64
    resumed_equals_the_continuation(folder / "fit.safetensors", result)
    loaded = resume.load_state(folder / "ints.safetensors", {"w": np.float32([0])},
                               {"count": jnp.zeros((), int)}, ["loss"], KEY,
                               totals_like={"sum": jnp.zeros(())})
    assert loaded.opt_state["count"].dtype == np.int64 and int(loaded.opt_state["count"]) == 7
    assert loaded.totals["sum"].dtype == np.float64
    assert loaded.totals["sum"] == np.float64(np.float32(0.1))
