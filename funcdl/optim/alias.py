"""PyTorch's optimizers, each a `chain` of the transforms in `transforms.py` and `adaptive.py`.

Notation: t = 1 on the first update, g the gradient, lr_t the learning rate of this update
(`lr`, or `lr(t - 1)` for a schedule), p the parameter. Each returns `Optimizer(init, update)`.
"""
from typing import Tuple

from funcdl.construction import recorded
from funcdl.optim.base import Optimizer, ScalarOrSchedule, chain, check_non_negative, is_data
from funcdl.optim.adaptive import scale_by_adagrad, scale_by_adam, scale_by_rms
from funcdl.optim.transforms import (
    add_decayed_weights,
    decoupled_weight_decay,
    scale_by_learning_rate,
    trace,
)


@recorded
def sgd(
    lr: ScalarOrSchedule,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> Optimizer:
    """Stochastic gradient descent with optional heavy-ball or Nesterov momentum.

        g <- g + weight_decay p
        b_1 = g,  b_t = momentum b_{t-1} + (1 - dampening) g          (when momentum > 0)
        d = g + momentum b_t  if nesterov  else  b_t   (d = g without momentum)
        p <- p - lr_t d

    Args:
      lr: learning rate, a float >= 0 or a schedule `step -> lr`.
      momentum: momentum factor, >= 0.
      dampening: dampening of the gradient in the buffer (not applied on the first update).
      nesterov: Nesterov momentum; needs momentum > 0 and dampening = 0.
      weight_decay: coupled L2 penalty, >= 0.

    Examples:
      >>> import jax.numpy as jnp
      >>> from funcdl.optim import apply_updates, sgd
      >>> opt = sgd(lr=0.1, momentum=0.9)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = opt.init(params)
      >>> for _ in range(2):   # gradient of 0.5 ||w||^2 is w
      ...     updates, state = opt.update(params, state, params)
      ...     params = apply_updates(params, updates)
      >>> # 1 -> 0.9 -> 0.9 - 0.1 (0.9 * 1 + 0.9) = 0.72
      >>> [round(v, 4) for v in params["w"].tolist()]
      [0.72, -1.44]

    Agreement with PyTorch: float64 within 1e-10 relative over 1000 updates, jitted and inside
    `lax.scan` (tests/test_optim.py). float32, largest relative difference per element after
    1000 updates at lr 1e-4 on 300 params (tests/golden/measure_optim_float32.py, jax 0.10.2,
    CPU): 1.2e-7 eagerly, 0 (bit-equal) under `jax.jit`.

    PyTorch: torch.optim.SGD(params, lr, momentum, dampening, weight_decay, nesterov)
    """
    return chain(
        add_decayed_weights(weight_decay),
        trace(momentum, dampening, nesterov),
        scale_by_learning_rate(lr),
    )


@recorded
def momentum(lr: ScalarOrSchedule, beta: float = 0.9, nesterov: bool = False) -> Optimizer:
    """SGD with PyTorch's heavy-ball momentum: exactly `sgd(lr, momentum=beta, nesterov=nesterov)`.

        b_1 = g,  b_t = beta b_{t-1} + g,   p <- p - lr_t (g + beta b_t if nesterov else b_t)

    This is not the seed's exponential moving average b_t = beta b_{t-1} + (1 - beta) g: that
    form equals this one with lr scaled by (1 - beta), except on the first update.

    Args:
      lr: learning rate, a float >= 0 or a schedule `step -> lr`.
      beta: momentum factor, >= 0.
      nesterov: Nesterov momentum; needs beta > 0.

    Examples:
      >>> import jax.numpy as jnp
      >>> from funcdl.optim import apply_updates, momentum
      >>> opt = momentum(lr=0.1, beta=0.5)
      >>> params = jnp.array([1.0])
      >>> state = opt.init(params)
      >>> for _ in range(2):   # gradient of 0.5 w^2 is w
      ...     updates, state = opt.update(params, state, params)
      ...     params = apply_updates(params, updates)
      >>> [round(v, 4) for v in params.tolist()]   # 1 -> 0.9 -> 0.9 - 0.1 (0.5 * 1 + 0.9) = 0.76
      [0.76]

    Agreement with PyTorch: float64 within 1e-10 relative over 1000 updates, jitted and inside
    `lax.scan` (tests/test_optim.py). float32, largest relative difference per element after
    1000 updates at lr 1e-4 on 300 params (tests/golden/measure_optim_float32.py, jax 0.10.2,
    CPU): 2.0e-7 eagerly, 2.1e-7 under `jax.jit`.

    PyTorch: torch.optim.SGD(params, lr, momentum=beta, nesterov=nesterov)
    """
    # Checked here so that the messages name this function's argument, not sgd's.
    check_non_negative(beta, "beta")
    if nesterov and not is_data(beta) and beta <= 0:
        raise ValueError(f"`nesterov=True` requires `beta` > 0, got beta={beta}")
    return sgd(lr, momentum=beta, dampening=0.0, nesterov=nesterov)


@recorded
def adagrad(
    lr: ScalarOrSchedule = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
) -> Optimizer:
    """Adagrad: per-coordinate steps shrinking with the accumulated squared gradients.

        g <- g + weight_decay p
        clr = lr_t / (1 + (t - 1) lr_decay)
        s_t = s_{t-1} + g^2   (s_0 = initial_accumulator_value)
        p <- p - clr g / (sqrt(s_t) + eps)

    Args:
      lr: learning rate, a float >= 0 or a schedule `step -> lr`.
      lr_decay: learning-rate decay, >= 0.
      weight_decay: coupled L2 penalty, >= 0.
      initial_accumulator_value: s_0, >= 0.
      eps: added to the root for numerical stability, >= 0.

    Examples:
      >>> import jax.numpy as jnp
      >>> from funcdl.optim import adagrad, apply_updates
      >>> opt = adagrad(lr=1.0)
      >>> params = jnp.array([2.0, -3.0])
      >>> updates, state = opt.update(jnp.array([0.5, 4.0]), opt.init(params), params)
      >>> # first step: p - lr sign(g)
      >>> [round(v, 4) for v in apply_updates(params, updates).tolist()]
      [1.0, -4.0]

    Agreement with PyTorch: float64 within 1e-10 relative over 1000 updates, jitted and inside
    `lax.scan` (tests/test_optim.py). float32, largest relative difference per element after
    1000 updates at lr 1e-4 on 300 params (tests/golden/measure_optim_float32.py, jax 0.10.2,
    CPU): 0 (bit-equal) eagerly, 7.2e-8 under `jax.jit`.

    PyTorch: torch.optim.Adagrad(params, lr, lr_decay, weight_decay, initial_accumulator_value, eps)
    """
    return chain(
        add_decayed_weights(weight_decay),
        scale_by_adagrad(lr_decay, initial_accumulator_value, eps),
        scale_by_learning_rate(lr),
    )


@recorded
def rmsprop(
    lr: ScalarOrSchedule = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
) -> Optimizer:
    """RMSprop: steps divided by a moving root mean square of the gradients.

        g <- g + weight_decay p
        v_t = alpha v_{t-1} + (1 - alpha) g^2,   v_0 = 0
        (centered) m_t = alpha m_{t-1} + (1 - alpha) g,   avg = sqrt(v_t - m_t^2) + eps
        (otherwise) avg = sqrt(v_t) + eps
        with momentum > 0:  b_t = momentum b_{t-1} + g / avg (b_0 = 0),   p <- p - lr_t b_t
        otherwise:          p <- p - lr_t g / avg

    Args:
      lr: learning rate, a float >= 0 or a schedule `step -> lr`.
      alpha: smoothing constant, >= 0.
      eps: added to the root (outside it), >= 0.
      weight_decay: coupled L2 penalty, >= 0.
      momentum: momentum factor, >= 0.
      centered: normalise by the estimated variance instead of the second moment.

    Examples:
      >>> import jax.numpy as jnp
      >>> from funcdl.optim import apply_updates, rmsprop
      >>> opt = rmsprop(lr=0.01, alpha=0.75)
      >>> params = jnp.array([1.0])
      >>> updates, state = opt.update(jnp.array([3.0]), opt.init(params), params)
      >>> # 1 - 0.01 * 3 / sqrt(0.25 * 9) = 0.98
      >>> [round(v, 6) for v in apply_updates(params, updates).tolist()]
      [0.98]

    Agreement with PyTorch: float64 within 1e-10 relative over 1000 updates, jitted and inside
    `lax.scan` (tests/test_optim.py). float32, largest relative difference per element after
    1000 updates at lr 1e-4 on 300 params (tests/golden/measure_optim_float32.py, jax 0.10.2,
    CPU): 1.2e-7 eagerly, 1.4e-7 under `jax.jit`.

    PyTorch: torch.optim.RMSprop(params, lr, alpha, eps, weight_decay, momentum, centered)
    """
    return chain(
        add_decayed_weights(weight_decay),
        scale_by_rms(alpha, eps, centered),
        trace(momentum),
        scale_by_learning_rate(lr),
    )


@recorded
def adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
) -> Optimizer:
    """Adam: momentum on the gradient, divided by the root of a moving second moment.

        g <- g + weight_decay p                      (coupled L2, unlike adamw)
        m_t = beta1 m_{t-1} + (1 - beta1) g,   v_t = beta2 v_{t-1} + (1 - beta2) g^2
        vmax_t = max(vmax_{t-1}, v_t) with amsgrad, else v_t
        p <- p - lr_t m_t / (1 - beta1^t) / (sqrt(vmax_t) / sqrt(1 - beta2^t) + eps)

    Args:
      lr: learning rate, a float >= 0 or a schedule `step -> lr`.
      betas: (beta1, beta2), the moving-average coefficients, each in [0, 1).
      eps: added to the corrected root, >= 0.
      weight_decay: coupled L2 penalty, >= 0.
      amsgrad: use the running maximum of v_t (AMSGrad).

    Examples:
      >>> import jax.numpy as jnp
      >>> from funcdl.optim import adam, apply_updates
      >>> opt = adam(lr=0.1)
      >>> params = jnp.array([1.0, 1.0])
      >>> updates, state = opt.update(jnp.array([1e-3, -5.0]), opt.init(params), params)
      >>> # first step: p - lr sign(g)
      >>> [round(v, 5) for v in apply_updates(params, updates).tolist()]
      [0.9, 1.1]

    Agreement with PyTorch: float64 within 1e-10 relative over 1000 updates, jitted and inside
    `lax.scan` (tests/test_optim.py). float32, largest relative difference per element after
    1000 updates at lr 1e-4 on 300 params (tests/golden/measure_optim_float32.py, jax 0.10.2,
    CPU): 1.3e-7 eagerly, 2.7e-7 under `jax.jit`.

    PyTorch: torch.optim.Adam(params, lr, betas, eps, weight_decay, amsgrad)
    """
    return chain(
        add_decayed_weights(weight_decay),
        scale_by_adam(betas, eps, amsgrad),
        scale_by_learning_rate(lr),
    )


