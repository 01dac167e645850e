"""`fit`'s checkpoint: the whole training state in one `fdl.checkpoint` file.

The file holds the tree ``{"params", "opt_state", "history": {name: (epochs,)}, "key": raw
key data}`` and the metadata ``{"funcdl": "fit", "epochs_done": "<int>"}``. It is written
after every `checkpoint_every` epochs, after the last one, and at a NaN stop (then with the
last finite state), by process 0 only; in a multi-process run every process waits for
that write before it goes on.
"""
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcdl.train.sharding import to_host, writes_files

FORMAT = "fit"


def _key_data(key):
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def _like_key(stored, key):
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(stored, impl=jax.random.key_impl(key))
    return jnp.asarray(stored)


def history_dtype():
    return jax.dtypes.canonicalize_dtype(np.float64)


class Resumed(NamedTuple):
    params: Any
    opt_state: Any
    history: dict
    epochs_done: int
    step: int
    totals: Any
    key: Any


def save_state(path, params, opt_state, history, epochs_done, key, mesh=None, *, step=0,
               totals=None, run=None):
    """Write the training state to `path` (atomically; process 0 only)."""
    from funcdl import checkpoint

    if writes_files(mesh):
        tree = {"params": to_host(params), "opt_state": to_host(opt_state), "key": _key_data(key),
                "history": {name: np.asarray(values, history_dtype())
                            for name, values in history.items()}}
        if totals is not None:
            tree["totals"] = to_host(totals)
        checkpoint.save(os.fspath(path), tree,
                        metadata={"funcdl": FORMAT, "epochs_done": str(epochs_done),
                                  "step": str(step)})
    if jax.process_count() > 1:
        # Every process waits for process 0's write, so that a `resume` on any of them (in
        # this run or the next) reads this file, not an older one.
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(f"funcdl.train checkpoint {epochs_done}")


def load_state(path, params, opt_state, history_names, key, *, totals_like=None, run=None,
               epochs=None):
    """`(params, opt_state, history, epochs_done, key)` from `path`, or None when there is no
    file. The file must have been written by `fit` with params and optimizer state of the
    same structure, shapes and dtypes (ValueError naming the first differing leaf otherwise)."""
    from funcdl import checkpoint

    path = os.fspath(path)
    try:  # a file that exists but cannot be read is a PermissionError, never "no checkpoint"
        meta = checkpoint.metadata(path)
    except FileNotFoundError:
        return None
    if meta.get("funcdl") != FORMAT or "epochs_done" not in meta:
        raise ValueError(f"`checkpoint` {path!r} was not written by fdl.train.fit "
                         f"(metadata {meta!r})")
    try:
        done = int(meta["epochs_done"])
    except ValueError:
        raise ValueError(f"`checkpoint` {path!r} has damaged metadata: epochs_done "
                         f"{meta['epochs_done']!r} is not an int") from None
    struct = lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a))  # noqa: E731
    like = {"params": jax.tree_util.tree_map(struct, params),
            "opt_state": jax.tree_util.tree_map(struct, opt_state),
            "key": struct(_key_data(key)),
            "history": {name: jax.ShapeDtypeStruct((done,), history_dtype())
                        for name in history_names}}
    step = int(meta.get("step", "0"))
    if step:
        like["totals"] = jax.tree_util.tree_map(struct, totals_like)
    tree = checkpoint.load(path, like)
    history = {name: [float(v) for v in np.asarray(tree["history"][name])]
               for name in history_names}
    return Resumed(tree["params"], tree["opt_state"], history, done, step,
                   tree.get("totals"), _like_key(tree["key"], key))
