"""`Embedding`: a lookup table of vectors, as `torch.nn.Embedding`, through `fdl.ops.take`."""
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from funcdl import ops
from funcdl.construction import recorded
from funcdl.nn import init as initializers
from funcdl.nn.init import Initializer
from funcdl.nn.layers import _param_dtype, layer_initializer
from funcdl.nn.model import Model, check_input, check_key, named_model, sample_struct


@recorded
def Embedding(num_embeddings: int, embedding_dim: int, *, padding_idx: int | None = None,
              max_norm: float | None = None, w_init: Initializer = initializers.normal(1.0),
              dtype: DTypeLike | None = None) -> Model:
    """Rows of a table: integer indices `(...)` in [0, num_embeddings) -> `(..., embedding_dim)`.

    params: ``{"w": (num_embeddings, embedding_dim)}``, initialised N(0, 1) as PyTorch.
    w_init: an initializer (see ``fdl.nn.init``), given PyTorch's fans of that weight,
    fan_in = embedding_dim and fan_out = num_embeddings.
    y[..., :] = w[x[...], :]. The gradient of w scatter-adds: a row looked up k times receives
    the sum of its k cotangents. An index out of range is a ValueError when `x` is concrete;
    under `jit` (values unknown) it gives NaN rows, never another row.
    dtype: the params' dtype (default float32, or the sample's dtype when it is floating).
    padding_idx: a row (negative counts from the end) that is zero at init and never gets a
    gradient, as PyTorch's (for padding tokens).
    max_norm: rows looked up with a Euclidean norm above it are scaled to norm `max_norm` in
    the output, by max_norm / (norm + 1e-7) as PyTorch's `embedding_renorm_`; PyTorch
    rewrites those rows of the table, a pure function cannot, so here the table is unchanged
    and the output is what PyTorch returns. The gradient is PyTorch's too: the cotangent of
    each looked-up row, as if the scaled row were the table's (the scale is a constant).

    PyTorch: ``torch.nn.Embedding(num_embeddings, embedding_dim)``.
    """
    for argument, value in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"Embedding: `{argument}` must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"Embedding: `{argument}` must be >= 1, got {value}")
    if padding_idx is not None:
        if isinstance(padding_idx, bool) or not isinstance(padding_idx, int):
            raise TypeError(f"Embedding: `padding_idx` must be an int or None, got "
                            f"{padding_idx!r}")
        if not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(f"Embedding: `padding_idx` must be within num_embeddings "
                             f"[-{num_embeddings}, {num_embeddings}), got {padding_idx}")
        padding_idx %= num_embeddings
    if max_norm is not None and (isinstance(max_norm, bool) or not isinstance(
            max_norm, (int, float)) or not max_norm > 0):
        raise ValueError(f"Embedding: `max_norm` must be a number > 0 or None, got {max_norm!r}")
    options = "".join(f", {k}={v!r}" for k, v in (("padding_idx", padding_idx),
                                                   ("max_norm", max_norm)) if v is not None)
    name = f"Embedding({num_embeddings}, {embedding_dim}{options})"
    draw_w = layer_initializer(w_init, "w_init", name)

    def init(key, x):
        check_key(key, name)
        x = sample_struct(x, name)
        param_dtype = _param_dtype(dtype, x.dtype, name)
        shape = (num_embeddings, embedding_dim)  # PyTorch's weight: (out, in) for the fans
        w = draw_w(key, shape, param_dtype, *initializers.compute_fans(shape, "out_in"))
        if padding_idx is not None:
            w = w.at[padding_idx].set(0)
        return {"w": w}

    def looked_up(w, indices):
        rows = ops.take(w, indices, axis=0)
        if padding_idx is not None:  # the padding row's value, without a gradient
            keep = (indices != padding_idx)[..., None]
            rows = ops.where(keep, rows, ops.stop_gradient(rows))
        if max_norm is not None:
            norms = ops.sqrt(ops.sum(ops.square(ops.stop_gradient(rows)), axis=-1,
                                     keepdims=True))
            scale = jnp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)
            rows = rows + ops.stop_gradient(rows * scale.astype(rows.dtype) - rows)
        return rows

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
            return looked_up(w, jnp.where(x < 0, num_embeddings, x))
        bad = values[(values < 0) | (values >= num_embeddings)]
        if bad.size:
            raise ValueError(f"{name}: indices in `x` must lie in [0, {num_embeddings}), "
                             f"got {bad[:5].tolist()}")
        return looked_up(w, values)

    return named_model(name, init, apply)
