"""Binary losses: binary_cross_entropy (probabilities) and with logits (package docstring)."""
import jax.numpy as jnp

from funcdl import ops
from funcdl.annotations import Operand, Result
from funcdl.autodiff import Tensor
from funcdl.losses.checks import check_pair, constant, reduce_losses


def _check_binary(name, input, target, reduction):
    # PyTorch rejects integer targets here (they would be class indices elsewhere): so do we.
    if not isinstance(target, Tensor) and not jnp.issubdtype(jnp.asarray(target).dtype, jnp.floating):
        raise TypeError(f"`target` must be a floating-point array of probabilities in [0, 1], got dtype "
                        f"{jnp.asarray(target).dtype} (cast it to the dtype of `{name}`)")
    return check_pair(name, input, target, reduction, integer_target_ok=False)


def binary_cross_entropy(probs: Operand, target: Operand, *, weight: Operand | None = None,
                         reduction: str = "mean") -> Result:
    """Binary cross-entropy of probabilities: -weight (y log p + (1 - y) log(1 - p)), reduced.

    probs, target: the same shape, float, values in [0, 1] (integer targets: TypeError).
    weight: None or broadcastable to that shape. Each log is clamped at -100, so p = 0 or 1 gives
    a loss of at most 100 per element, and d/dp = (p - y) / max(p (1 - p), 1e-12) stays finite
    (±1e12 at the ends; PyTorch's floor is a C++ float, 9.99999996e-13 also in float64).
    PyTorch: torch.nn.functional.binary_cross_entropy (nn.BCELoss).

    Examples:
      >>> import jax.numpy as jnp
      >>> loss = binary_cross_entropy(jnp.array([[0.7], [0.2], [0.9], [0.7]]), jnp.array([[1.0], [0.0], [1.0], [0.0]]))
      >>> round(float(loss), 6)  # -(log 0.7 + log 0.8 + log 0.9 + log 0.3) / 4
      0.472288
    """
    probs, target = _check_binary("probs", probs, target, reduction)
    losses = ops.binary_cross_entropy(probs, target)
    if weight is not None:
        losses = losses * constant(weight, "weight", probs.shape, probs.dtype)
    return reduce_losses(losses, reduction)


def binary_cross_entropy_with_logits(logits: Operand, target: Operand,
                                     pos_weight: Operand | None = None, *,
                                     weight: Operand | None = None,
                                     reduction: str = "mean") -> Result:
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
        pos_weight = constant(pos_weight, "pos_weight", logits.shape, logits.dtype)
        softplus_neg = ((pos_weight - 1) * target + 1) * softplus_neg
    losses = (1 - target) * logits + softplus_neg
    if weight is not None:
        losses = losses * constant(weight, "weight", logits.shape, logits.dtype)
    return reduce_losses(losses, reduction)