@recorded
def adamw(
    lr: ScalarOrSchedule = 1e-3,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
) -> Optimizer:
    """Adam with decoupled weight decay: p shrinks by lr_t weight_decay p outside the moments.

        p <- p (1 - lr_t weight_decay)
        m_t, v_t, vmax_t as in adam, on the raw gradient g
        p <- p - lr_t m_t / (1 - beta1^t) / (sqrt(vmax_t) / sqrt(1 - beta2^t) + eps)

    Args:
      lr: learning rate, a float >= 0 or a schedule `step -> lr`.
      betas: (beta1, beta2), the moving-average coefficients, each in [0, 1).
      eps: added to the corrected root, >= 0.
      weight_decay: decoupled decay coefficient, >= 0.
      amsgrad: use the running maximum of v_t (AMSGrad).

    Examples:
      >>> import jax.numpy as jnp
      >>> from funcdl.optim import adamw, apply_updates
      >>> opt = adamw(lr=0.1, weight_decay=0.5)
      >>> params = jnp.array([2.0])
      >>> updates, state = opt.update(jnp.array([3.0]), opt.init(params), params)
      >>> # 2 (1 - 0.05) - 0.1 sign(3)
      >>> [round(v, 5) for v in apply_updates(params, updates).tolist()]
      [1.8]

    Agreement with PyTorch: float64 within 1e-10 relative over 1000 updates, jitted and inside
    `lax.scan` (tests/test_optim.py). float32, largest relative difference per element after
    1000 updates at lr 1e-4 on 300 params (tests/golden/measure_optim_float32.py, jax 0.10.2,
    CPU): 1.4e-7 eagerly, 2.1e-5 under `jax.jit`.
    The jitted drift is XLA contracting `p * f` and the add that follows into one fused
    multiply-add (openxla/xla issue 41579), so the decayed product is never rounded.

    PyTorch: torch.optim.AdamW(params, lr, betas, eps, weight_decay, amsgrad)
    """
    return chain(
        scale_by_adam(betas, eps, amsgrad),
        scale_by_learning_rate(lr),
        decoupled_weight_decay(lr, weight_decay),
    )
