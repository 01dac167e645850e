"""Loss functions with PyTorch's semantics, written with `fdl.ops`.

Every loss is `loss(input, target, ..., *, reduction="mean")` with `reduction` one of "mean"
(the average over elements, or the weighted average where PyTorch weights it), "sum" or "none"
(the per-element or per-sample losses). They are compositions of `fdl.ops`, so they
differentiate under `jax.grad` and under `fdl.autodiff.grad` alike, and they trace under
`jax.jit`. The result has the dtype of the prediction: array targets and weights are cast to it;
constants are Python scalars. Option values (`beta`, `label_smoothing`, ...) are Python numbers.

    >>> import jax.numpy as jnp, funcdl as fdl
    >>> fdl.losses.mse(jnp.array([1.0, 4.0, 5.0]), jnp.array([6.0, 3.0, 2.0]))
    Array(11.666667, dtype=float32)

PyTorch details kept (each checked against PyTorch 2.13 in tests/golden/losses.json): smooth_l1
with beta = 0 is l1; cross_entropy's weighted "mean" divides by the summed weights of the kept
class-index targets but by N for probability targets, and label smoothing weights and normalises
its uniform term the same way; a batch whose targets are all ignored has a nan mean (0 / 0) and
a zero gradient; ignore_index is refused with probability targets; integer targets are accepted
by mse/l1 but refused by the binary losses. Class indices out of range raise `ValueError` when
`target` is concrete; under `jax.jit`/`jax.vmap` (traced targets) their loss is NaN, as are the
"sum" and "mean" they enter, so a training loop's NaN guard stops on them.
Low precision (float16, bfloat16): means divide in at least float32 (`ops.mean`, and the
weighted mean of the class losses divides the mean loss by the weights' float32 mean), so no
count or sum of 65504+ terms overflows; reduction "sum" is the sum in the input's dtype and
overflows where PyTorch's does. Where funcdl departs from PyTorch, it raises instead
of guessing: a target whose shape differs from the prediction's (PyTorch broadcasts it, with a
warning), a negative `label_smoothing` (PyTorch silently ignores it). Errors are raised at trace
time.
"""
import jax
import jax.numpy as jnp
import numpy as np

from funcdl import ops
from funcdl.autodiff import Tensor

__all__ = ["l1_loss", "mae", "mse_loss", "mse", "smooth_l1_loss", "huber_loss", "cross_entropy",
           "nll_loss", "binary_cross_entropy", "bce", "binary_cross_entropy_with_logits"]

REDUCTIONS = ("mean", "sum", "none")


# ---- validation --------------------------------------------------------------------------------
def _float_operand(value, name, dtype=None):
    """`value` as a float jax array or Tensor (cast to `dtype` if it is an array); else TypeError."""
    if not isinstance(value, Tensor):
        value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(f"`{name}` must have a floating-point dtype, got {value.dtype}")
    if dtype is None or value.dtype == dtype:
        return value
    if isinstance(value, Tensor):
        raise TypeError(f"`{name}` must have the dtype of the prediction, {dtype}, got {value.dtype}")
    return value.astype(dtype)


def _check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduction!r}")


def _check(name, input, target, reduction, *, integer_target_ok):
    """Validated `(input, target)` for the losses whose target has the prediction's shape."""
    _check_reduction(reduction)
    input = _float_operand(input, name)
    if not isinstance(target, Tensor):
        target = jnp.asarray(target)
        if integer_target_ok and not jnp.issubdtype(target.dtype, jnp.floating):
            target = target.astype(input.dtype)  # as PyTorch's mse_loss / l1_loss accept them
    target = _float_operand(target, "target", input.dtype)
    if target.shape != input.shape:
        raise ValueError(f"`target` must have the shape of `{name}`, {input.shape}, got {target.shape} "
                         "(PyTorch would broadcast them with a warning; funcdl does not)")
    return input, target


