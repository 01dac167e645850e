"""`fit`'s checkpoint: the whole training state in one `fdl.checkpoint` file.

The file holds the tree

    {"params": ..., "opt_state": ...,           # the caller's structures, shapes and dtypes
     "history": {name: (epochs_done,) float64}, # one value per whole epoch done
     "key": (k,) uint32,                        # jax.random.key_data of the run's key
     "totals": ...}                             # only when saved with `totals` (below)

and the metadata (strings)

    {"funcdl": "fit", "epochs_done": "<int>", "step": "<int>", "run": "<JSON object>"}

`epochs_done` whole epochs are done; `step` is the step within epoch `epochs_done` at which a
NaN stop happened (0: at an epoch boundary), and `totals` the partial epoch's accumulated sums
and metric states up to that step. `run` records the settings that fix what an epoch is,
`{"rows": n, "batch_size": b or null, "shuffle": bool, "validation_rows": n_val, "key": [uint32,
...]}` (`run_settings`); `load_state` refuses to resume a run with other settings, naming each
difference. Files written before `step` and `run` existed resume without these checks.

Dtypes do not depend on `jax_enable_x64`: the history is float64, the key data uint32, and an
integer leaf of the params, the optimizer state or `totals` stored as int64 (uint64) is read
into an int32 (uint32) one and back (a value out of range is a ValueError), as is a float64
leaf of `totals` into float32; any other difference from the caller's dtype is a ValueError.

The file is written after every `checkpoint_every` epochs, after the last one, and at a NaN
stop (then with the last finite state), by process 0 only; in a multi-process run every
process waits for that write before it goes on.
"""
import json
import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcdl.train.sharding import to_host, writes_files

FORMAT = "fit"
_RUN_FIELDS = {"rows": "`x` (its number of rows)", "batch_size": "`batch_size`",
               "shuffle": "`shuffle`", "validation_rows": "`validation` (its number of rows)",
               "key": "`key` (its key data)", "accumulate": "`accumulate`"}
_OPTIONAL_RUN_FIELDS = {"accumulate": int}  # absent from files written before they were kept
_INT_TWINS = {np.dtype(a): np.dtype(b) for a, b in (
    (np.int64, np.int32), (np.int32, np.int64), (np.uint64, np.uint32), (np.uint32, np.uint64))}
_FLOAT_TWINS = {np.dtype(np.float64): np.dtype(np.float32),
                np.dtype(np.float32): np.dtype(np.float64)}
_TOTALS = "['totals']"  # the key prefix of the totals' leaves in the file


class Resumed(NamedTuple):
    """The state `load_state` read: `params`, `opt_state` and `totals` (None when the file has
    none) in the caller's structures and dtypes (NumPy, host), `history` `{name: [float]}`
    with `epochs_done` values each, `step` within epoch `epochs_done`, and `key` of the
    caller's key type."""
    params: Any
    opt_state: Any
    history: dict
    epochs_done: int
    step: int
    totals: Any
    key: Any


def _key_data(key):
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def _like_key(stored, key):
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(stored, impl=jax.random.key_impl(key))
    return jnp.asarray(stored)


def run_settings(rows: int, batch_size, shuffle: bool, validation_rows: int, key,
                 accumulate: int = 1) -> dict:
    """The settings `run` of a `fit` call, as they act: `batch_size` None for a full batch
    (None or >= `rows`), `shuffle` False for a full batch (never shuffled), `key` as its raw
    key data (a list of ints), `accumulate` (it decides what a step of the saved position
    is)."""
    full_batch = batch_size is None or batch_size >= rows
    return {"rows": int(rows), "batch_size": None if full_batch else int(batch_size),
            "shuffle": bool(shuffle) and not full_batch, "validation_rows": int(validation_rows),
            "key": [int(v) for v in np.asarray(_key_data(key)).ravel()],
            "accumulate": int(accumulate)}


def save_state(path, params, opt_state, history, epochs_done, key, mesh=None, *, step=0,
               totals=None, run=None):
    """Write the training state to `path` (atomically; process 0 only; see the module
    docstring for the layout). step: the step within epoch `epochs_done` reached (0: an epoch
    boundary); totals: a pytree of arrays (the partial epoch's sums), stored with their own
    dtypes, or None; run: `run_settings(...)` or None (no checks on resume)."""
    from funcdl import checkpoint

    if writes_files(mesh):
        tree = {"params": to_host(params), "opt_state": to_host(opt_state),
                "key": np.asarray(_key_data(key)),
                "history": {name: np.asarray(values, np.float64)
                            for name, values in history.items()}}
        if totals is not None:
            tree["totals"] = to_host(totals)
        metadata = {"funcdl": FORMAT, "epochs_done": str(int(epochs_done)), "step": str(int(step))}
        if run is not None:
            metadata["run"] = json.dumps(run, sort_keys=True)
        checkpoint.save(os.fspath(path), tree, metadata=metadata)
    if jax.process_count() > 1:
        # Every process waits for process 0's write, so that a `resume` on any of them (in
        # this run or the next) reads this file, not an older one.
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(f"funcdl.train checkpoint {epochs_done} {step}")


