"""Several processes, one run: `fit`'s arguments compared across processes before training.

In a multi-process run every process calls `fit` with its own arguments, and the compiled
programs meet in collectives: a process with another `key`, `epochs` or batch size would
shuffle other rows or run another number of steps, and the others would wait for it in a
collective for ever (or train on inconsistent data). So before anything else is compiled,
`check_processes` hashes each argument (SHA-256 of a canonical form: an array's shape, dtype
and bytes; a pytree's structure and its leaves' shapes and dtypes; a number's repr), gathers
the digests of every process with `multihost_utils.process_allgather` (every process takes
part, so none is left waiting), and where they differ EVERY process raises the same
ValueError, naming each argument that differs and which processes agree with which.
"""
import hashlib

import jax
import numpy as np

_DIGEST_BYTES = 32


def _canonical(value) -> bytes:
    """The bytes hashed for one argument (equal values, equal bytes, in every process)."""
    if hasattr(value, "dtype") and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        value = jax.random.key_data(value)  # a typed key: its impl fixes the data's shape
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        array = np.ascontiguousarray(np.asarray(value))
        return repr((array.shape, array.dtype.str)).encode() + array.tobytes()
    if isinstance(value, (type(None), bool, int, float, str)):
        return repr(value).encode()
    leaves, treedef = jax.tree_util.tree_flatten(value)  # params: structure, shapes, dtypes
    return repr((str(treedef), [(tuple(np.shape(leaf)), str(np.dtype(leaf.dtype)))
                                for leaf in leaves])).encode()


def structure(tree):
    """`tree` with each leaf replaced by its `jax.ShapeDtypeStruct`: what is compared of it."""
    return jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype),
                                  tree)


def digests(arguments: dict) -> np.ndarray:
    """`(len(arguments), 32)` uint8: the SHA-256 of each argument's canonical form, in order."""
    return np.stack([np.frombuffer(hashlib.sha256(_canonical(value)).digest(), np.uint8)
                     for value in arguments.values()])


def disagreements(arguments: dict, gathered: np.ndarray) -> list:
    """`[(name, groups)]` for each argument whose digests differ in `gathered` `(P, A, 32)`
    (P processes): `groups` lists the processes that hold the same value, first seen first."""
    found = []
    for index, name in enumerate(arguments):
        groups = {}
        for process, digest in enumerate(gathered[:, index]):
            groups.setdefault(digest.tobytes(), []).append(process)
        if len(groups) > 1:
            found.append((name, list(groups.values())))
    return found


def check_processes(arguments: dict, caller: str = "fit") -> None:
    """ValueError in every process unless all processes passed equal `arguments`
    (`{name: value}`, the same names in the same order everywhere); nothing to do with one
    process. Values: arrays (keys included: compared by shape, dtype and bytes), numbers,
    None, or pytrees such as `structure(params)` (compared by structure, shapes and dtypes)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    gathered = np.asarray(multihost_utils.process_allgather(digests(arguments)))
    found = disagreements(arguments, gathered.reshape(-1, len(arguments), _DIGEST_BYTES))
    if found:
        names = ", ".join(f"`{name}`" for name, _ in found)
        details = "; ".join(f"`{name}`: " + " vs ".join(
            "process" + ("es " if len(group) > 1 else " ") + ", ".join(map(str, group))
            for group in groups) for name, groups in found)
        raise ValueError(f"{caller}: the processes disagree on {names} ({details}); every "
                         f"process of one run must pass the same values (this is process "
                         f"{jax.process_index()} of {jax.process_count()})")