def _constant(value, name, shape, dtype):
    """A weight array broadcastable to `shape`, as `dtype`, reshaped to `len(shape)` axes."""
    if isinstance(value, Tensor):
        raise TypeError(f"`{name}` must be an array (it receives no gradient), got a Tensor")
    value = jnp.asarray(value, dtype=dtype)
    if value.ndim > len(shape) or any(n not in (1, m) for n, m in zip(value.shape[::-1], shape[::-1])):
        raise ValueError(f"`{name}` must broadcast to the input shape {shape}, got shape {value.shape}")
    return jnp.reshape(value, (1,) * (len(shape) - value.ndim) + value.shape)


def _reduce(values, reduction):
    """Mean or sum over all elements, or `values` unchanged for "none"."""
    if reduction == "mean":
        return ops.mean(values)
    return ops.sum(values) if reduction == "sum" else values


# ---- regression ----------------------------------------------------------------------------------
def l1_loss(input, target, *, reduction="mean"):
    """Mean absolute error: |input - target|, reduced.

    input: float, any shape; target: the same shape (integer targets are cast to input's dtype;
    PyTorch's broadcasting of different shapes raises ValueError here). d/d input is
    sign(input - target), 0 where they are equal.
    PyTorch: torch.nn.functional.l1_loss (nn.L1Loss).

    >>> import jax.numpy as jnp
    >>> l1_loss(jnp.array([1.0, 2.0, 3.0]), jnp.array([4.0, 5.0, 6.0]))
    Array(3., dtype=float32)
    """
    input, target = _check("input", input, target, reduction, integer_target_ok=True)
    return _reduce(ops.abs(input - target), reduction)


def mse_loss(input, target, *, reduction="mean"):
    """Mean squared error: (input - target)², reduced. Shapes as `l1_loss`.

    PyTorch: torch.nn.functional.mse_loss (nn.MSELoss).
    """
    input, target = _check("input", input, target, reduction, integer_target_ok=True)
    return _reduce(ops.square(input - target), reduction)


def smooth_l1_loss(input, target, *, reduction="mean", beta=1.0):
    """Smooth L1: with d = input - target, 0.5 d² / beta where |d| < beta, else |d| - 0.5 beta.

    Shapes as `l1_loss`. beta >= 0; beta = 0 is exactly `l1_loss` (as PyTorch). At |d| = beta the
    derivative is sign(d) from both sides. PyTorch: torch.nn.functional.smooth_l1_loss.

    >>> import jax.numpy as jnp  # |d| = 2, 0.5, 0.5, 0.5 -> (1.5 + 3 * 0.125) / 4
    >>> smooth_l1_loss(jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([3.0, 2.5, 3.5, 4.5]))
    Array(0.46875, dtype=float32)
    """
    input, target = _check("input", input, target, reduction, integer_target_ok=True)
    beta = float(beta)
    if beta < 0:
        raise ValueError(f"`beta` must be >= 0, got {beta}")
    diff = input - target
    distance = ops.abs(diff)
    if beta == 0:
        return _reduce(distance, reduction)
    return _reduce(ops.where(distance < beta, 0.5 * diff * diff / beta, distance - 0.5 * beta), reduction)


def huber_loss(input, target, *, reduction="mean", delta=1.0):
    """Huber: with d = input - target, 0.5 d² where |d| < delta, else delta (|d| - 0.5 delta).

    Shapes as `l1_loss`; delta > 0. Equals delta * smooth_l1_loss(beta=delta).
    PyTorch: torch.nn.functional.huber_loss.
    """
    input, target = _check("input", input, target, reduction, integer_target_ok=True)
    delta = float(delta)
    if delta <= 0:
        raise ValueError(f"`delta` must be > 0, got {delta}")
    diff = input - target
    distance = ops.abs(diff)
    return _reduce(ops.where(distance < delta, 0.5 * diff * diff, delta * (distance - 0.5 * delta)), reduction)


