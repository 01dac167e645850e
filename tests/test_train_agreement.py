"""`fdl.train.agreement` in one process: what is hashed, and which processes are grouped, on
digests stacked as `process_allgather` returns them. (Two real processes: test_distributed.py.)"""
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from funcdl.train import agreement

PARAMS = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)}


def arguments(key=jax.random.PRNGKey(1), batch_size=16, params=PARAMS):
    return {"key": key, "epochs": 6, "batch_size": batch_size,
            "params": agreement.structure(params)}


def gathered(*per_process):
    return np.stack([agreement.digests(arguments(**changes)) for changes in per_process])


def test_digests_are_sha256_of_the_canonical_form():
    key = np.asarray(jax.random.PRNGKey(1))
    expected = hashlib.sha256(repr(((2,), "<u4")).encode() + key.tobytes()).digest()
    digests = agreement.digests(arguments())
    assert digests.shape == (4, 32) and digests.dtype == np.uint8
    assert digests[0].tobytes() == expected
    assert digests[2].tobytes() == hashlib.sha256(b"16").digest()


def test_equal_arguments_agree_whatever_the_key_type_or_the_params_values():
    same = gathered({}, dict(key=jax.random.wrap_key_data(jax.random.PRNGKey(1))),
                    dict(params={"w": np.ones((3, 2), np.float32), "b": jnp.ones(2)}))
    assert agreement.disagreements(arguments(), same) == []


def test_each_differing_argument_is_named_with_its_groups_of_processes():
    found = agreement.disagreements(arguments(), gathered(
        {}, dict(key=jax.random.PRNGKey(2)), {}, dict(batch_size=None)))
    assert found == [("key", [[0, 2, 3], [1]]), ("batch_size", [[0, 1, 2], [3]])]
    for params in ({"w": PARAMS["w"], "b": np.zeros(2, np.float64)},   # a dtype
                   {"w": PARAMS["w"], "b": np.zeros(3, np.float32)},   # a shape
                   {"w": PARAMS["w"], "c": PARAMS["b"]}):               # the structure
        found = agreement.disagreements(arguments(), gathered({}, dict(params=params)))
        assert found == [("params", [[0], [1]])]


def test_one_process_compares_nothing():
    agreement.check_processes({"key": object()})  # nothing hashed: no collective, no error
