"""Learning-rate schedules: functions `step -> lr`, PyTorch's `lr_scheduler`s in closed form.

`step` is the number of updates already applied (0 for the first update), an int or an int
array (traced inside `jit` is fine); the result is an array of `step`'s shape, in float64 when
x64 is enabled and float32 otherwise. Pass a schedule as any optimizer's `lr`:
`adam(lr=cosine_decay(1e-3, total_steps=1000))`. This matches a PyTorch scheduler stepped once
after every `optimizer.step()`.

A schedule is a plain function (two of them compare by identity), but each carries the call
that built it (`funcdl.construction.constructed_by`), so two optimizers given equal schedules,
`adam(cosine_decay(1e-3, 1000)) == adam(cosine_decay(1e-3, 1000))`, are equal.

Examples:
  >>> import jax.numpy as jnp
  >>> schedule = step_decay(0.1, step_size=2, gamma=0.5)
  >>> [round(v, 4) for v in schedule(jnp.arange(6)).tolist()]
  [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
"""
import math

import jax
import jax.numpy as jnp

from funcdl.construction import recorded
from funcdl.optim.base import Schedule, check_non_negative, default_float_dtype


def _check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1, got {value!r}")


def _as_float(step) -> jax.Array:
    return jnp.asarray(step).astype(default_float_dtype())


@recorded
def constant(lr: float) -> Schedule:
    """lr_t = lr.

    Examples:
      >>> constant(0.5)(3).tolist()
      0.5
    """
    check_non_negative(lr, "lr")

    def schedule(step):
        return jnp.full(jnp.shape(step), lr, default_float_dtype())

    return schedule


@recorded
def step_decay(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """lr_t = lr gamma^floor(t / step_size): multiply by `gamma` every `step_size` updates.

    PyTorch: torch.optim.lr_scheduler.StepLR(optimizer, step_size, gamma).

    Examples:
      >>> [round(v, 4) for v in step_decay(1.0, step_size=3)(jnp.arange(7)).tolist()]
      [1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01]
    """
    check_non_negative(lr, "lr")
    _check_positive_int(step_size, "step_size")

    def schedule(step):
        decays = _as_float(jnp.asarray(step) // step_size)
        return lr * gamma**decays

    return schedule


@recorded
def exponential(lr: float, gamma: float) -> Schedule:
    """lr_t = lr gamma^t.

    PyTorch: torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma).

    Examples:
      >>> exponential(1.0, gamma=0.5)(jnp.arange(4)).tolist()
      [1.0, 0.5, 0.25, 0.125]
    """
    check_non_negative(lr, "lr")

    def schedule(step):
        return lr * gamma ** _as_float(step)

    return schedule


@recorded
def cosine_decay(lr: float, total_steps: int, eta_min: float = 0.0) -> Schedule:
    """lr_t = eta_min + (lr - eta_min) (1 + cos(pi t / total_steps)) / 2.

    From lr at t = 0 down to eta_min at t = total_steps. Beyond `total_steps` the cosine goes
    on, so lr climbs back to lr at t = 2 total_steps, exactly as PyTorch's scheduler does; use
    `warmup_cosine` (which holds eta_min) if training runs longer.

    PyTorch: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min).

    Examples:
      >>> [round(v, 4) for v in cosine_decay(1.0, total_steps=4)(jnp.arange(5)).tolist()]
      [1.0, 0.8536, 0.5, 0.1464, 0.0]
    """
    check_non_negative(lr, "lr")
    _check_positive_int(total_steps, "total_steps")
    check_non_negative(eta_min, "eta_min")

    def schedule(step):
        cosine = jnp.cos(math.pi * _as_float(step) / total_steps)
        return eta_min + (lr - eta_min) * (1 + cosine) / 2

    return schedule


@recorded
def warmup_cosine(
    lr: float,
    warmup_steps: int,
    total_steps: int,
    eta_min: float = 0.0,
    warmup_start: float = 0.0,
) -> Schedule:
    """Linear warmup from `warmup_start` to `lr`, then a cosine down to `eta_min`, then flat:

        lr_t = warmup_start + (lr - warmup_start) t / warmup_steps              t < warmup_steps
        lr_t = eta_min + (lr - eta_min) (1 + cos(pi (t - warmup_steps)
                                        / (total_steps - warmup_steps))) / 2      t <= total_steps
        lr_t = eta_min                                                           t > total_steps

    With the default `warmup_start = 0` the first update has lr 0 (as Hugging Face's
    `get_cosine_schedule_with_warmup` and optax's `warmup_cosine_decay_schedule` with
    init_value 0); the peak lr is used at t = warmup_steps.

    PyTorch: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: lr_t / lr).

    Examples:
      >>> schedule = warmup_cosine(1.0, warmup_steps=2, total_steps=4)
      >>> [round(v, 4) for v in schedule(jnp.arange(6)).tolist()]
      [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """
    check_non_negative(lr, "lr")
    _check_positive_int(total_steps, "total_steps")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or not (
        0 <= warmup_steps < total_steps
    ):
        raise ValueError(
            f"`warmup_steps` must be an int in [0, total_steps={total_steps}), "
            f"got {warmup_steps!r}"
        )
    check_non_negative(eta_min, "eta_min")
    check_non_negative(warmup_start, "warmup_start")
    decay_steps = total_steps - warmup_steps

    def schedule(step):
        t = _as_float(step)
        warmup = warmup_start + (lr - warmup_start) * t / max(warmup_steps, 1)
        progress = jnp.minimum(t - warmup_steps, decay_steps) / decay_steps
        cosine = eta_min + (lr - eta_min) * (1 + jnp.cos(math.pi * progress)) / 2
        return jnp.where(t < warmup_steps, warmup, cosine)

    return schedule