# ---- classification --------------------------------------------------------------------------
def _check_classes(name, input, target, weight, ignore_index, reduction):
    """Validated `(input, target, class_axis, weight)` for `nll_loss` and `cross_entropy`.

    `target` stays an integer array (class indices) or becomes a float operand (probabilities).
    """
    _check_reduction(reduction)
    input = _float_operand(input, name)
    if input.ndim == 0:
        raise ValueError(f"`{name}` must have shape (C,) or (N, C, ...), got a scalar")
    class_axis = 0 if input.ndim == 1 else 1
    num_classes = input.shape[class_axis]
    if weight is not None:
        weight = jnp.asarray(weight, dtype=input.dtype)
        if weight.shape != (num_classes,):
            raise ValueError(f"`weight` must have shape (C,) = ({num_classes},), one per class, "
                             f"got {weight.shape}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"`ignore_index` must be an int, got {ignore_index!r}")
    target_dtype = target.dtype if isinstance(target, Tensor) else jnp.asarray(target).dtype
    if jnp.issubdtype(target_dtype, jnp.integer):
        target = jnp.asarray(target)
        expected = input.shape[:class_axis] + input.shape[class_axis + 1:]
        if target.shape != expected:
            raise ValueError(f"`target` of class indices must have shape {expected} (`{name}` {input.shape} "
                             f"without its class axis {class_axis}), got {target.shape}")
        _check_class_range(target, num_classes, ignore_index)
        return input, target, class_axis, weight
    if name == "log_probs" or not jnp.issubdtype(target_dtype, jnp.floating):
        expected = "" if name == "log_probs" else " or a float array of class probabilities"
        raise TypeError(f"`target` must be an integer array of class indices{expected}, got dtype {target_dtype}")
    target = _float_operand(target, "target", input.dtype)
    if target.shape != input.shape:
        raise ValueError(f"`target` of class probabilities must have the shape of `{name}`, {input.shape}, "
                         f"got {target.shape} (or pass integer class indices)")
    if ignore_index != -100:
        raise ValueError(f"`ignore_index` is not supported with class-probability targets, got {ignore_index}")
    return input, target, class_axis, weight


def _check_class_range(target, num_classes, ignore_index):
    """ValueError for class indices outside [0, C) (other than ignore_index), when `target` is concrete."""
    try:
        values = np.asarray(target)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return  # traced under jit: the values are not known yet
    bad = values[(values != ignore_index) & ((values < 0) | (values >= num_classes))]
    if bad.size:
        raise ValueError(f"`target` class indices must lie in [0, {num_classes}) or equal "
                         f"ignore_index={ignore_index}, got {bad[:5].tolist()}")


def _nll_terms(log_probs, target, class_axis, weight, ignore_index):
    """Per-sample `-weight[t] log_probs[t]` (0 where ignored) and the per-sample weights (constants).

    A class index outside [0, C) that is not `ignore_index` (only possible under `jit`/`vmap`,
    eagerly `_check_class_range` raises) gets the weight NaN, so its loss, the "sum" and the
    "mean" are NaN, never a finite wrong number (a negative index would otherwise wrap around
    and pick `weight[-1]`; an index >= C would pick nothing and still count in the mean).
    """
    num_classes = log_probs.shape[class_axis]
    kept = target != ignore_index
    in_range = (target >= 0) & (target < num_classes)
    picked_class = jnp.where(kept & in_range, target, -1)
    # -1 (ignored or out of range) has an all-False one-hot row: nothing is picked.
    picks = jnp.moveaxis(ops.one_hot(picked_class, num_classes, dtype=jnp.bool_), -1, class_axis)
    if weight is None:
        target_weight = kept.astype(log_probs.dtype)
    else:
        target_weight = jnp.where(kept, weight[jnp.where(kept & in_range, target, 0)], 0.0)
    target_weight = jnp.where(kept & ~in_range, jnp.nan, target_weight).astype(log_probs.dtype)
    picked = ops.sum(ops.where(picks, log_probs, 0.0), axis=class_axis)
    return picked * -target_weight, target_weight


def _weighted_reduce(losses, target_weight, reduction):
    """Σ losses / Σ target_weight for "mean" (nan, 0 / 0, if every target is ignored), Σ losses
    for "sum", the losses for "none".

    The mean is evaluated as mean(losses) / mean(target_weight), with the weights averaged in at
    least float32: in float16 the count of kept targets, Σ target_weight, overflows to inf past
    65504 samples (and Σ losses soon after), which made the loss 0 where PyTorch, accumulating
    in float32, gives the mean. A zero total weight gives nan with a zero gradient.
    """
    if reduction == "mean":
        accumulate = jnp.float64 if jnp.finfo(target_weight.dtype).bits > 32 else jnp.float32
        mean_weight = jnp.mean(target_weight.astype(accumulate)).astype(target_weight.dtype)
        any_weight = mean_weight != 0
        ratio = ops.mean(losses) / jnp.where(any_weight, mean_weight, 1)
        return ops.where(any_weight, ratio, jnp.nan)
    return ops.sum(losses) if reduction == "sum" else losses


def nll_loss(log_probs, target, weight=None, ignore_index=-100, *, reduction="mean"):
    """Negative log likelihood: -weight[t] * log_probs[t] per sample, for class indices t.

    log_probs: `(N, C)`, `(N, C, d1, ...)` (class axis 1) or `(C,)` (one sample), float.
    target: integer, `(N,)`, `(N, d1, ...)` or `()`; entries equal to `ignore_index` contribute
    nothing. weight: `(C,)` or None (all ones). reduction "mean" divides the sum by the summed
    weights of the kept targets (nan if every target is ignored; the gradient is then 0).
    PyTorch: torch.nn.functional.nll_loss.
    """
    log_probs, target, class_axis, weight = _check_classes("log_probs", log_probs, target, weight,
                                                           ignore_index, reduction)
    return _weighted_reduce(*_nll_terms(log_probs, target, class_axis, weight, ignore_index), reduction)


def cross_entropy(logits, target, weight=None, ignore_index=-100, label_smoothing=0.0, *, reduction="mean"):
    """Softmax cross-entropy from unnormalised logits, as `nll_loss(log_softmax(logits))`.

    logits: `(N, C)`, `(N, C, d1, ...)` (class axis 1) or `(C,)` (one sample), float.
    target: either class indices (integer, `logits.shape` without the class axis; `ignore_index`
    entries are skipped) or class probabilities (float, `logits.shape`; `ignore_index` must stay
    -100). weight: `(C,)` or None. With z = log_softmax(logits) along the class axis and
    ε = label_smoothing in [0, 1], replicating PyTorch (aten's cross_entropy_loss_*):
      indices:       (1 - ε) nll_loss(z, t, weight) + (ε / C) S, where S reduces
                     s_n = -Σ_c weight_c z_nc (0 where ignored) like nll_loss does: "mean"
                     divides Σ s_n by the summed weight[t_n] of the kept targets (not by N).
      probabilities: p ← (1 - ε) p + ε / C;  l_n = -Σ_c weight_c p_nc z_nc; "mean" divides
                     Σ l_n by the number of samples N·d1·... whatever the weights.
    Stable for any finite logits (|logit| = 1e4 gives finite values and gradients).
    PyTorch: torch.nn.functional.cross_entropy (nn.CrossEntropyLoss).

    >>> import jax.numpy as jnp
    >>> cross_entropy(jnp.array([[1.5, 2.0, 0.5], [0.5, 1.0, 1.5]]), jnp.array([1, 2]))
    Array(0.6422001, dtype=float32)
    """
    logits, target, class_axis, weight = _check_classes("logits", logits, target, weight, ignore_index, reduction)
    label_smoothing = float(label_smoothing)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"`label_smoothing` must be in [0, 1], got {label_smoothing}")
    num_classes = logits.shape[class_axis]
    log_probs = ops.log_softmax(logits, axis=class_axis)
    class_shape = tuple(num_classes if axis == class_axis else 1 for axis in range(logits.ndim))
    class_weight = None if weight is None else jnp.reshape(weight, class_shape)

    if jnp.issubdtype(target.dtype, jnp.floating):  # class probabilities
        if label_smoothing > 0:
            target = target * (1 - label_smoothing) + label_smoothing / num_classes
        terms = log_probs * target if class_weight is None else log_probs * target * class_weight
        per_sample = -ops.sum(terms, axis=class_axis)
        # The mean of the per-sample losses, not Σ / N: Σ overflows float16 long before the mean.
        return ops.mean(per_sample) if reduction == "mean" else _reduce(per_sample, reduction)

    losses, target_weight = _nll_terms(log_probs, target, class_axis, weight, ignore_index)
    nll = _weighted_reduce(losses, target_weight, reduction)
    if label_smoothing == 0:
        return nll
    weighted = log_probs if class_weight is None else log_probs * class_weight
    smooth = ops.where(target != ignore_index, -ops.sum(weighted, axis=class_axis), 0.0)
    return (1 - label_smoothing) * nll + _weighted_reduce(smooth, target_weight, reduction) * (
        label_smoothing / num_classes)


