"""`MultiheadAttention`: PyTorch's multi-head attention, its packed params, masks and init.

With E = embed_dim, H = num_heads and D = E / H, for a query `(L, N, E)` and key and value
`(S, N, E)` (PyTorch's notation; `(N, L, E)` with batch_first):

    q, k, v = query W_qᵀ + b_q, key W_kᵀ + b_k, value W_vᵀ + b_v      (W_q, W_k, W_v = in_proj_w)
    head_h  = softmax(q_h k_hᵀ / √D + bias) v_h    for each of the H slices of D features
    output  = concat(head_1, ..., head_H) W_oᵀ + b_o                  (W_o = out_proj_w)

Params are PyTorch's, in its `(out, in)` layout, so `in_proj_weight`, `in_proj_bias`,
`out_proj.weight` and `out_proj.bias` copy across unchanged: `{"in_proj_w": (3E, E),
"in_proj_b": (3E,), "out_proj_w": (E, E), "out_proj_b": (E,)}` (no biases with `bias=False`).
Init as PyTorch's `_reset_parameters`: xavier-uniform `in_proj_w` (fans E and 3E), the
out-projection's weight as `nn.Linear`'s (uniform in ±1/√E), zero biases.
"""
import math

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from funcdl import ops
from funcdl.autodiff import Tensor
from funcdl.construction import recorded
from funcdl.nn import init as initializers
from funcdl.nn.init import compute_fans
from funcdl.nn.layers import _param_dtype
from funcdl.nn.layout_hints import batch_first_hint, features_hint
from funcdl.nn.model import Model, check_key, check_params, named_model, sample_struct


def check_sequence(name, shape, what, layout, features, features_name):
    """ValueError unless `shape` is `layout` (batched) or `(L, E)` (unbatched) with `features`
    on its last axis (the size the params were made for, called `features_name`)."""
    if len(shape) not in (2, 3):
        raise ValueError(f"{name}: {what} must have shape {layout} or (L, E) unbatched, got "
                         f"{tuple(shape)}")
    if shape[-1] != features:
        raise ValueError(f"{name}: {what} has {shape[-1]} features (its last axis), but the "
                         f"params were made for {features_name} {features}"
                         f"{features_hint(shape, features)}")


def _as_additive(mask, dtype):
    """A bool mask (True: masked out) as 0 / -inf of `dtype`; a float mask as it is."""
    return jnp.where(mask, -jnp.inf, 0.0).astype(dtype) if mask.dtype == jnp.bool_ else mask


def _check_mask(mask, argument, shapes, dtype, name, hint=lambda shape: ""):
    """`mask` (None, or a bool / `dtype` array of one of `shapes`) as an array or Tensor;
    `hint(shape)` is added to the message of a mask of another shape."""
    if mask is None:
        return None
    if not hasattr(mask, "shape") or not hasattr(mask, "dtype"):
        raise TypeError(f"{name}: `{argument}` must be a bool or float array, got "
                        f"{type(mask).__name__}")
    if not isinstance(mask, Tensor):
        mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_ and mask.dtype != dtype:
        raise TypeError(f"{name}: `{argument}` must be a bool array (True: masked out) or a "
                        f"float array of the query's dtype {dtype} (added to the scores), got "
                        f"dtype {mask.dtype}")
    if tuple(mask.shape) not in shapes.values():
        expected = " or ".join(f"{label} = {shape}" for label, shape in shapes.items())
        raise ValueError(f"{name}: `{argument}` must have shape {expected}, got "
                         f"{tuple(mask.shape)}{hint(tuple(mask.shape))}")
    return mask


