"""Tests for `funcdl/checkpoint/`: round trips, structure checks, broken and hostile files,
checksums, partial loads, memory, permissions, write errors, atomic writes.

The independent references for the file format are `safetensors.numpy.load_file`/`save_file`
(and `safe_open(...).metadata()`): what `save` writes must read back there, key for key, and
what they write must load here. The data section and its SHA-256 are found from the format's
definition (an 8-byte little-endian header length) with `hashlib`. Values are compared bit for
bit, so NaN payloads, -0.0 and every bfloat16 pattern count.
"""
import errno
import fcntl
import hashlib
import importlib.util
import json
import os
import pathlib
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc

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


def data_section(path):
    """The bytes after the header: the format puts an 8-byte little-endian header length first."""
    raw = pathlib.Path(path).read_bytes()
    return raw[8 + int.from_bytes(raw[:8], "little"):]


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
    checksum = {"funcdl.sha256": hashlib.sha256(data_section(path)).hexdigest()}
    assert checkpoint.metadata(path) == {"epoch": "4", "note": "é ✓", "": "", **checksum}
    with safetensors.safe_open(path, framework="np") as file:
        assert file.metadata() == {"epoch": "4", "note": "é ✓", "": "", **checksum}
    checkpoint.save(path, tree)
    assert checkpoint.metadata(path) == checksum


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
            meta = checkpoint.metadata(path)
            assert meta.pop("funcdl.sha256") == hashlib.sha256(data_section(path)).hexdigest()
            assert meta == versions[matches[0]][1]
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