def load_state(path, params, opt_state, history_names, key, *, totals_like=None, run=None,
               epochs=None, optional_names=()):
    """The `Resumed` state in `path`, or None when there is no file.

    The file must have been written by `fit` with params and optimizer state of the caller's
    structure, shapes and dtypes (up to the x64 twins of the module docstring; ValueError
    naming the first differing leaf otherwise). run: this call's `run_settings`; a file
    written with other settings is a ValueError naming each difference (file and call
    values). epochs: the epoch this call stops at; before the file's position is a
    ValueError. totals_like: the structure of the totals to read (None: none are read).
    Damaged metadata is a ValueError naming `path`; all checks precede reading the arrays.
    optional_names: history names read when the file has them and NaN for its epochs when it
    has not (`"lr"`, `"lr/<label>"`: a file written before they were recorded, or by a run
    whose optimizer had other learning rates); the file's other `"lr"` names are dropped."""
    from funcdl import checkpoint

    path = os.fspath(path)
    try:  # a file that exists but cannot be read is a PermissionError, never "no checkpoint"
        meta = checkpoint.metadata(path)
    except FileNotFoundError:
        return None
    if meta.get("funcdl") != FORMAT or "epochs_done" not in meta:
        raise ValueError(f"`checkpoint` {path!r} was not written by fdl.train.fit "
                         f"(metadata {meta!r})")
    done = _count(meta, "epochs_done", path)
    step = _count(meta, "step", path) if "step" in meta else 0
    stored_run = _stored_run(meta, path)
    if stored_run is not None:
        _check_step(stored_run, step, path)
        if run is not None:
            _check_same_run(stored_run, run, path)
    if epochs is not None and (epochs < done or (epochs == done and step > 0)):
        position = f"{done} epochs done" + (f" and step {step} of the next" if step else "")
        raise ValueError(f"`epochs` (the epoch to stop at) must not be before the position of "
                         f"`checkpoint` {path!r} ({position}), got epochs={epochs}")
    stored = _stored_shapes(path)
    _check_history_names(stored, history_names, optional_names, path)
    optional = [name for name in optional_names if name not in history_names]
    present = [name for name in optional if _history_key(name) in stored]
    history_names = list(history_names) + present
    has_totals = any(name.startswith(_TOTALS) for name in stored)
    like = {"params": params, "opt_state": opt_state, "key": _key_data(key),
            "history": {name: jax.ShapeDtypeStruct((done,), np.float64) for name in history_names}}
    if has_totals and totals_like is not None:
        like["totals"] = totals_like
    wanted, asked = _like_for_file(like, stored)
    extra = sorted(name for name in stored if name not in wanted and not name.startswith(_TOTALS)
                   and not _is_lr_key(name))
    if extra:
        raise ValueError(f"checkpoint {path!r} has a leaf {extra[0]} (shape {stored[extra[0]][0]} "
                         f"{stored[extra[0]][1]}) that this run does not have ({len(extra)} extra "
                         "in all)")
    tree = checkpoint.load(path, asked, strict=False)
    tree = jax.tree_util.tree_map_with_path(
        lambda leaf_path, leaf, want: _as_dtype(leaf, want, jax.tree_util.keystr(leaf_path), path),
        tree, jax.tree_util.tree_map(_dtype, like))
    history = {name: [float(v) for v in tree["history"][name]] for name in history_names}
    history.update({name: [math.nan] * done for name in optional if name not in present})
    return Resumed(tree["params"], tree["opt_state"], history, done, step, tree.get("totals"),
                   _like_key(tree["key"], key))


def _check_history_names(stored, history_names, optional_names, path):
    """A file whose history has other names than this call's (other `metrics` or with and
    without `validation`) is a ValueError naming both lists (the learning rates may differ)."""
    prefix = _history_key("")[:-2]  # "['history']['"
    theirs = sorted(key[len(prefix):-2] for key in stored
                    if key.startswith(prefix) and not _is_lr_key(key))
    ours = sorted(name for name in history_names if name not in optional_names)
    if theirs != ours:
        raise ValueError(
            f"`resume=True`: `checkpoint` {path!r} holds the history of {theirs}, this call "
            f"records {ours}: its `metrics` and `validation` must be the run's that wrote the "
            "file (or pass another `checkpoint` to start afresh)")


