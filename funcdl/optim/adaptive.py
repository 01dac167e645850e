"""Per-coordinate adaptive scalings: Adagrad, RMSprop and Adam (the "scale_by_*" transforms).

Same conventions as `transforms.py`: factories returning `Optimizer(init, update)`, NamedTuple
states with commented shapes and dtypes, PyTorch's single-tensor order of operations.
"""
from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from funcdl.construction import recorded
from funcdl.optim.base import (Optimizer, check_matches, check_non_negative, check_state,
                               complement, default_float_dtype, is_data, is_zero, log_of)

tree_map = jax.tree_util.tree_map


def lerp(start, end, weight: float):
    """`start + weight (end - start)`, evaluated as `torch.lerp` does on CPU (the other
    endpoint is used for weight >= 0.5, which is exact at weight = 1)."""
    if is_data(weight):  # traced: both forms, chosen per the weight
        return jnp.where(jnp.abs(weight) < 0.5, start + weight * (end - start),
                         end - (end - start) * complement(weight))
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


def one_minus_power(beta: float, t: jax.Array, log_beta=None) -> jax.Array:
    """1 - beta^t for a Python float beta in [0, 1) and t >= 1, as -expm1(t log beta).

    PyTorch evaluates `1 - beta**t` in Python doubles and rounds the result once to the
    parameter's dtype. Evaluated directly in float32 (jax without x64), the subtraction cancels:
    1 - 0.999f is off by 1.3e-5 relative, which made float32 Adam drift from PyTorch by ~1e-4.
    The log is taken in double here, so the result is accurate to a few ulp in either dtype.
    `log_beta`: log(beta) computed beforehand (for a traced beta: the host's double value,
    taken while the optimizer is built; `base.log_of`).
    """
    if is_zero(beta):
        return jnp.ones_like(t)
    return -jnp.expm1(t * (log_of(beta) if log_beta is None else log_beta))


class ScaleByAdagradState(NamedTuple):
    """The state of `scale_by_adagrad`: the step count and the running sum of squared gradients."""
    count: jax.Array  # () int32: updates already applied, t - 1
    sum_of_squares: object  # like params: s_t, the running sum of g^2 (torch's state["sum"])


@recorded
def scale_by_adagrad(
    lr_decay: float = 0.0, initial_accumulator_value: float = 0.0, eps: float = 1e-10
) -> Optimizer:
    """Adagrad's scaling, with its learning-rate decay folded in:

        s_t = s_{t-1} + g^2,   g <- g / (sqrt(s_t) + eps) / (1 + (t - 1) lr_decay).

    Args:
      lr_decay: PyTorch's `lr_decay`, >= 0.
      initial_accumulator_value: s_0, >= 0.
      eps: added to sqrt(s_t), >= 0.
    """
    check_non_negative(lr_decay, "lr_decay")
    check_non_negative(initial_accumulator_value, "initial_accumulator_value")
    check_non_negative(eps, "eps")

    def init(params):
        return ScaleByAdagradState(
            count=jnp.zeros((), jnp.int32),
            sum_of_squares=tree_map(
                lambda p: jnp.full_like(p, initial_accumulator_value), params
            ),
        )

    def update(updates, state, params=None):
        del params
        check_state(state, ScaleByAdagradState, "scale_by_adagrad")
        check_matches(updates, state.sum_of_squares, "params (the optimizer state)")
        sums = tree_map(lambda s, g: s + g * g, state.sum_of_squares, updates)
        updates = tree_map(lambda g, s: g / (jnp.sqrt(s) + eps), updates, sums)
        if not is_zero(lr_decay):
            decay = 1 + state.count.astype(default_float_dtype()) * lr_decay
            updates = tree_map(lambda u: u / decay.astype(u.dtype), updates)
        return updates, ScaleByAdagradState(count=state.count + 1, sum_of_squares=sums)

    return Optimizer(init, update)


class ScaleByRmsState(NamedTuple):
    """The state of `scale_by_rms`: the moving averages of g^2 (and of g when centered)."""
    square_avg: object  # like params: the moving average of g^2
    grad_avg: Optional[object]  # like params when centered, else None: moving average of g