@recorded
def MultiheadAttention(embed_dim: int, num_heads: int, *, bias: bool = True,
                       batch_first: bool = False, dropout: float = 0.0,
                       dtype: DTypeLike | None = None) -> Model:
    """Multi-head attention, as `torch.nn.MultiheadAttention` (the math and the params are in
    the module docstring).

    ``apply(params, x, *, key=None, train=False, attn_mask=None, key_padding_mask=None,
    is_causal=False)``:

    x: one array `(L, N, E)` for self-attention (`(N, L, E)` with batch_first, `(L, E)`
    unbatched), or `(query, key, value)` for cross-attention, key and value `(S, N, E)` of
    one shape. Returns the attention output, the query's shape (PyTorch's output with
    ``need_weights=False``).
    attn_mask: `(L, S)` or `(N·num_heads, L, S)` (`(num_heads, L, S)` unbatched);
    key_padding_mask: `(N, S)` (`(S,)` unbatched). Bool masks: True is masked out (PyTorch's
    convention for this layer); float masks (the query's dtype) are added to the scores; the
    two are added together when both are given. A query with every key masked out gets zeros
    before the out-projection (its bias only), as PyTorch.
    is_causal: alone, query i attends to keys j <= i; with ``attn_mask`` it is PyTorch's hint
    that the mask is causal, and the mask given is what is applied.
    dropout: on the attention weights, with ``train=True`` only (it then needs ``key``).
    dtype: the params' dtype (default: the sample's floating dtype, else float32).

    Raises:
      ValueError: `embed_dim` not divisible by `num_heads`; an input whose feature size
        differs from the params' (naming both); masks of the wrong shape.
      TypeError: masks neither bool nor of the query's dtype.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from funcdl import nn
        >>> attention = nn.MultiheadAttention(8, 2, batch_first=True)
        >>> x = jnp.ones((4, 5, 8))  # (N, L, E)
        >>> params = attention.init(jax.random.key(0), x)
        >>> {name: p.shape for name, p in sorted(params.items())}
        {'in_proj_b': (24,), 'in_proj_w': (24, 8), 'out_proj_b': (8,), 'out_proj_w': (8, 8)}
        >>> attention.apply(params, x, is_causal=True).shape
        (4, 5, 8)

    PyTorch: ``torch.nn.MultiheadAttention(embed_dim, num_heads, dropout, bias,
    batch_first=batch_first)`` with ``need_weights=False``.
    """
    for argument, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"MultiheadAttention: `{argument}` must be an int >= 1, got {value!r}")
    if embed_dim % num_heads:
        raise ValueError(f"MultiheadAttention: `embed_dim` ({embed_dim}) must be divisible by "
                         f"`num_heads` ({num_heads})")
    for argument, value in (("bias", bias), ("batch_first", batch_first)):
        if not isinstance(value, bool):
            raise TypeError(f"MultiheadAttention: `{argument}` must be a bool, got {value!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
        raise ValueError(f"MultiheadAttention: `dropout` must be a number in [0, 1], got {dropout!r}")
    options = [f"{k}={v}" for k, v, d in (("bias", bias, True), ("batch_first", batch_first, False),
                                           ("dropout", dropout, 0.0)) if v != d]
    name = f"MultiheadAttention({', '.join([str(embed_dim), str(num_heads)] + options)})"
    E, H, D = embed_dim, num_heads, embed_dim // num_heads
    keys = ["in_proj_b", "in_proj_w", "out_proj_b", "out_proj_w"] if bias else [
        "in_proj_w", "out_proj_w"]
    draw_in = initializers.xavier_uniform()
    draw_out = initializers.kaiming_uniform(a=math.sqrt(5))
    layout = "(N, L, E)" if batch_first else "(L, N, E)"

    def check_features(shape, what):
        check_sequence(name, shape, what, layout, E, "embed_dim")

    def init(key, x):
        check_key(key, name)
        query = sample_struct(x[0] if isinstance(x, (tuple, list)) else x, name)
        check_features(query.shape, "the sample input `x`")
        param_dtype = _param_dtype(dtype, query.dtype, name)
        in_key, out_key = jax.random.split(key)
        fan_in, fan_out = compute_fans((3 * E, E), "out_in")
        params = {"in_proj_w": draw_in(in_key, (3 * E, E), param_dtype, fan_in=fan_in,
                                       fan_out=fan_out),
                  "out_proj_w": draw_out(out_key, (E, E), param_dtype, fan_in=E, fan_out=E)}
        if bias:
            params["in_proj_b"] = jnp.zeros((3 * E,), param_dtype)
            params["out_proj_b"] = jnp.zeros((E,), param_dtype)
        return params

    def split_input(x):
        if isinstance(x, (tuple, list)):
            if len(x) != 3:
                raise TypeError(f"{name}: `x` must be one array (self-attention) or (query, key, "
                                f"value), got a {type(x).__name__} of {len(x)}")
            return tuple(x), False
        if not hasattr(x, "shape"):
            raise TypeError(f"{name}: `x` must be an array or (query, key, value), got "
                            f"{type(x).__name__}")
        return (x, x, x), True

    def project(params, x, rows):
        """x `(N, L, E)` @ in_proj_w[rows]ᵀ (+ in_proj_b[rows])."""
        y = ops.matmul(x, ops.transpose(params["in_proj_w"][rows]))
        return y + ops.reshape(params["in_proj_b"][rows], (1, 1, -1)) if bias else y

    def apply(params, x, *, key=None, train=False, attn_mask: jax.Array | None = None,
              key_padding_mask: jax.Array | None = None, is_causal: bool = False):
        check_params(params, keys, name)
        if tuple(params["in_proj_w"].shape) != (3 * E, E):
            raise ValueError(f"{name}: `params['in_proj_w']` must have shape {(3 * E, E)}, got "
                             f"{tuple(params['in_proj_w'].shape)}")
        (query, key_, value), self_attention = split_input(x)
        check_features(query.shape, "the query" if not self_attention else "`x`")
        check_features(key_.shape, "the key")
        if tuple(key_.shape) != tuple(value.shape):
            raise ValueError(f"{name}: the key and the value must have one shape, got "
                             f"{tuple(key_.shape)} and {tuple(value.shape)}")
        if len(key_.shape) != len(query.shape):
            raise ValueError(f"{name}: the query, key and value must all be batched or all "
                             f"unbatched, got shapes {tuple(query.shape)} and {tuple(key_.shape)}")
        if not query.dtype == key_.dtype == value.dtype:
            raise TypeError(f"{name}: the query, key and value must have one dtype, got "
                            f"{query.dtype}, {key_.dtype} and {value.dtype}")
        if not isinstance(is_causal, bool):
            raise TypeError(f"{name}: `is_causal` must be a bool, got {is_causal!r}")
        unbatched = len(query.shape) == 2
        if unbatched:
            query, key_, value = (ops.expand_dims(a, 0) for a in (query, key_, value))
        elif not batch_first:
            query, key_, value = (ops.transpose(a, (1, 0, 2)) for a in (query, key_, value))
        N, L, S = query.shape[0], query.shape[1], key_.shape[1]
        # the sizes N, L, S would have with the input's first two axes the other way round
        swapped = None if unbatched else (L, N, key_.shape[0])
        if key_.shape[0] != N:
            raise ValueError(f"{name}: the query and the key must have one batch size, got "
                             f"{N} and {key_.shape[0]}"
                             f"{batch_first_hint(batch_first, L == S)}")

        def layout_hint(shape_of, shape):
            fits = swapped is not None and shape == shape_of(*swapped)
            return batch_first_hint(batch_first, fits)

        attn_mask = _check_mask(attn_mask, "attn_mask", {"(L, S)": (L, S), (
            "(num_heads, L, S)" if unbatched else "(N·num_heads, L, S)"): (N * H, L, S)},
            query.dtype, name, lambda shape: layout_hint(lambda n, l, s: (l, s), shape))
        key_padding_mask = _check_mask(key_padding_mask, "key_padding_mask",
                                       {"(S,)" if unbatched else "(N, S)": (S,) if unbatched
                                        else (N, S)}, query.dtype, name,
                                       lambda shape: layout_hint(lambda n, l, s: (n, s), shape))
        rate = dropout if train else 0.0
        if rate > 0 and key is None:
            raise ValueError(f"{name}: `key` is required when train=True and dropout > 0 "
                             f"(pass key=...)")

        thirds = (slice(0, E), slice(E, 2 * E), slice(2 * E, 3 * E))
        if self_attention:
            packed = project(params, query, slice(None))  # one matmul for q, k and v
            q, k, v = (packed[..., rows] for rows in thirds)
        else:
            q, k, v = (project(params, a, rows) for a, rows in zip((query, key_, value), thirds))
        q, k, v = (ops.transpose(ops.reshape(a, (N, a.shape[1], H, D)), (0, 2, 1, 3))
                   for a in (q, k, v))

        mask = None  # (N or 1, H or 1, L, S), SDPA's convention (bool: True takes part)
        if attn_mask is not None:
            mask = ops.reshape(attn_mask, (1, 1, L, S) if len(attn_mask.shape) == 2 else (N, H, L, S))
        elif is_causal and key_padding_mask is not None:
            mask = jnp.triu(jnp.ones((1, 1, L, S), jnp.bool_), k=1)
        if key_padding_mask is not None:
            padding = ops.reshape(key_padding_mask, (N, 1, 1, S))
            if mask is not None and mask.dtype == padding.dtype == jnp.bool_:
                mask = mask | padding
            elif mask is not None:
                mask = _as_additive(mask, query.dtype) + _as_additive(padding, query.dtype)
            else:
                mask = padding
        if mask is not None and mask.dtype == jnp.bool_:
            mask = ~mask
        out = ops.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal and mask is None, dropout_p=rate,
            key=key)
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (N, L, E))
        out = ops.matmul(out, ops.transpose(params["out_proj_w"]))
        if bias:
            out = out + ops.reshape(params["out_proj_b"], (1, 1, E))
        if unbatched:
            return ops.squeeze(out, 0)
        return out if batch_first else ops.transpose(out, (1, 0, 2))

    return named_model(name, init, apply)
