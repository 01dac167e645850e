"""Class losses: nll_loss and cross_entropy (PyTorch's semantics; package docstring)."""
import jax
import jax.numpy as jnp
import numpy as np

from funcdl import ops
from funcdl.annotations import Operand, Result
from funcdl.autodiff import Tensor
from funcdl.losses.checks import check_reduction, float_operand, reduce_losses


def _check_classes(name, input, target, weight, ignore_index, reduction):
    """Validated `(input, target, class_axis, weight)` for `nll_loss` and `cross_entropy`.

    `target` stays an integer array (class indices) or becomes a float operand (probabilities).
    """
    check_reduction(reduction)
    input = float_operand(input, name)
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
    target = float_operand(target, "target", input.dtype)
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


def nll_loss(log_probs: Operand, target: Operand, weight: Operand | None = None,
             ignore_index: int = -100, *, reduction: str = "mean") -> Result:
    """Negative log likelihood: -weight[t] * log_probs[t] per sample, for class indices t.

    log_probs: `(N, C)`, `(N, C, d1, ...)` (class axis 1) or `(C,)` (one sample), float.
    target: integer, `(N,)`, `(N, d1, ...)` or `()`; entries equal to `ignore_index` contribute
    nothing. weight: `(C,)` or None (all ones). reduction "mean" divides the sum by the summed
    weights of the kept targets (nan if every target is ignored; the gradient is then 0).
    Returns the loss reduced by `reduction` (per sample, `target`'s shape, with "none").
    PyTorch: torch.nn.functional.nll_loss.
    """
    log_probs, target, class_axis, weight = _check_classes("log_probs", log_probs, target, weight,
                                                           ignore_index, reduction)
    return _weighted_reduce(*_nll_terms(log_probs, target, class_axis, weight, ignore_index), reduction)


def cross_entropy(logits: Operand, target: Operand, weight: Operand | None = None,
                  ignore_index: int = -100, label_smoothing: float = 0.0, *,
                  reduction: str = "mean") -> Result:
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
    Returns the loss reduced by `reduction` (per sample with "none").
    PyTorch: torch.nn.functional.cross_entropy (nn.CrossEntropyLoss).

    Examples:
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
        return ops.mean(per_sample) if reduction == "mean" else reduce_losses(per_sample, reduction)

    losses, target_weight = _nll_terms(log_probs, target, class_axis, weight, ignore_index)
    nll = _weighted_reduce(losses, target_weight, reduction)
    if label_smoothing == 0:
        return nll
    weighted = log_probs if class_weight is None else log_probs * class_weight
    smooth = ops.where(target != ignore_index, -ops.sum(weighted, axis=class_axis), 0.0)
    return (1 - label_smoothing) * nll + _weighted_reduce(smooth, target_weight, reduction) * (
        label_smoothing / num_classes)