# ---- the format, both ways ---------------------------------------------------------------------
def test_files_of_plain_safetensors_load_bitwise_without_a_checksum(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {f"t{k}": rng.integers(0, 2 if dtype == np.bool_ else 256, (k % 3 + 1) * 4 * dtype.itemsize,
                                    np.uint8).view(dtype).reshape(2, -1)
              for k, dtype in enumerate(checkpoint.SUPPORTED_DTYPES)}
    arrays["scalar"], arrays["empty"] = np.array(2.5, np.float32), np.zeros((0, 2), np.int16)
    path = tmp_path / "plain.safetensors"
    safetensors.numpy.save_file(arrays, path, metadata={"epoch": "2"})
    assert checkpoint.metadata(path) == {"epoch": "2"}
    loaded = checkpoint.load(path)
    assert sorted(loaded) == sorted(arrays)
    assert all(same_bits(loaded[key], arrays[key]) for key in arrays)
    # without "funcdl.sha256" nothing can be verified: a changed byte loads (as other tools do)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    assert checkpoint.load(path).keys() == arrays.keys()


# ---- paths that are not regular files ----------------------------------------------------------
FIFO_CHECKS = """
import json, os, sys
from funcdl import checkpoint
fifo, regular = sys.argv[1], sys.argv[2]
real_stat, outcomes = os.stat, {}
for label in ("fifo", "swapped"):
    # "swapped": stat says the FIFO is a regular file, as if the path changed after the stat
    os.stat = real_stat if label == "fifo" else (
        lambda p, *a, **k: real_stat(regular if os.fspath(p) == fifo else p, *a, **k))
    for read in (checkpoint.load, checkpoint.metadata):
        try:
            read(fifo)
            outcomes[f"{read.__name__} {label}"] = "returned"
        except Exception as error:
            outcomes[f"{read.__name__} {label}"] = f"{type(error).__name__}: {error}"
print(json.dumps(outcomes))
"""


def test_fifos_are_value_errors_without_blocking(tmp_path):
    """In a process of its own with a timeout: an open that waits for a FIFO's writer may hold
    the GIL (safetensors' did), so a thread could not stop a regression from hanging the suite.
    The second case plays a path swapped for a FIFO between the `stat` and the `open`: the
    non-blocking open and the descriptor's `fstat` must still refuse it."""
    fifo, regular = tmp_path / "fifo.safetensors", tmp_path / "regular.safetensors"
    os.mkfifo(fifo)
    checkpoint.save(regular, {"w": np.ones(2)})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    try:
        done = subprocess.run([sys.executable, "-c", FIFO_CHECKS, str(fifo), str(regular)], env=env,
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:  # (subprocess.run has killed it)
        pytest.fail("load or metadata blocked on a FIFO for 60 s")
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = json.loads(done.stdout)
    for key in ("load fifo", "metadata fifo", "load swapped", "metadata swapped"):
        assert outcomes[key] == f"ValueError: `path` {str(fifo)!r} must be a regular file, got a FIFO", key


@pytest.fixture
def socket_path():
    folder = tempfile.mkdtemp(prefix="fdl")  # short: a socket's path has ~100 characters at most
    path = os.path.join(folder, "s.safetensors")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    yield path
    server.close()
    os.unlink(path)
    os.rmdir(folder)


@pytest.mark.parametrize("read", [checkpoint.load, checkpoint.metadata])
def test_devices_and_sockets_are_value_errors_at_once(tmp_path, socket_path, read):
    """(FIFOs: in test_fifos_are_value_errors_without_blocking, where a regression cannot hang.)"""
    with pytest.raises(ValueError, match=re.escape(f"`path` {socket_path!r} must be a regular "
                                                   "file, got a socket")):
        read(socket_path)
    with pytest.raises(ValueError, match=re.escape("`path` '/dev/zero' must be a regular file, "
                                                   "got a character device")):
        read("/dev/zero")
    with pytest.raises(ValueError, match=r"`path` must be a checkpoint file, got the directory"):
        read(tmp_path)


def test_reads_happen_in_blocking_mode(tmp_path, monkeypatch):
    """O_NONBLOCK serves the open only: the reads that follow see a blocking descriptor."""
    path = tmp_path / "b.safetensors"
    checkpoint.save(path, {"w": np.ones(5)})
    modes, real_readv = [], os.readv
    monkeypatch.setattr(os, "readv", lambda fd, buffers: (
        modes.append(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK), real_readv(fd, buffers))[1])
    assert checkpoint.load(path)["['w']"].sum() == 5
    assert modes and not any(modes)


# ---- hostile headers ---------------------------------------------------------------------------
def write_raw(path, header, data=b"", length=None):
    """A file of the safetensors layout: `length` (default: the header's), the header (a JSON
    value, or bytes as they are), then `data`."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes((len(text) if length is None else length).to_bytes(8, "little") + text + data)


def f32(begin, end, shape=None, **extra):
    return {"dtype": "F32", "shape": [(end - begin) // 4] if shape is None else shape,
            "data_offsets": [begin, end], **extra}


@pytest.mark.parametrize("header, data, length, reason", [
    ({"a": f32(0, 4)}, b"\0" * 4, 2**64 - 1,
     r"its first 8 bytes give a header of 18446744073709551615 bytes, in a file of 73 bytes"),
    ({"a": f32(0, 4)}, b"\0" * 4, 10**8 + 1, r"its first 8 bytes give a header of 100000001 bytes, "
                                              r"in a file of 100000009 bytes \(the limit is 100000000\)"),
    (b"[1, 2]", b"", None, r"its header does not start with '\{'"),
    (b"{nope}", b"", None, r"its header is not JSON"),
    (b'{"a": 1, "a": 2}', b"", None, r"its header is not JSON: the key 'a' appears twice"),
    (b'{"\xff": 1}', b"", None, r"its header is not JSON"),
    (b"{" * 100_000, b"", None, r"its header is not JSON"),
    ({"__metadata__": {"epoch": 3}}, b"", None, r"its __metadata__ is not an object of strings"),
    ({"__metadata__": {"funcdl.sha256": "00ff"}}, b"", None, r"its funcdl.sha256 is not 64 hex digits"),
    ({"a": [1]}, b"", None, r"entry a must be an object with exactly dtype, shape, data_offsets"),
    ({"a": f32(0, 4, crc="0")}, b"\0" * 4, None, r"entry a must be an object with exactly"),
    ({"a": {**f32(0, 4), "dtype": "F8_E4M3"}}, b"\0" * 4, None, r"tensor a has the dtype 'F8_E4M3'"),
    ({"a": f32(0, 4, shape=[-1])}, b"\0" * 4, None, r"tensor a has the shape \[-1\], not a list of sizes"),
    ({"a": f32(0, 4, shape=[True])}, b"\0" * 4, None, r"tensor a has the shape \[True\]"),
    ({"a": f32(0, 4, shape=[1.0])}, b"\0" * 4, None, r"tensor a has the shape \[1.0\]"),
    ({"a": {**f32(0, 4), "data_offsets": [4, 0]}}, b"\0" * 4, None, r"tensor a has the data_offsets \[4, 0\]"),
    ({"a": {**f32(0, 4), "data_offsets": [0]}}, b"\0" * 4, None, r"tensor a has the data_offsets \[0\]"),
    ({"a": f32(0, 8, shape=[3])}, b"\0" * 8, None, r"tensor a of shape \(3,\) float32 needs 12 bytes, its offsets span 8"),
    ({"a": f32(0, 4), "b": f32(8, 12)}, b"\0" * 12, None, r"tensor b starts at byte 8 of the data, where 4 was expected"),
    ({"a": f32(0, 8), "b": f32(4, 8)}, b"\0" * 8, None, r"tensor b starts at byte 4 of the data, where 8"),
    ({"a": f32(4, 8)}, b"\0" * 8, None, r"tensor a starts at byte 4 of the data, where 0"),
    ({"a": f32(0, 8)}, b"\0" * 4, None, r"its tensors cover 8 bytes, its data section has 4"),
    ({"a": f32(0, 4)}, b"\0" * 5, None, r"its tensors cover 4 bytes, its data section has 5"),
])
def test_hostile_headers_are_value_errors_naming_the_path(tmp_path, header, data, length, reason):
    path = tmp_path / "hostile.safetensors"
    write_raw(path, header, data, length)
    if length == 10**8 + 1:  # long enough to hold the header it claims (sparse), over the limit
        os.truncate(path, 8 + length)
    for read in (checkpoint.load, checkpoint.metadata):
        with pytest.raises(ValueError, match=re.escape(repr(str(path))) + " is not a whole "
                           "safetensors checkpoint: " + reason):
            read(path)


def test_a_header_with_more_elements_than_numpy_allows_is_a_value_error(tmp_path):
    path = tmp_path / "huge.safetensors"
    write_raw(path, {"a": f32(0, 0, shape=[0, 2**62, 2**62])})
    assert checkpoint.metadata(path) == {}  # a consistent header: zero bytes of data
    with pytest.raises(ValueError, match=r"is not a whole safetensors checkpoint: tensor a: "):
        checkpoint.load(path)


# ---- checksums ---------------------------------------------------------------------------------
def flip_data_byte(path, position):
    """Flip one bit of the data section's byte `position` (negative: from the end), in place."""
    raw = bytearray(pathlib.Path(path).read_bytes())
    raw[len(raw) - len(data_section(path)) + position if position >= 0 else position] ^= 0x10
    pathlib.Path(path).write_bytes(bytes(raw))


STATE = {"params": {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(4, BF16)},
         "opt_state": {"m": np.full((3, 4), 0.5), "count": np.int32(7)}}
PARAMS_LIKE = {"params": jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                                                STATE["params"])}


def test_save_stores_the_sha256_of_the_data_section(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, STATE, metadata={"funcdl": "fit", "epochs_done": "3"})  # fit's keys
    assert checkpoint.metadata(path) == {"funcdl": "fit", "epochs_done": "3",
                                         "funcdl.sha256": hashlib.sha256(data_section(path)).hexdigest()}


@pytest.mark.parametrize("position", [0, 13, -1])
def test_a_flipped_data_byte_is_a_value_error_also_in_a_tensor_not_kept(tmp_path, position):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, STATE)
    flip_data_byte(path, position)
    corrupted = (re.escape(repr(str(path))) +
                 r" is corrupted: the SHA-256 of its data is [0-9a-f]{64}, its header says")
    for load in (lambda: checkpoint.load(path), lambda: checkpoint.load(path, STATE),
                 lambda: checkpoint.load(path, PARAMS_LIKE, strict=False)):
        with pytest.raises(ValueError, match=corrupted):
            load()


