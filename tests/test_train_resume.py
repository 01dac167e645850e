"""fit's checkpoints: a run stopped after 3 epochs and resumed to 6 equals an uninterrupted
6-epoch run bitwise (one CPU device), with shuffling, both backends and several optimizers;
a NaN stop leaves the last finite state in the file."""
import jax
import numpy as np
import pytest

from funcdl import checkpoint, optim, train
from train_reference import ADAM, BATCH, LOSS, MODEL, PARAMS, X, Y, assert_bitwise_equal


SLOW = pytest.mark.slow  # one more compiled epoch program each: ~2-4 s on 2 busy cores


@pytest.mark.parametrize("backend, opt", [
    ("jax", ADAM), ("funcdl", ADAM),
    pytest.param("jax", optim.sgd(0.05, momentum=0.9, nesterov=True), marks=SLOW),
    pytest.param("jax", optim.rmsprop(1e-2, momentum=0.5), marks=SLOW),
    pytest.param("jax", optim.adamw(1e-2, amsgrad=True), marks=SLOW),
    pytest.param("jax", optim.chain(optim.clip_by_global_norm(1.0), optim.adagrad(0.1)),
                 marks=SLOW),
], ids=["adam-jax", "adam-funcdl", "sgd-nesterov", "rmsprop", "adamw-amsgrad", "clip-adagrad"])
def test_resume_after_3_of_6_epochs_is_bitwise_the_uninterrupted_run(tmp_path, backend, opt):
    kwargs = dict(batch_size=BATCH, key=jax.random.key(11), grad_backend=backend,
                  progress=False)
    path = tmp_path / "run.safetensors"
    full = train.fit(MODEL, PARAMS, LOSS, opt, X, Y, epochs=6, **kwargs)
    train.fit(MODEL, PARAMS, LOSS, opt, X, Y, epochs=3, checkpoint=path, **kwargs)
    assert checkpoint.metadata(path)["epochs_done"] == "3"
    resumed = train.fit(MODEL, PARAMS, LOSS, opt, X, Y, epochs=6, checkpoint=path, resume=True,
                        **kwargs)
    assert_bitwise_equal(resumed[:2], full[:2])
    assert resumed[2] == full[2]
    assert checkpoint.metadata(path)["epochs_done"] == "6"


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_full_batch_checkpoints_every_n_epochs_and_resumes_bitwise(tmp_path):
    path = tmp_path / "full.safetensors"
    full = train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=10, progress=False)
    first = train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=7, checkpoint=path,
                      checkpoint_every=4, progress=False)
    assert checkpoint.metadata(path)["epochs_done"] == "7"  # after epochs 4 and 7 (the last)
    stored = checkpoint.load(path)
    np.testing.assert_array_equal(stored["['history']['loss']"], np.float32(first[2]["loss"]))
    resumed = train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=10, checkpoint=path,
                        checkpoint_every=4, resume=True, progress=False)
    assert_bitwise_equal(resumed[:2], full[:2])
    assert resumed[2] == full[2]
    # a finished run resumes to its end at once
    again = train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=10, checkpoint=path, resume=True,
                      progress=False)
    assert_bitwise_equal(again[:2], full[:2])


def test_a_nan_stop_leaves_the_last_finite_state_in_the_file(tmp_path):
    path = tmp_path / "nan.safetensors"
    x = X.copy()
    x[40, 0] = np.nan  # batch 2 of every epoch, without shuffling
    with pytest.raises(FloatingPointError) as caught:
        train.fit(MODEL, PARAMS, LOSS, ADAM, x, Y, epochs=3, batch_size=BATCH, shuffle=False,
                  checkpoint=path, progress=False)
    stored = checkpoint.load(path)
    assert checkpoint.metadata(path)["epochs_done"] == "0"
    np.testing.assert_array_equal(stored["['params'][0]['w']"],
                                  np.asarray(caught.value.params[0]["w"]))
    assert int(stored["['opt_state'][1].count"]) == 2


def test_a_file_not_written_by_fit_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    checkpoint.save(path, {"w": np.zeros(2, np.float32)}, metadata={"epoch": "1"})
    with pytest.raises(ValueError, match=r"was not written by fdl.train.fit"):
        train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=2, checkpoint=path, resume=True,
                  progress=False)
