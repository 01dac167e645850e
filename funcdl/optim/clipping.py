"""Gradient clipping by the global 2-norm, as `torch.nn.utils.clip_grad_norm_`."""
import jax
import jax.numpy as jnp

from funcdl.construction import recorded
from funcdl.optim.base import EmptyState, Optimizer, check_state, is_data


def accumulation_dtype(dtype):
    """The dtype that sums of squares of `dtype` values are accumulated in: float32 for
    float16/bfloat16 (and float32), float64 for float64."""
    return jnp.dtype(jnp.float64) if jnp.finfo(dtype).bits > 32 else jnp.dtype(jnp.float32)


def _leaf_norm(g):
    """||g||_2 in `accumulation_dtype(g.dtype)`: squares and their sum never overflow float16."""
    g = jnp.asarray(g)
    g = g.astype(accumulation_dtype(g.dtype))
    return jnp.sqrt(jnp.sum(g * g))


def _rounded_where_finite(value, dtype):
    """`value` rounded to `dtype` (and back), unless that overflows: then `value` unchanged."""
    rounded = value.astype(dtype).astype(value.dtype)
    return jnp.where(jnp.isfinite(rounded), rounded, value)


@recorded
def clip_by_global_norm(max_norm: float) -> Optimizer:
    """Rescale all gradients together so that their joint 2-norm is at most about `max_norm`:

        total_norm = || (||g_1||_2, ..., ||g_n||_2) ||_2   (over every leaf of the pytree),
        g_i <- g_i min(1, max_norm / (total_norm + 1e-6)).

    Each leaf's sum of squares is accumulated in at least float32 (float64 leaves stay float64),
    so float16/bfloat16 gradients do not overflow it: g² passes float16's 65504 as soon as
    |g| > 256. Where it is finite there, each norm is then rounded to its leaf's dtype, and the
    total to the widest leaf dtype, as PyTorch's `vector_norm` returns them (ten float16
    gradients of 300 with max_norm 1 give 0.3164 each in both); a norm beyond the leaf dtype's
    range stays in float32 (PyTorch's becomes inf and zeroes the gradients). The scale is
    computed in that accumulation dtype and cast to each leaf's dtype.
    Gradients already inside the ball are still multiplied by 1 (exactly
    as PyTorch, which avoids a branch).
    Put it first in a chain: `chain(clip_by_global_norm(1.0), adam(1e-3))`.

    Args:
      max_norm: the largest allowed total norm, > 0.

    Examples:
      >>> import jax.numpy as jnp
      >>> opt = clip_by_global_norm(1.0)
      >>> grads = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
      >>> clipped, _ = opt.update(grads, opt.init(grads))
      >>> [round(float(clipped[k][0]), 4) for k in "ab"]
      [0.6, 0.8]

    PyTorch: torch.nn.utils.clip_grad_norm_(parameters, max_norm) before optimizer.step().
    """
    if not is_data(max_norm) and not max_norm > 0:
        raise ValueError(f"`max_norm` must be > 0, got {max_norm}")

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        check_state(state, EmptyState, "clip_by_global_norm")
        leaves = jax.tree_util.tree_leaves(updates)
        if not leaves:
            return updates, state
        # Per-leaf norms first, then the norm of the norms: PyTorch's order of summation.
        leaf_dtypes = [jnp.asarray(g).dtype for g in leaves]
        widest = max(leaf_dtypes, key=lambda d: jnp.finfo(d).bits)
        dtype = accumulation_dtype(widest)
        norms = jnp.stack([_rounded_where_finite(_leaf_norm(g), d).astype(dtype)
                           for g, d in zip(leaves, leaf_dtypes)])
        total_norm = _rounded_where_finite(jnp.sqrt(jnp.sum(norms * norms)), widest)
        scale = jnp.minimum(max_norm / (total_norm + 1e-6), 1.0)
        updates = jax.tree_util.tree_map(lambda g: g * scale.astype(g.dtype), updates)
        return updates, state

    return Optimizer(init, update)