def test_metadata_keys_of_funcdl_are_reserved(tmp_path):
    with pytest.raises(ValueError, match=r"`metadata` keys starting with 'funcdl.' are reserved for "
                                         r"funcdl, got 'funcdl.sha256'"):
        checkpoint.save(tmp_path / "r.safetensors", {}, metadata={"funcdl.sha256": "0" * 64})
    assert os.listdir(tmp_path) == []


# ---- partial loads -----------------------------------------------------------------------------
def test_strict_false_skips_only_keys_that_like_lacks(tmp_path):
    path = tmp_path / "s.safetensors"
    checkpoint.save(path, STATE)
    assert_same_tree(checkpoint.load(path, PARAMS_LIKE, strict=False), {"params": STATE["params"]})
    assert_same_tree(checkpoint.load(path, STATE, strict=False), STATE)
    with pytest.raises(ValueError, match=r"that `like` does not have \(2 extra in all; strict=False skips them\)"):
        checkpoint.load(path, PARAMS_LIKE)
    with pytest.raises(ValueError, match=r"has no leaf \['params'\]\['v'\]"):
        checkpoint.load(path, {"params": {**STATE["params"], "v": np.zeros(1)}}, strict=False)
    with pytest.raises(ValueError, match=r"at leaf \['params'\]\['b'\]: expected shape \(4,\) float32"):
        checkpoint.load(path, {"params": {**STATE["params"], "b": np.ones(4, np.float32)}}, strict=False)
    with pytest.raises(TypeError, match=r"`strict` must be a bool, got int"):
        checkpoint.load(path, PARAMS_LIKE, strict=0)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """A 96 MiB checkpoint: 32 MiB of params, 64 MiB of optimizer state."""
    path = tmp_path_factory.mktemp("big") / "big.safetensors"
    tree = {"params": {"w": np.full(8 * 2**20, 1.5, np.float32)},
            "opt_state": {"m": np.arange(16 * 2**20, dtype=np.float32)}}
    checkpoint.save(path, tree)
    return path, tree