# ---- binary ----------------------------------------------------------------------------------
def _check_binary(name, input, target, reduction):
    # PyTorch rejects integer targets here (they would be class indices elsewhere): so do we.
    if not isinstance(target, Tensor) and not jnp.issubdtype(jnp.asarray(target).dtype, jnp.floating):
        raise TypeError(f"`target` must be a floating-point array of probabilities in [0, 1], got dtype "
                        f"{jnp.asarray(target).dtype} (cast it to the dtype of `{name}`)")
    return _check(name, input, target, reduction, integer_target_ok=False)


def binary_cross_entropy(probs, target, *, weight=None, reduction="mean"):
    """Binary cross-entropy of probabilities: -weight (y log p + (1 - y) log(1 - p)), reduced.

    probs, target: the same shape, float, values in [0, 1] (integer targets: TypeError).
    weight: None or broadcastable to that shape. Each log is clamped at -100, so p = 0 or 1 gives
    a loss of at most 100 per element, and d/dp = (p - y) / max(p (1 - p), 1e-12) stays finite
    (±1e12 at the ends; PyTorch's floor is a C++ float, 9.99999996e-13 also in float64).
    PyTorch: torch.nn.functional.binary_cross_entropy (nn.BCELoss).

    >>> import jax.numpy as jnp
    >>> loss = bce(jnp.array([[0.7], [0.2], [0.9], [0.7]]), jnp.array([[1.0], [0.0], [1.0], [0.0]]))
    >>> round(float(loss), 6)  # -(log 0.7 + log 0.8 + log 0.9 + log 0.3) / 4
    0.472288
    """
    probs, target = _check_binary("probs", probs, target, reduction)
    losses = ops.binary_cross_entropy(probs, target)
    if weight is not None:
        losses = losses * _constant(weight, "weight", probs.shape, probs.dtype)
    return _reduce(losses, reduction)


