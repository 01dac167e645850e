"""Per-row weights for `fit`: `sample_weight=` and `class_weight=`, with Keras's averaging rule.

The training loss of a batch of n rows with weights w is

    loss = Σ_i w_i l_i / n,   l_i = mean over the other axes of loss_fn(pred, target,
                                                                reduction="none")[i]

(Keras's "sum over batch size": the weights scale each row's loss and the sum is divided by
the number of rows, not by Σ w; note that `fdl.losses.cross_entropy(weight=)` follows PyTorch
and divides by the summed weights instead). `class_weight={class: weight}` gives row i the
weight of its integer target's class (1.0 for a class not listed, as Keras); with both, a
row's weight is the product. Validation and `evaluate` are unweighted.

Inside `fit`'s compiled epochs the weights travel with the targets: the training `y` becomes
the pair `(y, w)`, so the rows of `w` are gathered (shuffled, fed to a mesh) with those of
`y`; `split_batch` takes a batch apart again (the metrics see `y` alone) and
`training_spec` gives the step the weighted loss (`WeightedLoss`), which takes `(y, w)`.
"""
import inspect
from collections.abc import Mapping
from typing import Callable, NamedTuple, Optional

import numpy as np

from funcdl import ops


def accepts_reduction(loss_fn) -> bool:
    """True when `loss_fn` takes a `reduction` keyword (funcdl's and PyTorch-style losses)."""
    try:
        parameters = inspect.signature(loss_fn).parameters
    except (TypeError, ValueError):
        return False
    return "reduction" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _sample_weights(n_rows: int, sample_weight) -> np.ndarray:
    try:
        weights = np.asarray(sample_weight)
    except Exception:  # noqa: BLE001 - anything NumPy cannot read as an array
        weights = np.asarray(None)
    if weights.dtype == object or not (np.issubdtype(weights.dtype, np.integer)
                                       or np.issubdtype(weights.dtype, np.floating)):
        raise TypeError("`sample_weight` must be an array of real numbers (one weight per "
                        f"row), got {type(sample_weight).__name__} of dtype {weights.dtype}")
    if weights.shape != (n_rows,):
        raise ValueError(f"`sample_weight` must have one weight per row, shape ({n_rows},), "
                         f"got shape {weights.shape}")
    bad = ~np.isfinite(weights) | (weights < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"`sample_weight` must hold finite numbers >= 0, got "
                         f"sample_weight[{i}] = {weights[i].item()!r} "
                         f"({int(bad.sum())} such in all)")
    return weights.astype(np.float32)


def _class_weights(n_rows: int, y, class_weight) -> np.ndarray:
    if not isinstance(class_weight, Mapping) or not all(_is_int(k) for k in class_weight):
        raise TypeError(f"`class_weight` must be a dict {{class index (int): weight}}, got "
                        f"{class_weight!r:.200}")
    for k, v in class_weight.items():
        if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(
                v, (bool, np.bool_)):
            raise TypeError(f"`class_weight` weights must be numbers, got class_weight[{k}] = "
                            f"{v!r:.100} ({type(v).__name__})")
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"`class_weight` weights must be finite numbers >= 0, got "
                             f"class_weight[{k}] = {float(v)!r}")
    shape = getattr(y, "shape", None)
    dtype = getattr(y, "dtype", None)
    integer = dtype is not None and np.issubdtype(np.dtype(dtype), np.integer)
    if not integer or shape is None or tuple(shape) not in ((n_rows,), (n_rows, 1)):
        raise TypeError("`class_weight` needs integer class targets `y` of shape (n,) or "
                        f"(n, 1), got {type(y).__name__}"
                        + (f" of dtype {dtype} and shape {tuple(shape)}" if shape is not None
                           else ""))
    targets = np.asarray(y).reshape(n_rows)
    weights = np.ones(n_rows, np.float32)
    for k, v in class_weight.items():  # a class not listed (or no class at all, -100): 1.0
        weights[targets == int(k)] = v
    return weights


def row_weights(n_rows: int, y, sample_weight=None, class_weight: Optional[Mapping] = None):
    """The float32 weight of every row, `(n_rows,)`, or None without weights: `sample_weight`
    times the `class_weight` of each row's class (1.0 for a class not in the dict).

    Raises:
      TypeError: `sample_weight` that is not an array of real numbers; `class_weight` that is
        not a dict of int classes to numbers, or given with targets `y` that are not integer
        class indices of shape (n,) or (n, 1).
      ValueError: `sample_weight` of another shape than `(n_rows,)`, or with negative or
        non-finite entries; a negative or non-finite `class_weight` weight.
    """
    if sample_weight is None and class_weight is None:
        return None
    weights = np.ones(n_rows, np.float32)
    if sample_weight is not None:
        weights = weights * _sample_weights(n_rows, sample_weight)
    if class_weight is not None:
        weights = weights * _class_weights(n_rows, y, class_weight)
    return weights


def weighted_loss(loss_fn, pred, target, weights):
    """Σ_i w_i l_i / n over a batch of n rows (Keras's rule; see the module docstring).

    pred, target: a batch (any pytree `loss_fn` takes); weights: `(n,)`. Written with
    `fdl.ops`, so both autodiffs differentiate it. A `loss_fn` whose `reduction="none"` value
    has no leading axis of n rows is a TypeError (raised when traced).

    Examples:
        >>> import jax.numpy as jnp
        >>> from funcdl import losses
        >>> pred, target = jnp.array([[1.0], [2.0]]), jnp.array([[0.0], [0.0]])
        >>> float(weighted_loss(losses.mse_loss, pred, target, jnp.array([1.0, 0.5])))
        1.5
    """
    per_row = loss_fn(pred, target, reduction="none")
    n = weights.shape[0]
    shape = tuple(per_row.shape)
    if not shape or shape[0] != n:
        raise TypeError(f"`sample_weight`/`class_weight`: `loss_fn(pred, target, "
                        f"reduction=\"none\")` must return one loss per row, a leading axis of "
                        f"{n}, got shape {shape}")
    if len(shape) > 1:
        per_row = ops.mean(ops.reshape(per_row, (n, -1)), axis=1)
    return ops.sum(per_row * weights.astype(per_row.dtype)) / n


class WeightedLoss(NamedTuple):
    """`loss_fn` with Keras's per-row weights: called as `(pred, (target, weights))`
    (hashable, equal for equal `loss_fn`s)."""
    loss_fn: Callable

    def __call__(self, pred, target_and_weights):
        target, weights = target_and_weights
        return weighted_loss(self.loss_fn, pred, target, weights)


def training_spec(spec, weighted: bool):
    """The `StepSpec` of a training step: `spec` with its loss weighted when `weighted`."""
    return spec._replace(loss_fn=WeightedLoss(spec.loss_fn)) if weighted else spec


def split_batch(yb, weighted: bool):
    """`(targets, loss_target)` of a training batch's `y` part: with weights, `yb` is the pair
    `(y, w)` (the metrics see `y`, the weighted loss the pair); else both are `yb`."""
    return (yb[0], yb) if weighted else (yb, yb)


def check_weighted_loss(loss_fn) -> None:
    """TypeError unless `loss_fn` takes `reduction=` (needed for per-row weights)."""
    if not accepts_reduction(loss_fn):
        raise TypeError("`sample_weight`/`class_weight` need a `loss_fn` that takes "
                        "`reduction=` (per-row losses with reduction=\"none\", as funcdl's "
                        f"losses do); {getattr(loss_fn, '__name__', loss_fn)!r} does not")
