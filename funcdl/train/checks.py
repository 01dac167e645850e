"""`fit`'s argument checks: each a TypeError/ValueError naming the argument, the expected and
the received, raised before anything is compiled."""
import operator
import os
from collections.abc import Mapping

import jax

from funcdl.metrics.base import Metric
from funcdl.nn.model import check_key


def check_int(value, name: str, minimum: int) -> int:
    """`value` as an int >= `minimum` (bool and float are not ints)."""
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be an int, got bool {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}") from None
    if value < minimum:
        comparison = ">= 0" if minimum == 0 else f">= {minimum}"
        raise ValueError(f"`{name}` must be {comparison}, got {value}")
    return value


def rows(array, name: str) -> int:
    """The number of rows (length of axis 0) of an array-like `array`."""
    shape = getattr(array, "shape", None)
    if shape is None:
        raise TypeError(f"`{name}` must be an array (jax or NumPy), got {type(array).__name__}")
    if len(shape) == 0:
        raise ValueError(f"`{name}` must have a leading axis of rows, got a 0-d array")
    return int(shape[0])


def tree_rows(tree, name: str) -> int:
    """The common number of rows of every leaf of `tree`: an array, or a pytree (dict, tuple,
    list) of arrays such as `{"image": (n, 28, 28), "mask": (n,)}`. A ValueError names the leaf
    whose rows differ from the first leaf's; a pytree without leaves is a ValueError."""
    if tree is None:
        raise TypeError(f"`{name}` must be an array (jax or NumPy) or a pytree (dict, tuple) of "
                        "arrays, got None")
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not leaves:
        raise ValueError(f"`{name}` must hold at least one array, got a "
                         f"{type(tree).__name__} without leaves")
    counts = []
    for path, leaf in leaves:
        leaf_name = name + jax.tree_util.keystr(path)
        if getattr(leaf, "shape", None) is None and path:
            raise TypeError(f"`{name}` must be an array (jax or NumPy) or a pytree (dict, tuple) "
                            f"of arrays, got {type(tree).__name__} whose leaf `{leaf_name}` is "
                            f"a {type(leaf).__name__}")
        counts.append((leaf_name, rows(leaf, leaf_name)))
    (first, n), = counts[:1]
    for leaf_name, n_leaf in counts[1:]:
        if n_leaf != n:
            raise ValueError(f"every array of `{name}` must have the same number of rows: "
                             f"`{first}` has {n} rows, `{leaf_name}` {n_leaf}")
    return n


def check_pair(x, y, x_name: str, y_name: str) -> int:
    """The common number of rows of `x` and `y` (arrays or pytrees of arrays, `tree_rows`);
    ValueError when they differ."""
    n_x, n_y = tree_rows(x, x_name), tree_rows(y, y_name)
    if n_x != n_y:
        raise ValueError(f"`{x_name}` and `{y_name}` must have the same number of rows, got "
                         f"{n_x} and {n_y}")
    if n_x == 0:
        raise ValueError(f"`{x_name}` must have at least one row, got 0")
    return n_x


def check_validation(validation):
    """`validation` as a pair `(x_val, y_val)` (or None) and its number of rows."""
    if validation is None:
        return None, 0
    if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
        raise TypeError("`validation` must be a pair (x_val, y_val) or None, "
                        f"got {type(validation).__name__}")
    return tuple(validation), check_pair(*validation, "validation[0]", "validation[1]")


def check_metrics(metrics) -> tuple:
    """`metrics` as a tuple of `(name, m)` pairs in the dict's order; each `m` a function
    `(pred, target) -> scalar` or an `fdl.metrics.Metric`."""
    if metrics is None:
        return ()
    if not isinstance(metrics, Mapping):
        raise TypeError("`metrics` must be a dict {name: fn(pred, target) -> scalar or "
                        f"fdl.metrics.Metric}} or None, got {type(metrics).__name__}")
    for name, fn in metrics.items():
        if not isinstance(name, str):
            raise TypeError(f"`metrics` names must be strings, got {type(name).__name__} {name!r}")
        if name == "loss" or name.startswith("val_"):
            raise ValueError(f"`metrics` name {name!r} is reserved (\"loss\" and \"val_...\" are "
                             "the history's own keys)")
        if not (callable(fn) or isinstance(fn, Metric)):
            raise TypeError(f"`metrics[{name!r}]` must be a function (pred, target) -> scalar "
                            f"or an fdl.metrics.Metric, got {type(fn).__name__}")
    return tuple(metrics.items())


def check_batch_size(batch_size, name: str = "batch_size"):
    """`batch_size` as an int >= 1, or None."""
    if batch_size is None:
        return None
    return check_int(batch_size, name, 1)


def check_fit_key(key):
    if key is not None:
        check_key(key, "fit")


def check_checkpoint(checkpoint, checkpoint_every, resume):
    """`checkpoint_every` as an int >= 1; TypeErrors for a bad path or `resume`."""
    every = check_int(checkpoint_every, "checkpoint_every", 1)
    if checkpoint is not None and not isinstance(checkpoint, (str, bytes)) and not hasattr(
            checkpoint, "__fspath__"):
        raise TypeError(f"`checkpoint` must be a path (str or os.PathLike) or None, got "
                        f"{type(checkpoint).__name__}")
    if not isinstance(resume, bool):
        raise TypeError(f"`resume` must be a bool, got {type(resume).__name__}")
    if checkpoint is not None and jax.process_index() == 0:  # process 0 writes it
        folder = os.path.dirname(os.path.abspath(os.fsdecode(os.fspath(checkpoint))))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"`checkpoint` {checkpoint!r}: its folder {folder!r} does "
                                    "not exist (checked before training, not after the first "
                                    "epochs)")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"`checkpoint` {checkpoint!r}: its folder {folder!r} cannot "
                                  "be written")
    if resume and checkpoint is None:
        raise ValueError("`resume=True` needs `checkpoint` (the file to resume from), got None")
    return every