def binary_cross_entropy_with_logits(logits, target, pos_weight=None, *, weight=None, reduction="mean"):
    """Binary cross-entropy of σ(logits), computed stably from the logits.

    logits, target: the same shape, float (integer targets: TypeError). With x the logits,
    y the target and q = 1 + (pos_weight - 1) y, PyTorch's formula
        l = (1 - y) x + q softplus(-x)  = -(pos_weight y log σ(x) + (1 - y) log(1 - σ(x)))
    times `weight`. pos_weight (e.g. `(C,)` against `(..., C)`: one weight per class on the last
    axis) and weight broadcast to the logits' shape by NumPy's rules, without enlarging it.
    Finite values and gradients for any finite logits. PyTorch:
    torch.nn.functional.binary_cross_entropy_with_logits (nn.BCEWithLogitsLoss).
    """
    logits, target = _check_binary("logits", logits, target, reduction)
    softplus_neg = ops.softplus(-logits)
    if pos_weight is not None:
        pos_weight = _constant(pos_weight, "pos_weight", logits.shape, logits.dtype)
        softplus_neg = ((pos_weight - 1) * target + 1) * softplus_neg
    losses = (1 - target) * logits + softplus_neg
    if weight is not None:
        losses = losses * _constant(weight, "weight", logits.shape, logits.dtype)
    return _reduce(losses, reduction)


mae = l1_loss
mse = mse_loss
bce = binary_cross_entropy
