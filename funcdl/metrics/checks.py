"""Argument and shape checks shared by the built-in metrics, and their accumulation dtypes.

Every check runs where shapes are known: in a constructor for its arguments, in `update` at
trace time for `pred` and `target`. Messages name the argument, the expected and the received.
"""
import math

import jax
import jax.numpy as jnp

AVERAGES = ("macro", "micro", "weighted")


def accumulation_dtype():
    """float64 with x64 enabled, else float32: the dtype every floating state accumulates in."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def count_dtype():
    """int64 with x64 enabled, else int32: the dtype of row counts and confusion matrices."""
    return jax.dtypes.canonicalize_dtype(jnp.int64)


def check_int_at_least(value, name, minimum):
    """`value` as an int >= `minimum`: TypeError for a non-int (bools included), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value}")
    return value


def check_average(average):
    if not isinstance(average, str) or average not in AVERAGES:
        raise ValueError(f"`average` must be one of {', '.join(map(repr, AVERAGES))}, got {average!r}")
    return average


def real_array(value, name):
    """`value` as a jax array of a real dtype (bool, integer or floating); else TypeError."""
    value = jnp.asarray(value)
    if not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
            or value.dtype == jnp.bool_):
        raise TypeError(f"`{name}` must hold real numbers (bool, integer or floating), got {value.dtype}")
    if value.ndim == 0:
        raise ValueError(f"`{name}` must have a row axis, shape (n, ...), got shape ()")
    return value


def regression_pair(pred, target):
    """`(pred, target)` as `(n, k)` arrays in the accumulation dtype.

    pred, target: the same shape `(n, ...)` (k = the product of the axes after the first),
    or `(n,)` against `(n, 1)` (k = 1). Anything else is a ValueError naming both shapes.
    """
    pred, target = real_array(pred, "pred"), real_array(target, "target")
    one_output = {pred.shape, target.shape} == {(pred.shape[0],), (pred.shape[0], 1)}
    if pred.shape != target.shape and not one_output:
        raise ValueError(f"`target` must have the shape of `pred`, {pred.shape} (or (n,) against "
                         f"(n, 1)), got {target.shape}")
    rows, outputs = pred.shape[0], math.prod(pred.shape[1:])
    dtype = accumulation_dtype()
    return (jnp.reshape(pred.astype(dtype), (rows, outputs)),
            jnp.reshape(target.astype(dtype), (rows, outputs)))


def integer_labels(target):
    """`target` as class labels in the count dtype; float targets are a TypeError."""
    target = real_array(target, "target")
    if jnp.issubdtype(target.dtype, jnp.floating):
        raise TypeError(f"`target` of a classification metric must hold integer class labels (an "
                        f"integer or bool dtype), got {target.dtype}; cast it with "
                        f"`target.astype(int)` if its values are whole numbers")
    return target.astype(count_dtype())


def has_class_scores(pred):
    """Whether `pred` holds class scores `(..., C)` with C > 1 (else one output per row)."""
    return pred.ndim >= 2 and pred.shape[-1] > 1


def labelled_rows(pred, target):
    """`(pred, labels)`: `pred` in the accumulation dtype, and `target` as labels of `rows`.

    rows = pred.shape[:-1] for class scores `(..., C)`, C > 1; for one output, `pred` `(...,)`
    or `(..., 1)`, rows = pred's shape without a last axis of size 1. target: `rows` or
    `rows + (1,)`, integer. The labels come back flattened to `(N,)`, N = prod(rows).
    """
    pred = real_array(pred, "pred")
    labels = integer_labels(target)
    if has_class_scores(pred):
        rows, kind = pred.shape[:-1], f"class scores (..., C) with C = {pred.shape[-1]}"
    else:
        rows = pred.shape[:-1] if pred.ndim >= 2 else pred.shape
        kind = "one output per row"
    if labels.shape not in (rows, rows + (1,)):
        raise ValueError(f"`target` must have shape {rows} (or {rows + (1,)}) for `pred` of shape "
                         f"{pred.shape} ({kind}: integer labels, not one-hot), got {labels.shape}")
    return pred.astype(accumulation_dtype()), jnp.reshape(labels, (-1,))


def predicted_labels(pred):
    """`(N,)` predicted classes: argmax over the last axis of class scores, else `pred > 0.5`."""
    if has_class_scores(pred):
        return jnp.reshape(jnp.argmax(pred, axis=-1), (-1,)).astype(count_dtype())
    return jnp.reshape(pred > 0.5, (-1,)).astype(count_dtype())


def same_outputs(a, b, what):
    """ValueError unless arrays `a` and `b` of two states can add: one is 0-d (a seed from `init`)
    or both have one shape (a `(1,)` state must not broadcast against a `(3,)` one)."""
    if a.shape and b.shape and a.shape != b.shape:
        raise ValueError(f"cannot merge {what} states over different outputs: shapes {a.shape} and "
                         f"{b.shape} (a state belongs to one shape of predictions)")
