"""Regression losses: l1, mse, smooth_l1, huber (PyTorch's semantics; package docstring)."""
from funcdl import ops
from funcdl.annotations import Operand, Result
from funcdl.losses.checks import check_pair, reduce_losses


def l1_loss(input: Operand, target: Operand, *, reduction: str = "mean") -> Result:
    """Mean absolute error: |input - target|, reduced.

    input: float, any shape; target: the same shape (integer targets are cast to input's dtype;
    PyTorch's broadcasting of different shapes raises ValueError here). d/d input is
    sign(input - target), 0 where they are equal.
    PyTorch: torch.nn.functional.l1_loss (nn.L1Loss).

    Examples:
      >>> import jax.numpy as jnp
      >>> l1_loss(jnp.array([1.0, 2.0, 3.0]), jnp.array([4.0, 5.0, 6.0]))
      Array(3., dtype=float32)
    """
    input, target = check_pair("input", input, target, reduction, integer_target_ok=True)
    return reduce_losses(ops.abs(input - target), reduction)


def mse_loss(input: Operand, target: Operand, *, reduction: str = "mean") -> Result:
    """Mean squared error: (input - target)², reduced. Shapes as `l1_loss`.

    PyTorch: torch.nn.functional.mse_loss (nn.MSELoss).
    """
    input, target = check_pair("input", input, target, reduction, integer_target_ok=True)
    return reduce_losses(ops.square(input - target), reduction)


def smooth_l1_loss(input: Operand, target: Operand, *, reduction: str = "mean",
                   beta: float = 1.0) -> Result:
    """Smooth L1: with d = input - target, 0.5 d² / beta where |d| < beta, else |d| - 0.5 beta.

    Shapes as `l1_loss`. beta >= 0; beta = 0 is exactly `l1_loss` (as PyTorch). At |d| = beta the
    derivative is sign(d) from both sides. PyTorch: torch.nn.functional.smooth_l1_loss.

    Examples:
      >>> import jax.numpy as jnp  # |d| = 2, 0.5, 0.5, 0.5 -> (1.5 + 3 * 0.125) / 4
      >>> smooth_l1_loss(jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([3.0, 2.5, 3.5, 4.5]))
      Array(0.46875, dtype=float32)
    """
    input, target = check_pair("input", input, target, reduction, integer_target_ok=True)
    beta = float(beta)
    if beta < 0:
        raise ValueError(f"`beta` must be >= 0, got {beta}")
    diff = input - target
    distance = ops.abs(diff)
    if beta == 0:
        return reduce_losses(distance, reduction)
    return reduce_losses(ops.where(distance < beta, 0.5 * diff * diff / beta, distance - 0.5 * beta), reduction)


def huber_loss(input: Operand, target: Operand, *, reduction: str = "mean",
               delta: float = 1.0) -> Result:
    """Huber: with d = input - target, 0.5 d² where |d| < delta, else delta (|d| - 0.5 delta).

    Shapes as `l1_loss`; delta > 0. Equals delta * smooth_l1_loss(beta=delta).
    PyTorch: torch.nn.functional.huber_loss.
    """
    input, target = check_pair("input", input, target, reduction, integer_target_ok=True)
    delta = float(delta)
    if delta <= 0:
        raise ValueError(f"`delta` must be > 0, got {delta}")
    diff = input - target
    distance = ops.abs(diff)
    return reduce_losses(ops.where(distance < delta, 0.5 * diff * diff, delta * (distance - 0.5 * delta)), reduction)