def measured(monkeypatch, function, *args, **kwargs):
    """`(result or raised error, bytes read by os.readv, peak traced memory growth)` of a call."""
    read, real_readv = [0], os.readv

    def counting_readv(fd, buffers):
        count = real_readv(fd, buffers)
        read[0] += count
        return count

    monkeypatch.setattr(os, "readv", counting_readv)
    tracemalloc.start()  # NumPy reports its array buffers to tracemalloc
    try:
        start = tracemalloc.get_traced_memory()[0]
        try:
            result = function(*args, **kwargs)
        except ValueError as error:
            result = error
        growth = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
        monkeypatch.undo()
    return result, read[0], growth


def test_like_is_checked_against_the_header_before_any_data_is_read(big_file, monkeypatch):
    path, tree = big_file
    header_bytes = os.path.getsize(path) - tree["params"]["w"].nbytes - tree["opt_state"]["m"].nbytes
    like = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
    for bad_like in ({"params": like["params"]},  # an extra key
                     {**like, "params": {"w": jax.ShapeDtypeStruct((3,), np.float32)}}):  # a shape
        error, read, growth = measured(monkeypatch, checkpoint.load, path, bad_like)
        assert isinstance(error, ValueError) and "`like`" in str(error)
        assert read == header_bytes and growth < 2**20, (read, growth)


def test_peak_memory_is_the_arrays_returned(big_file, monkeypatch):
    path, tree = big_file
    like = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
    params_only = ((path, {"params": like["params"]}), {"strict": False}, {"params": tree["params"]})
    for args, kwargs, kept in [((path,), {}, tree), ((path, like), {}, tree), params_only]:
        loaded, read, growth = measured(monkeypatch, checkpoint.load, *args, **kwargs)
        returned = sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(loaded))
        assert returned == sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(kept))
        assert growth <= 1.5 * returned, (growth, returned)
        assert read == os.path.getsize(path)  # everything is hashed, kept or not
        for got, want in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(kept)):
            assert same_bits(got, want)


def test_header_first_then_data_a_corrupt_file_with_a_wrong_like_names_the_like(tmp_path):
    path = tmp_path / "h.safetensors"
    checkpoint.save(path, STATE)
    flip_data_byte(path, 0)
    with pytest.raises(ValueError, match=r"differs from `like` at leaf \['params'\]\['w'\]"):
        checkpoint.load(path, {**STATE, "params": {**STATE["params"], "w": np.zeros(3)}})


# ---- files that change while they are read -----------------------------------------------------
def changing_after_the_header(monkeypatch, path, change):
    """Call `change()` once, just before the first read inside the data section."""
    data_start = os.path.getsize(path) - len(data_section(path))
    real_readv, done = os.readv, []

    def readv(fd, buffers):
        if not done and os.lseek(fd, 0, os.SEEK_CUR) >= data_start:
            done.append(change())
        return real_readv(fd, buffers)

    monkeypatch.setattr(os, "readv", readv)


def test_a_file_truncated_while_it_is_read_is_a_value_error(tmp_path, monkeypatch):
    path = tmp_path / "t.safetensors"
    checkpoint.save(path, STATE)
    changing_after_the_header(monkeypatch, path, lambda: os.truncate(path, os.path.getsize(path) - 20))
    with pytest.raises(ValueError, match=re.escape(repr(str(path))) + r" is not a whole safetensors "
                       r"checkpoint: it ended \d+ bytes early \(was it truncated while being read\?\)"):
        checkpoint.load(path)


