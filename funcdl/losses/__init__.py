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
from funcdl.losses.binary import binary_cross_entropy, binary_cross_entropy_with_logits
from funcdl.losses.checks import REDUCTIONS  # noqa: F401 (the reduction names)
from funcdl.losses.classification import cross_entropy, nll_loss
from funcdl.losses.regression import huber_loss, l1_loss, mse_loss, smooth_l1_loss

__all__ = ["l1_loss", "mae", "mse_loss", "mse", "smooth_l1_loss", "huber_loss", "cross_entropy",
           "nll_loss", "binary_cross_entropy", "bce", "binary_cross_entropy_with_logits"]

mae = l1_loss
mse = mse_loss
bce = binary_cross_entropy
