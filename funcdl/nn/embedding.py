"""`Embedding`: a lookup table of vectors, as `torch.nn.Embedding`, through `fdl.ops.take`."""
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from funcdl import ops
from funcdl.construction import recorded
from funcdl.nn import init as initializers
from funcdl.nn.layers import _param_dtype, layer_initializer
from funcdl.nn.model import check_input, check_key, named_model, sample_struct


@recorded
def Embedding(num_embeddings, embedding_dim, *, w_init=initializers.normal(1.0), dtype=None):
    """Rows of a table: integer indices `(...)` in [0, num_embeddings) -> `(..., embedding_dim)`.

    params: ``{"w": (num_embeddings, embedding_dim)}``, initialised N(0, 1) as PyTorch.
    w_init: an initializer (see ``fdl.nn.init``), given PyTorch's fans of that weight,
    fan_in = embedding_dim and fan_out = num_embeddings.
    y[..., :] = w[x[...], :]. The gradient of w scatter-adds: a row looked up k times receives
    the sum of its k cotangents. An index out of range is a ValueError when `x` is concrete;
    under `jit` (values unknown) it gives NaN rows, never another row.
    dtype: the params' dtype (default float32, or the sample's dtype when it is floating).

    PyTorch: ``torch.nn.Embedding(num_embeddings, embedding_dim)``.
    """
    for argument, value in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"Embedding: `{argument}` must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"Embedding: `{argument}` must be >= 1, got {value}")
    name = f"Embedding({num_embeddings}, {embedding_dim})"
    draw_w = layer_initializer(w_init, "w_init", name)

    def init(key, x):
        check_key(key, name)
        x = sample_struct(x, name)
        param_dtype = _param_dtype(dtype, x.dtype, name)
        shape = (num_embeddings, embedding_dim)  # PyTorch's weight: (out, in) for the fans
        return {"w": draw_w(key, shape, param_dtype, *initializers.compute_fans(shape, "out_in"))}

    def apply(params, x, *, key=None, train=False):
        if not isinstance(params, Mapping):
            raise TypeError(f"{name}: `params` must be a dict with key ['w'], got {type(params).__name__}")
        if sorted(params) != ["w"]:
            raise ValueError(f"{name}: `params` must have key ['w'], got {sorted(params)}")
        check_input(x, name)
        if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
            raise TypeError(f"{name}: `x` must be an integer array of indices, got dtype "
                            f"{getattr(x, 'dtype', None)}")
        w = params["w"]
        if tuple(w.shape) != (num_embeddings, embedding_dim):
            raise ValueError(f"{name}: `params['w']` must have shape ({num_embeddings}, "
                             f"{embedding_dim}), got {tuple(w.shape)}")
        try:
            values = np.asarray(x)
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
            # Traced: send negative indices out of range too (take fills those with NaN).
            return ops.take(w, jnp.where(x < 0, num_embeddings, x), axis=0)
        bad = values[(values < 0) | (values >= num_embeddings)]
        if bad.size:
            raise ValueError(f"{name}: indices in `x` must lie in [0, {num_embeddings}), "
                             f"got {bad[:5].tolist()}")
        return ops.take(w, values, axis=0)

    return named_model(name, init, apply)