def test_a_file_rewritten_in_place_while_it_is_read_is_a_value_error(tmp_path, monkeypatch):
    path, other = tmp_path / "r.safetensors", tmp_path / "other.safetensors"
    checkpoint.save(path, STATE)
    checkpoint.save(other, jax.tree_util.tree_map(lambda a: np.asarray(a) * 2, STATE))

    def rewrite():  # the other version's bytes over this one, in place (same inode)
        with open(path, "r+b") as file:
            file.write(other.read_bytes())

    changing_after_the_header(monkeypatch, path, rewrite)
    with pytest.raises(ValueError, match=re.escape(repr(str(path))) + r" is corrupted"):
        checkpoint.load(path, STATE)


def test_loads_racing_in_place_rewrites_and_truncations_are_whole_or_value_errors(tmp_path):
    """A reader that memory-maps dies of SIGBUS here, or returns a mix of two versions."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, str(WORKER), "--hammer", str(tmp_path / "h.safetensors"),
                           "100"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    counts = json.loads(done.stdout)
    print(f"100 loads racing a rewriter: {counts}")
    assert counts["mixed"] == 0 and counts["other"] == 0 and counts["whole"] + counts["ValueError"] == 100


# ---- permissions -------------------------------------------------------------------------------
@pytest.mark.parametrize("refused", ["open", "stat"])
def test_a_file_that_may_not_be_read_is_a_permission_error_never_no_checkpoint(tmp_path, monkeypatch, refused):
    """As root a mode-000 file is readable, so the OS's refusal is played by `os.open` (a file
    without read permission) or `os.stat` (a folder without search permission)."""
    path = tmp_path / "p.safetensors"
    checkpoint.save(path, STATE)
    real = getattr(os, refused)

    def refusing(file, *args, **kwargs):
        if os.fspath(file) == str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(os, refused, refusing)
    for read in (checkpoint.load, checkpoint.metadata):
        with pytest.raises(PermissionError, match=re.escape(f"cannot read the checkpoint `path` "
                                                            f"{str(path)!r}: Permission denied")) as info:
            read(path)
        assert info.value.errno == errno.EACCES


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may read a mode-000 file")
def test_a_mode_000_file_is_a_permission_error(tmp_path):
    path = tmp_path / "p.safetensors"
    checkpoint.save(path, STATE)
    path.chmod(0)
    try:
        for read in (checkpoint.load, checkpoint.metadata):
            with pytest.raises(PermissionError, match=re.escape(repr(str(path)))):
                read(path)
    finally:
        path.chmod(0o600)


# ---- write errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("function, code", [("open", errno.EACCES), ("open", errno.EROFS),
                                            ("write", errno.ENOSPC), ("fsync", errno.EIO),
                                            ("replace", errno.ENOSPC), ("replace", errno.EACCES)])
def test_write_errors_keep_class_and_errno_and_name_the_path(tmp_path, monkeypatch, function, code):
    monkeypatch.chdir(tmp_path)
    checkpoint.save("f.safetensors", {"w": np.zeros(3)})
    real = getattr(os, function)

    def failing(*args, **kwargs):
        if function == "open" and not os.fspath(args[0]).endswith(".tmp"):
            return real(*args, **kwargs)  # only the temporary file's creation fails
        raise OSError(code, os.strerror(code))  # OSError picks the subclass, as the OS's does

    monkeypatch.setattr(os, function, failing)
    with pytest.raises(OSError, match=re.escape(f"cannot write the checkpoint `path` 'f.safetensors': "
                                                f"{os.strerror(code)}")) as info:
        checkpoint.save("f.safetensors", {"w": np.ones(3)})
    assert type(info.value) is type(OSError(code, "")) and info.value.errno == code
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["f.safetensors"]  # no temporary file left
    assert not checkpoint.load(tmp_path / "f.safetensors")["['w']"].any()  # the old file, whole


def test_a_missing_folder_is_a_file_not_found_error_naming_the_path(tmp_path):
    path = tmp_path / "missing" / "f.safetensors"
    with pytest.raises(FileNotFoundError, match=re.escape(f"cannot write the checkpoint `path` "
                                                          f"{str(path)!r}: its folder")) as info:
        checkpoint.save(path, {"w": np.ones(3)})
    assert info.value.errno == errno.ENOENT and "does not exist" in str(info.value)


# ---- the guide ---------------------------------------------------------------------------------
def test_every_python_block_of_the_checkpoints_guide_runs_alone():
    """Each block in a namespace of its own (so each has its own imports), in order."""
    guide = ROOT / "docs" / "guides" / "checkpoints.md"
    blocks = re.findall(r"(<!-- skip[^\n]*-->\n)?```python\n(.*?)```", guide.read_text(), re.S)
    assert len(blocks) >= 4
    for skip, code in blocks:
        if not skip:
            exec(compile(code, str(guide), "exec"), {"__name__": "__guide__"})
