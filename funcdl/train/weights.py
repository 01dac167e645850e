"""Per-row weights for `fit`: `sample_weight=` and `class_weight=`, with Keras's averaging rule.

The loss of a batch of n rows with weights w is

    loss = Σ_i w_i l_i / n,   l_i = mean over the other axes of loss_fn(pred, target,
                                                                reduction="none")[i]

(Keras's "sum over batch size": the weights scale each row's loss and the sum is divided by
the number of rows, not by Σ w; note that `fdl.losses.cross_entropy(weight=)` follows PyTorch
and divides by the summed weights instead). `class_weight={class: weight}` gives row i the
weight of its integer target's class (1.0 for a class not listed, as Keras). Validation and
`evaluate` are unweighted.
"""
import inspect
from typing import Mapping, Optional

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


def row_weights(n_rows: int, y, sample_weight=None, class_weight: Optional[Mapping] = None):
    """The float32 weight of every row, `(n_rows,)`, or None without weights.

    Raises:
      ValueError: `sample_weight` of another length than the rows, or with negative or
        non-finite entries; a negative `class_weight`.
      TypeError: `class_weight` that is not a dict of int classes, or given with targets that
        are not integer class indices.
    """
    if sample_weight is None and class_weight is None:
        return None
    weights = np.ones(n_rows, np.float32)
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight)
        if sample_weight.shape != (n_rows,):
            raise ValueError(f"`sample_weight` must have one weight per row, shape ({n_rows},), "
                             f"got shape {sample_weight.shape}")
        if not np.issubdtype(sample_weight.dtype, np.number) or not np.all(
                np.isfinite(sample_weight)) or np.any(sample_weight < 0):
            raise ValueError("`sample_weight` must hold finite numbers >= 0")
        weights = weights * sample_weight.astype(np.float32)
    if class_weight is not None:
        if not isinstance(class_weight, Mapping) or not all(
                isinstance(k, (int, np.integer)) and not isinstance(k, bool)
                for k in class_weight):
            raise TypeError(f"`class_weight` must be a dict {{class index: weight}}, got "
                            f"{class_weight!r}")
        if any(not v >= 0 for v in class_weight.values()):
            raise ValueError(f"`class_weight` weights must be >= 0, got {dict(class_weight)}")
        targets = np.asarray(y)
        if not np.issubdtype(targets.dtype, np.integer) or targets.shape[:1] != (n_rows,):
            raise TypeError("`class_weight` needs integer class targets `y` of shape (n,), got "
                            f"{targets.dtype} of shape {targets.shape}")
        table = np.ones(max(int(targets.max(initial=0)), *map(int, class_weight)) + 1,
                        np.float32)
        for k, v in class_weight.items():
            table[int(k)] = v
        weights = weights * table[targets.reshape(n_rows, -1)[:, 0]]
    return weights


def weighted_loss(loss_fn, pred, target, weights):
    """Σ_i w_i l_i / n over a batch of n rows (Keras's rule; see the module docstring).

    pred, target: a batch (any pytree `loss_fn` takes); weights: `(n,)`. Written with
    `fdl.ops`, so both autodiffs differentiate it.

    Examples:
        >>> import jax.numpy as jnp
        >>> from funcdl import losses
        >>> pred, target = jnp.array([[1.0], [2.0]]), jnp.array([[0.0], [0.0]])
        >>> float(weighted_loss(losses.mse_loss, pred, target, jnp.array([1.0, 0.5])))
        1.5
    """
    per_row = loss_fn(pred, target, reduction="none")
    n = per_row.shape[0]
    if len(per_row.shape) > 1:
        per_row = ops.mean(ops.reshape(per_row, (n, -1)), axis=1)
    return ops.sum(per_row * weights.astype(per_row.dtype)) / n


def check_weighted_loss(loss_fn) -> None:
    """TypeError unless `loss_fn` takes `reduction=` (needed for per-row weights)."""
    if not accepts_reduction(loss_fn):
        raise TypeError("`sample_weight`/`class_weight` need a `loss_fn` that takes "
                        "`reduction=` (per-row losses with reduction=\"none\", as funcdl's "
                        f"losses do); {getattr(loss_fn, '__name__', loss_fn)!r} does not")

