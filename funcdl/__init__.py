"""funcdl: a JAX-accelerated functional deep-learning framework.

    import funcdl as fdl
    params = model.init(key, x); y = model.apply(params, x)

Submodules: `autodiff` (funcdl's own reverse-mode autodiff), `ops` (one op namespace for both
autodiffs), `gradcheck` (autodiff vs jax.grad vs finite differences), `nn` (models as pure
functions), `losses` (PyTorch semantics), `optim` (hand-written optimizers, PyTorch's rules),
`metrics` (exact over any batching), `checkpoint` (pytrees in safetensors files, written atomically), `train` (compiled training:
steps, scan-fused epochs, `fit`), `datasets` (small real data sets shipped in the package).
"""
__version__ = "0.1.0"

from funcdl import autodiff, ops  # noqa: E402  (the bottom layer first)
from funcdl import tensor_methods  # noqa: E402,F401  (Tensor's array methods, from ops' side)
from funcdl import gradcheck, losses, metrics, nn, optim  # noqa: E402
from funcdl import checkpoint, datasets  # noqa: E402
from funcdl import train  # noqa: E402  (on top of all of the above)

__all__ = ["__version__", "autodiff", "ops", "gradcheck", "losses", "metrics", "nn", "optim",
           "checkpoint", "datasets", "train"]