@recorded
def scale_by_rms(alpha: float = 0.99, eps: float = 1e-8, centered: bool = False) -> Optimizer:
    """RMSprop's scaling, eps outside the square root:

        v_t = alpha v_{t-1} + (1 - alpha) g^2,   (centered) m_t = alpha m_{t-1} + (1 - alpha) g,
        g <- g / (sqrt(v_t - m_t^2 if centered else v_t) + eps).

    v_0 = m_0 = 0 and there is no bias correction, as in PyTorch.

    Args:
      alpha: the smoothing constant, >= 0.
      eps: added to the root, >= 0.
      centered: divide by the estimated standard deviation instead of the root mean square.
    """
    check_non_negative(alpha, "alpha")
    check_non_negative(eps, "eps")
    one_minus_alpha = complement(alpha)

    def init(params):
        return ScaleByRmsState(
            square_avg=tree_map(jnp.zeros_like, params),
            grad_avg=tree_map(jnp.zeros_like, params) if centered else None,
        )

    def update(updates, state, params=None):
        del params
        check_state(state, ScaleByRmsState, "scale_by_rms")
        check_matches(updates, state.square_avg, "params (the optimizer state)")
        square_avg = tree_map(
            lambda v, g: v * alpha + one_minus_alpha * g * g, state.square_avg, updates
        )
        if centered:
            grad_avg = tree_map(lambda m, g: lerp(m, g, one_minus_alpha), state.grad_avg,
                                updates)
            avg = tree_map(lambda v, m: jnp.sqrt(v - m * m) + eps, square_avg, grad_avg)
        else:
            grad_avg = None
            avg = tree_map(lambda v: jnp.sqrt(v) + eps, square_avg)
        updates = tree_map(lambda g, a: g / a, updates, avg)
        return updates, ScaleByRmsState(square_avg=square_avg, grad_avg=grad_avg)

    return Optimizer(init, update)


class ScaleByAdamState(NamedTuple):
    """The state of `scale_by_adam`: the step count and the two moments (the maximum of the
    second with amsgrad)."""
    count: jax.Array  # () int32: updates already applied, t - 1
    exp_avg: object  # like params: m_t
    exp_avg_sq: object  # like params: v_t
    max_exp_avg_sq: Optional[object]  # like params with amsgrad, else None: max_{k<=t} v_k


@recorded
def scale_by_adam(
    betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, amsgrad: bool = False
) -> Optimizer:
    """Adam's bias-corrected scaling, eps outside the square root:

        m_t = beta1 m_{t-1} + (1 - beta1) g,   v_t = beta2 v_{t-1} + (1 - beta2) g^2,
        vmax_t = max(vmax_{t-1}, v_t) with amsgrad (the raw v, as PyTorch), else v_t,
        g <- m_t / (1 - beta1^t) / (sqrt(vmax_t) / sqrt(1 - beta2^t) + eps).

    Args:
      betas: (beta1, beta2), each in [0, 1).
      eps: added to the corrected root, >= 0.
      amsgrad: keep the running maximum of v_t.
    """
    if len(betas) != 2:
        raise ValueError(f"`betas` must be a pair (beta1, beta2), got {betas!r}")
    beta1, beta2 = betas
    check_non_negative(eps, "eps")
    for index, beta in enumerate(betas):
        if not is_data(beta) and not 0.0 <= beta < 1.0:
            raise ValueError(f"`betas[{index}]` must be in [0, 1), got {beta}")

    one_minus_beta1, one_minus_beta2 = complement(beta1), complement(beta2)
    # read while the optimizer is built (the traced betas' double values live only then)
    log_beta1, log_beta2 = [None if is_zero(b) else log_of(b) for b in (beta1, beta2)]

    def init(params):
        return ScaleByAdamState(
            count=jnp.zeros((), jnp.int32),
            exp_avg=tree_map(jnp.zeros_like, params),
            exp_avg_sq=tree_map(jnp.zeros_like, params),
            max_exp_avg_sq=tree_map(jnp.zeros_like, params) if amsgrad else None,
        )

    def update(updates, state, params=None):
        del params
        check_state(state, ScaleByAdamState, "scale_by_adam")
        check_matches(updates, state.exp_avg, "params (the optimizer state)")
        count = state.count + 1
        exp_avg = tree_map(lambda m, g: lerp(m, g, one_minus_beta1), state.exp_avg, updates)
        exp_avg_sq = tree_map(
            lambda v, g: v * beta2 + one_minus_beta2 * g * g, state.exp_avg_sq, updates
        )
        if amsgrad:
            max_exp_avg_sq = tree_map(jnp.maximum, state.max_exp_avg_sq, exp_avg_sq)
            second_moment = max_exp_avg_sq
        else:
            max_exp_avg_sq = None
            second_moment = exp_avg_sq
        t = count.astype(default_float_dtype())
        bias_correction1 = one_minus_power(beta1, t, log_beta1)
        bias_correction2_sqrt = jnp.sqrt(one_minus_power(beta2, t, log_beta2))

        def direction(m, v):
            denom = jnp.sqrt(v) / bias_correction2_sqrt.astype(v.dtype) + eps
            return m / bias_correction1.astype(m.dtype) / denom

        updates = tree_map(direction, exp_avg, second_moment)
        new_state = ScaleByAdamState(count, exp_avg, exp_avg_sq, max_exp_avg_sq)
        return updates, new_state

    return Optimizer(init, update)
