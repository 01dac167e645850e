"""Gradient clipping by the global 2-norm, as `torch.nn.utils.clip_grad_norm_`."""
import jax
import jax.numpy as jnp

from funcdl.optim.base import EmptyState, Optimizer


def clip_by_global_norm(max_norm: float) -> Optimizer:
    """Rescale all gradients together so that their joint 2-norm is at most about `max_norm`:

        total_norm = || (||g_1||_2, ..., ||g_n||_2) ||_2   (over every leaf of the pytree),
        g_i <- g_i min(1, max_norm / (total_norm + 1e-6)).

    The per-leaf norms are combined in the widest of the leaves' dtypes, and the scale is cast
    to each leaf's dtype. Gradients already inside the ball are still multiplied by 1 (exactly
    as PyTorch, which avoids a branch).
    Put it first in a chain: `chain(clip_by_global_norm(1.0), adam(1e-3))`.

    Args:
      max_norm: the largest allowed total norm, > 0.

    >>> import jax.numpy as jnp
    >>> opt = clip_by_global_norm(1.0)
    >>> grads = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
    >>> clipped, _ = opt.update(grads, opt.init(grads))
    >>> [round(float(clipped[k][0]), 4) for k in "ab"]
    [0.6, 0.8]

    PyTorch: torch.nn.utils.clip_grad_norm_(parameters, max_norm) before optimizer.step().
    """
    if not max_norm > 0:
        raise ValueError(f"`max_norm` must be > 0, got {max_norm}")

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        leaves = jax.tree_util.tree_leaves(updates)
        if not leaves:
            return updates, state
        # Per-leaf norms first, then the norm of the norms: PyTorch's order of summation.
        norms = [jnp.sqrt(jnp.sum(g * g)) for g in leaves]
        dtype = max((norm.dtype for norm in norms), key=lambda d: jnp.finfo(d).bits)
        norms = jnp.stack([norm.astype(dtype) for norm in norms])
        total_norm = jnp.sqrt(jnp.sum(norms * norms))
        scale = jnp.minimum(max_norm / (total_norm + 1e-6), 1.0)
        updates = jax.tree_util.tree_map(lambda g: g * scale.astype(g.dtype), updates)
        return updates, state

    return Optimizer(init, update)