def _history_key(name: str) -> str:
    return jax.tree_util.keystr((jax.tree_util.DictKey("history"), jax.tree_util.DictKey(name)))


def _is_lr_key(key: str) -> bool:
    return key == _history_key("lr") or key.startswith(_history_key("lr/")[:-2])


def _count(meta, name, path) -> int:
    try:
        value = int(meta[name])
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"`checkpoint` {path!r} has damaged metadata: {name} {meta[name]!r} is "
                         "not an int >= 0")
    return value


def _stored_run(meta, path):
    """The file's `run` settings (None for files written before they were recorded)."""
    if "run" not in meta:
        return None
    try:
        run = json.loads(meta["run"])
    except ValueError:
        run = None
    types = {"rows": int, "batch_size": (int, type(None)), "shuffle": bool,
             "validation_rows": int, "key": list}
    optional = {name: kind for name, kind in _OPTIONAL_RUN_FIELDS.items()
                if isinstance(run, dict) and name in run}
    types.update(optional)
    if not (isinstance(run, dict) and sorted(run) == sorted(types)
            and all(isinstance(run[name], kind) and not (kind is int and isinstance(
                run[name], bool)) for name, kind in types.items())
            and all(type(v) is int for v in run["key"])):
        raise ValueError(f"`checkpoint` {path!r} has damaged metadata: run {meta['run']!r:.300} "
                         f"is not a JSON object of {', '.join(types)}")
    return run


def _check_step(run, step, path):
    batch = run["rows"] if run["batch_size"] is None else run["batch_size"]
    steps = math.ceil(run["rows"] / batch) if batch > 0 else 0
    if step >= max(steps, 1):
        raise ValueError(f"`checkpoint` {path!r} has damaged metadata: step {step} of an epoch "
                         f"of {steps} steps")


def _check_same_run(stored, run, path):
    differences = [f"{label}: the file's {_shown(name, stored[name])}, this call's "
                   f"{_shown(name, run[name])}"
                   for name, label in _RUN_FIELDS.items()
                   if name in stored and name in run and stored[name] != run[name]]
    if differences:
        raise ValueError(
            f"`resume=True`: `checkpoint` {path!r} was written by a run with other settings "
            f"than this call's, so its epochs are not this call's epochs: "
            f"{'; '.join(differences)}. Pass the same values to resume (a different learning "
            "rate or optimizer hyperparameter is allowed), or another `checkpoint` to start "
            "afresh")


def _shown(name, value):
    return "None (full batch)" if name == "batch_size" and value is None else repr(value)


def _stored_shapes(path) -> dict:
    """`{key: (shape, dtype)}` of the file's tensors, from its header alone."""
    from funcdl.checkpoint import files, reading

    fd, size = files.open_regular(path)
    try:
        head = reading._read_header(fd, size, path)
    finally:
        os.close(fd)
    return {tensor.key: (tensor.shape, tensor.dtype) for tensor in head.tensors}


def _dtype(leaf):
    return np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else np.asarray(leaf).dtype


def _like_for_file(like, stored):
    """`(keys, asked)`: the keys of `like`'s leaves, and `like` as ShapeDtypeStructs with the
    file's dtype where it is the x64 twin of the caller's (the history: float32 or float64)."""
    keys = set()

    def ask(leaf_path, leaf):
        key, want = jax.tree_util.keystr(leaf_path), _dtype(leaf)
        keys.add(key)
        found = stored.get(key, (None, None))[1]
        twins = {**_INT_TWINS, **(_FLOAT_TWINS if key.startswith(("['history']", _TOTALS))
                                   else {})}
        if found is not None and want in twins and twins[want] == found:
            want = found  # (a `.get` would compare None == dtype, which NumPy reads as float64)
        return jax.ShapeDtypeStruct(np.shape(leaf), want)

    return keys, jax.tree_util.tree_map_with_path(ask, like)


def _as_dtype(array, want, key, path):
    """`array` read from the file as the caller's dtype `want` (an x64 twin or the same)."""
    if array.dtype == want:
        return array
    if np.issubdtype(want, np.integer):
        limits = np.iinfo(want)
        if array.size and (array.min() < limits.min or array.max() > limits.max):
            raise ValueError(f"checkpoint {path!r} leaf {key} holds {array.dtype} values in "
                             f"[{array.min()}, {array.max()}], outside the caller's {want}")
    return array.astype(want)
