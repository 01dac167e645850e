"""Tests for `funcdl/checkpoint.py`: round trips, structure checks, broken files, atomic writes.

The independent reference for the file format is `safetensors.numpy.load_file` (and
`safe_open(...).metadata()`): what `save` writes must read back there, key for key. Values are
compared bit for bit (`view` as unsigned integers), so NaN payloads, -0.0 and every bfloat16
pattern count.
"""
import importlib.util
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors
import safetensors.numpy
from hypothesis import given, settings, strategies as st

from funcdl import checkpoint, optim

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "checkpoint_worker.py"
BF16 = np.dtype(jnp.bfloat16)


def same_bits(a, b):
    """Same dtype, shape and bytes (NaN == NaN, -0.0 != 0.0)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_same_tree(loaded, expected):
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(expected)
    for got, want in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(expected)):
        assert isinstance(got, np.ndarray)
        assert same_bits(got, np.asarray(want))


def round_trip(tmp_path, tree, **kwargs):
    path = tmp_path / "ckpt.safetensors"
    checkpoint.save(path, tree, **kwargs)
    loaded = checkpoint.load(path, like=tree)
    assert_same_tree(loaded, tree)
    # the reference reader sees one tensor per leaf, under its keystr path
    reference = safetensors.numpy.load_file(path)
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    assert sorted(reference) == sorted(jax.tree_util.keystr(k) for k, _ in flat)
    for key_path, leaf in flat:
        assert same_bits(reference[jax.tree_util.keystr(key_path)], np.asarray(leaf))
    return path, loaded


# ---- round trips -------------------------------------------------------------------------------
OPTIMIZERS = {
    "sgd": lambda: optim.sgd(0.1),
    "sgd_nesterov_wd": lambda: optim.sgd(0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "momentum": lambda: optim.momentum(0.1),
    "adagrad": lambda: optim.adagrad(0.1, lr_decay=0.01),
    "rmsprop_centered": lambda: optim.rmsprop(0.01, momentum=0.9, centered=True),
    "adam_amsgrad": lambda: optim.adam(1e-2, amsgrad=True),
    "adamw_cosine": lambda: optim.adamw(optim.schedules.cosine_decay(1e-2, 10)),
    "clip_then_adam": lambda: optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-2)),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_state_round_trips_and_resumes_bitwise(tmp_path, name):
    opt = OPTIMIZERS[name]()
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32), "b": jnp.zeros(2),
              "layers": [jnp.ones(())]}
    state = opt.init(params)
    for _ in range(3):
        grads = jax.tree_util.tree_map(
            lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
        updates, state = opt.update(grads, state, params)
        params = optim.apply_updates(params, updates)
    tree = {"params": params, "opt_state": state, "epoch": 3, "key": np.array([0, 42], np.uint32)}
    path, loaded = round_trip(tmp_path, tree)
    # continuing from the loaded state is continuing from the saved one, bit for bit
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    want = opt.update(grads, state, params)
    got = opt.update(grads, jax.tree_util.tree_map(jnp.asarray, loaded["opt_state"]),
                     jax.tree_util.tree_map(jnp.asarray, loaded["params"]))
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert same_bits(a, b)


def test_every_bfloat16_bit_pattern_and_special_floats_round_trip(tmp_path):
    all_bf16 = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(BF16)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -3.4e38], np.float32)
    tree = {"bf16": all_bf16, "f32": specials, "jax_bf16": jnp.asarray(all_bf16[:100])}
    round_trip(tmp_path, tree)


def test_scalars_become_0d_arrays_with_numpy_default_dtypes(tmp_path):
    tree = {"int": 3, "float": 0.5, "bool": True, "np_int32": np.int32(-7),
            "np_f16": np.float16(1.5), "jax_0d": jnp.asarray(2.0, jnp.bfloat16)}
    checkpoint.save(tmp_path / "s.safetensors", tree)
    loaded = checkpoint.load(tmp_path / "s.safetensors", like=tree)
    want = {"int": np.int64(3), "float": np.float64(0.5), "bool": np.bool_(True),
            "np_int32": np.int32(-7), "np_f16": np.float16(1.5), "jax_0d": np.asarray(2.0, BF16)}
    for name, value in want.items():
        assert loaded[name].shape == () and same_bits(loaded[name], value), name


def test_empty_trees_and_leafless_nodes(tmp_path):
    for tree in ({}, [], optim.EmptyState(), {"a": None, "b": (), "c": {}}):
        round_trip(tmp_path, tree)
        assert checkpoint.load(tmp_path / "ckpt.safetensors") == {}
    checkpoint.save(tmp_path / "none.safetensors", None)  # (`like=None` means "no like")
    assert checkpoint.load(tmp_path / "none.safetensors") == {}


def test_without_like_returns_the_flat_dict_and_metadata_round_trips(tmp_path):
    tree = {"a": [np.ones(2, np.int8), np.zeros((0, 3), np.float32)], "b": np.uint64(2**63)}
    path, _ = round_trip(tmp_path, tree, metadata={"epoch": "4", "note": "é ✓", "": ""})
    flat = checkpoint.load(path)
    assert sorted(flat) == ["['a'][0]", "['a'][1]", "['b']"]
    assert same_bits(flat["['b']"], np.uint64(2**63)) and flat["['a'][1]"].shape == (0, 3)
    assert checkpoint.metadata(path) == {"epoch": "4", "note": "é ✓", "": ""}
    with safetensors.safe_open(path, framework="np") as file:
        assert file.metadata() == {"epoch": "4", "note": "é ✓", "": ""}
    checkpoint.save(path, tree)
    assert checkpoint.metadata(path) == {}


def test_loaded_arrays_are_copies_unaffected_by_a_later_save(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(str(path), {"w": np.zeros(1000)})
    first = checkpoint.load(path, like={"w": jax.ShapeDtypeStruct((1000,), np.float64)})
    checkpoint.save(path, {"w": np.ones(1000)})
    assert not first["w"].any() and checkpoint.load(path)["['w']"].all()


def arrays_of(dtype):
    """Arrays of any shape (0-d, size 0 and size 1 axes included) and any bit pattern."""
    shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)
    if dtype == BF16:  # hypothesis knows no bfloat16: draw its bits as uint16
        return hnp.arrays(np.uint16, shapes).map(lambda bits: bits.view(BF16))
    return hnp.arrays(dtype, shapes)


leaf_arrays = st.sampled_from(list(checkpoint.SUPPORTED_DTYPES)).flatmap(arrays_of)
trees = st.recursive(leaf_arrays, lambda children: st.one_of(
    st.lists(children, max_size=3), st.tuples(children, children),
    st.dictionaries(st.text(max_size=4), children, max_size=3)), max_leaves=8)


@settings(max_examples=40, deadline=None)
@given(tree=trees)
def test_random_nested_trees_round_trip_bitwise(tree):
    with tempfile.TemporaryDirectory() as folder:
        round_trip(pathlib.Path(folder), tree)


# ---- structure mismatches ----------------------------------------------------------------------
LIKE = {"params": {"b": np.zeros(2, np.float32), "w": np.zeros((3, 2), np.float32)}, "step": 0}


@pytest.mark.parametrize("like, message", [
    ({**LIKE, "params": {**LIKE["params"], "v": np.zeros(1)}},
     r"has no leaf \['params'\]\['v'\]: `like` expects shape \(1,\) float64"),
    ({"params": {"b": LIKE["params"]["b"]}, "step": 0},
     r"has a leaf \['params'\]\['w'\] \(shape \(3, 2\) float32\) that `like` does not have"),
    ({**LIKE, "params": {**LIKE["params"], "w": np.zeros((2, 3), np.float32)}},
     r"at leaf \['params'\]\['w'\]: expected shape \(2, 3\) float32, found shape \(3, 2\) float32"),
    ({**LIKE, "step": np.int32(0)}, r"at leaf \['step'\]: expected shape \(\) int32, found shape \(\) int64"),
    # two differences: the first in `like`'s order is named
    ({"params": {"b": np.zeros(3, BF16), "w": np.zeros(1)}, "step": 0},
     r"at leaf \['params'\]\['b'\]: expected shape \(3,\) bfloat16, found shape \(2,\) float32"),
    ({"params": [LIKE["params"]["b"], LIKE["params"]["w"]], "step": 0}, r"has no leaf \['params'\]\[0\]"),
])
def test_mismatch_names_the_first_differing_leaf(tmp_path, like, message):
    path = tmp_path / "m.safetensors"
    checkpoint.save(path, LIKE)
    with pytest.raises(ValueError, match=re.escape(repr(str(path))) + ".*" + message):
        checkpoint.load(path, like=jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), like))


def test_like_leaves_without_a_plain_shape_and_dtype_are_type_errors(tmp_path):
    checkpoint.save(tmp_path / "t.safetensors", {"a": 1})
    with pytest.raises(TypeError, match=r"leaf \['a'\] of `like` must have a shape and a dtype.*got str"):
        checkpoint.load(tmp_path / "t.safetensors", like={"a": "x"})
    with pytest.raises(TypeError, match=r"leaf \['a'\] of `like` is a typed PRNG key.*key_data"):
        checkpoint.load(tmp_path / "t.safetensors", like={"a": jax.random.key(0)})


# ---- bad arguments to save ---------------------------------------------------------------------
@pytest.mark.parametrize("tree, error, message", [
    ({"c": np.ones(2, np.complex128)}, TypeError, r"leaf \['c'\] of `tree` must have one of the dtypes .*got complex128"),
    ({"s": "text"}, TypeError, r"leaf \['s'\] of `tree` must be an array or a number, got str"),
    ({"o": np.array([None])}, TypeError, r"leaf \['o'\] of `tree` must have one of the dtypes .*got object"),
    ({"k": jax.random.key(0)}, TypeError, r"leaf \['k'\] of `tree` is a typed PRNG key.*key_data"),
])
def test_save_rejects_unsupported_leaves(tmp_path, tree, error, message):
    with pytest.raises(error, match=message):
        checkpoint.save(tmp_path / "x.safetensors", tree)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("metadata, message", [
    (["a"], r"`metadata` must be a dict\[str, str\] or None, got list"),
    ({"epoch": 3}, r"`metadata` must be a dict\[str, str\], got the item 'epoch': 3 \(str: int\)"),
    ({1: "a"}, r"got the item 1: 'a' \(int: str\)"),
])
def test_save_rejects_bad_metadata(tmp_path, metadata, message):
    with pytest.raises(TypeError, match=message):
        checkpoint.save(tmp_path / "x.safetensors", {}, metadata=metadata)


def test_save_rejects_bad_paths(tmp_path):
    with pytest.raises(TypeError, match=r"`path` must be a str or os.PathLike, got int"):
        checkpoint.save(3, {})
    with pytest.raises(ValueError, match=r"`path` must be a file, got the directory"):
        checkpoint.save(tmp_path, {})


# ---- files that are not whole checkpoints ------------------------------------------------------
def test_every_truncation_and_foreign_bytes_are_value_errors_naming_the_path(tmp_path):
    good = tmp_path / "good.safetensors"
    checkpoint.save(good, {"w": np.arange(6.0).reshape(2, 3), "n": 1}, metadata={"a": "b"})
    whole = good.read_bytes()
    rng = np.random.default_rng(0)
    contents = [whole[:n] for n in range(len(whole))] + [whole + b"\0", b"{}", b"PK\x03\x04"]
    contents += [rng.bytes(n) for n in (8, 100, 10_000)]
    bad = tmp_path / "bad.safetensors"
    for content in contents:
        bad.write_bytes(content)
        for read in (checkpoint.load, checkpoint.metadata):
            with pytest.raises(ValueError, match=re.escape(repr(str(bad)))):
                read(bad)


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"`path` must be a checkpoint file, got the directory"):
        checkpoint.load(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at `path` .*missing.safetensors"):
        checkpoint.load(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at `path`"):
        checkpoint.metadata(tmp_path / "missing.safetensors")


# ---- atomic writes -----------------------------------------------------------------------------
def test_write_protocol_fsyncs_the_file_replaces_then_fsyncs_the_folder(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.path.realpath(
        f"/proc/self/fd/{fd}"))), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", a, b)), real_replace(a, b))[1])
    path = str(tmp_path / "p.safetensors")
    checkpoint.save(path, {"w": np.ones(3)})
    temporary = events[1][1]
    assert os.path.dirname(temporary) == str(tmp_path) and temporary.endswith(".tmp")
    assert events == [("fsync", temporary), ("replace", temporary, path), ("fsync", str(tmp_path))]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    path = tmp_path / "f.safetensors"
    checkpoint.save(path, {"w": np.zeros(3)})

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {"w": np.ones(3)})
    assert os.listdir(tmp_path) == ["f.safetensors"]
    assert not checkpoint.load(path)["['w']"].any()


def load_worker_module():
    spec = importlib.util.spec_from_file_location("checkpoint_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sigkill_at_random_moments_leaves_one_whole_version(tmp_path):
    """A writer killed by SIGKILL 25 times at random moments: each time, the file on disk loads
    whole and equals one of the saved versions, metadata included."""
    worker = load_worker_module()
    versions = [worker.version(k) for k in (0, 1)]
    flat_versions = [{jax.tree_util.keystr(k): np.asarray(v)
                      for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]} for tree, _ in versions]
    path = tmp_path / "atomic.safetensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    process = subprocess.Popen([sys.executable, str(WORKER), str(path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=env)
    children, seen, rng = [], [], random.Random(0)

    def ask(command):
        process.stdin.write(command + "\n")
        process.stdin.flush()
        return process.stdout.readline().split()

    try:
        assert process.stdout.readline().strip() == "ready"
        for _ in range(25):
            reply = ask("fork")
            assert reply[0] == "child", reply
            children.append(int(reply[1]))
            # after its first save, a moment spread over the next ~4 saves (~6 ms each here)
            time.sleep(rng.uniform(0.0, 0.03))
            os.kill(children[-1], signal.SIGKILL)
            reply = ask("wait")
            assert os.WIFSIGNALED(int(reply[1])) and os.WTERMSIG(int(reply[1])) == signal.SIGKILL
            loaded = checkpoint.load(path)
            matches = [k for k, flat in enumerate(flat_versions)
                       if loaded.keys() == flat.keys() and all(same_bits(loaded[n], flat[n]) for n in flat)]
            assert len(matches) == 1, "the file is neither saved version"
            assert checkpoint.metadata(path) == versions[matches[0]][1]
            seen.append(matches[0])
        ask("quit")
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.kill()
        process.wait(timeout=10)
    leftovers = [name for name in os.listdir(tmp_path) if name != path.name]
    assert all(re.fullmatch(r"\.atomic\.safetensors\.[0-9a-f]{16}\.tmp", n) for n in leftovers)
    print(f"versions found after the 25 kills: {seen}; temporary files left by kills: {len(leftovers)}")
