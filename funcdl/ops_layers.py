"""The layer ops of `fdl.ops`: convolution, pooling, erf, gelu, silu, take and attention.

Each takes arrays or `fdl.autodiff.Tensor`s, as every op in `fdl.ops` does, checks its
arguments where the shapes are first known (at trace time) and dispatches to the primitive of
the same name (`funcdl/autodiff/vjps_layers.py`). Layouts and numerics are PyTorch's
(`torch.nn.functional`): channels first, kernels `(C_out, C_in // groups, *k)`.

    >>> import jax.numpy as jnp, funcdl as fdl
    >>> x, w = jnp.ones((1, 2, 5, 5)), jnp.ones((4, 2, 3, 3))
    >>> fdl.ops.conv2d(x, w, padding=1).shape
    (1, 4, 5, 5)
    >>> fdl.ops.max_pool2d(jnp.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0]
    Array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
"""
import jax
import jax.numpy as jnp
import numpy as np

from funcdl.annotations import Operand, Result
from funcdl.autodiff import Tensor, apply

__all__ = ["conv1d", "conv2d", "max_pool2d", "avg_pool2d", "erf", "gelu", "silu", "take",
           "scaled_dot_product_attention"]


def _as_operand(x, name, where):
    """x as a Tensor or jax array with a floating dtype; TypeError naming `name` otherwise."""
    if not isinstance(x, Tensor):
        if not hasattr(x, "shape"):
            raise TypeError(f"{where}: `{name}` must be an array or Tensor, got {type(x).__name__}")
        x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{where}: `{name}` must have a floating-point dtype, got {x.dtype}")
    return x


def int_tuple(value, n, name, where, minimum):
    """An int or a sequence of n ints (each >= minimum) as a tuple of n ints."""
    values = (value,) * n if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(values, (tuple, list)) or len(values) != n
            or any(isinstance(v, bool) or not isinstance(v, int) for v in values)):
        raise TypeError(f"{where}: `{name}` must be an int or a tuple of {n} ints, got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"{where}: `{name}` must be >= {minimum}, got {value!r}")
    return tuple(values)


def _batched(x, spatial, name, where):
    """(x with a batch axis, whether one was added): `(C, *s)` is accepted as PyTorch does."""
    if len(x.shape) == spatial + 1:
        return apply("reshape", x, shape=(1, *x.shape)), True
    if len(x.shape) != spatial + 2:
        axes = "(N, C, " + ", ".join("HW"[-spatial:] if spatial <= 2 else "D" * spatial) + ")"
        raise ValueError(f"{where}: `{name}` must have shape {axes} or the unbatched form without "
                         f"N, got {tuple(x.shape)}")
    return x, False


def _check_fits(size, padding, reach, where):
    """ValueError when a (dilated) window is larger than the padded input."""
    for n, (lo, hi), k in zip(size, padding, reach):
        if n + lo + hi < k:
            raise ValueError(f"{where}: the kernel (extent {tuple(reach)} with dilation) is larger "
                             f"than the padded input (spatial size {tuple(size)} with padding "
                             f"{tuple(padding)})")


# ---- convolution --------------------------------------------------------------------------
def _conv(where, spatial, x, w, b, stride, padding, dilation, groups):
    x, w = _as_operand(x, "x", where), _as_operand(w, "w", where)
    if x.dtype != w.dtype:
        raise TypeError(f"{where}: `x` and `w` must have the same dtype, got {x.dtype} and {w.dtype}")
    x, unbatched = _batched(x, spatial, "x", where)
    if len(w.shape) != spatial + 2:
        raise ValueError(f"{where}: `w` must have shape (C_out, C_in // groups, {spatial} kernel "
                         f"sizes), got {tuple(w.shape)}")
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"{where}: `groups` must be an int, got {type(groups).__name__}")
    if groups < 1 or x.shape[1] % groups or w.shape[0] % groups:
        raise ValueError(f"{where}: `groups` must be >= 1 and divide both the input channels "
                         f"({x.shape[1]}) and the output channels ({w.shape[0]}), got {groups}")
    if w.shape[1] * groups != x.shape[1]:
        raise ValueError(f"{where}: `x` has {x.shape[1]} channels but `w` of shape "
                         f"{tuple(w.shape)} with groups={groups} expects {w.shape[1] * groups}")
    stride = int_tuple(stride, spatial, "stride", where, 1)
    dilation = int_tuple(dilation, spatial, "dilation", where, 1)
    window = tuple(w.shape[2:])
    reach = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
    if padding == "valid":
        pads = ((0, 0),) * spatial
    elif padding == "same":
        if stride != (1,) * spatial:
            raise ValueError(f"{where}: `padding='same'` needs stride 1 (as PyTorch), got {stride}")
        pads = tuple(((r - 1) // 2, r - 1 - (r - 1) // 2) for r in reach)
    elif isinstance(padding, str):
        raise ValueError(f"{where}: `padding` must be 'valid', 'same', an int or a tuple of "
                         f"{spatial} ints, got {padding!r}")
    else:
        pads = tuple((p, p) for p in int_tuple(padding, spatial, "padding", where, 0))
    _check_fits(x.shape[2:], pads, reach, where)
    y = apply("conv", x, w, stride=stride, padding=pads, dilation=dilation, groups=groups)
    if b is not None:
        b = _as_operand(b, "b", where)
        if tuple(b.shape) != (w.shape[0],):
            raise ValueError(f"{where}: `b` must have shape ({w.shape[0]},), got {tuple(b.shape)}")
        y = y + apply("reshape", b, shape=(1, w.shape[0]) + (1,) * spatial)
    return apply("reshape", y, shape=tuple(y.shape[1:])) if unbatched else y


def conv2d(x: Operand, w: Operand, b: Operand | None = None, stride: int | tuple[int, ...] = 1,
           padding: int | tuple[int, ...] | str = 0, dilation: int | tuple[int, ...] = 1,
           groups: int = 1) -> Result:
    """2-D cross-correlation, as `torch.nn.functional.conv2d`.

    x: `(N, C_in, H, W)` or unbatched `(C_in, H, W)`; w: `(C_out, C_in // groups, kh, kw)`;
    b: `(C_out,)` or None -> `(N, C_out, H_out, W_out)` with
    H_out = ⌊(H + 2 p - d (kh - 1) - 1) / s⌋ + 1 (likewise W).
    y[n, o, i, j] = b[o] + Σ_{c, u, v} xpad[n, g(o) C_in/groups + c, i s + u d, j s + v d] w[o, c, u, v].
    stride, dilation: int or pair; padding: int, pair, "valid" (0) or "same" (output size =
    input size, stride 1 only; an odd total goes to the end, as PyTorch); groups divides C_in
    and C_out.
    """
    return _conv("conv2d", 2, x, w, b, stride, padding, dilation, groups)


def conv1d(x: Operand, w: Operand, b: Operand | None = None, stride: int | tuple[int, ...] = 1,
           padding: int | tuple[int, ...] | str = 0, dilation: int | tuple[int, ...] = 1,
           groups: int = 1) -> Result:
    """1-D cross-correlation, as `torch.nn.functional.conv1d`: x `(N, C_in, L)` or `(C_in, L)`,
    w `(C_out, C_in // groups, k)`, b `(C_out,)` or None -> `(N, C_out, L_out)`; arguments as
    `conv2d` with one int per argument."""
    return _conv("conv1d", 1, x, w, b, stride, padding, dilation, groups)


# ---- pooling ------------------------------------------------------------------------------
def _pool(name, x, kernel_size, stride, padding):
    x = _as_operand(x, "x", name)
    x, unbatched = _batched(x, 2, "x", name)
    window = int_tuple(kernel_size, 2, "kernel_size", name, 1)
    stride = window if stride is None else int_tuple(stride, 2, "stride", name, 1)
    pad = int_tuple(padding, 2, "padding", name, 0)
    if any(2 * p > k for p, k in zip(pad, window)):
        raise ValueError(f"{name}: `padding` must be at most half of `kernel_size` (as PyTorch), "
                         f"got padding {pad} for kernel_size {window}")
    pads = tuple((p, p) for p in pad)
    _check_fits(x.shape[2:], pads, window, name)
    y = apply(name, x, window=window, stride=stride, padding=pads)
    return apply("reshape", y, shape=tuple(y.shape[1:])) if unbatched else y


def max_pool2d(x: Operand, kernel_size: int | tuple[int, ...],
               stride: int | tuple[int, ...] | None = None,
               padding: int | tuple[int, ...] = 0) -> Result:
    """Max over kh × kw windows, as `torch.nn.functional.max_pool2d` (padding with -inf).

    x: `(N, C, H, W)` or `(C, H, W)` -> `(N, C, H_out, W_out)`, H_out = ⌊(H + 2 p - kh) / s⌋ + 1.
    kernel_size, stride (default kernel_size), padding (at most half the kernel): int or pair.
    The gradient of each window goes to its first maximal element in row-major window order
    (PyTorch's tie rule).
    """
    return _pool("max_pool2d", x, kernel_size, stride, padding)


def avg_pool2d(x: Operand, kernel_size: int | tuple[int, ...],
               stride: int | tuple[int, ...] | None = None,
               padding: int | tuple[int, ...] = 0) -> Result:
    """Mean over kh × kw windows, as `torch.nn.functional.avg_pool2d` with
    count_include_pad=True (zero padding counts: every window divides by kh · kw).

    x: `(N, C, H, W)` or `(C, H, W)` -> `(N, C, H_out, W_out)`; arguments as `max_pool2d`.
    """
    return _pool("avg_pool2d", x, kernel_size, stride, padding)


# ---- elementwise --------------------------------------------------------------------------
def erf(x: Operand) -> Result:
    """The error function 2/√π ∫₀ˣ e^{-t²} dt; derivative 2/√π e^{-x²}."""
    return apply("erf", _as_operand(x, "x", "erf"))


def gelu(x: Operand, approximate: str = "none") -> Result:
    """GELU, as `torch.nn.functional.gelu`: x Φ(x) = x/2 (1 + erf(x/√2)) for
    approximate="none", x/2 (1 + tanh(√(2/π) (x + 0.044715 x³))) for "tanh"."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: `approximate` must be 'none' or 'tanh', got {approximate!r}")
    return apply("gelu", _as_operand(x, "x", "gelu"), approximate=approximate)


def silu(x: Operand) -> Result:
    """SiLU (swish), x σ(x); derivative σ(x) (1 + x (1 - σ(x)))."""
    return apply("silu", _as_operand(x, "x", "silu"))


# ---- gather -------------------------------------------------------------------------------
def take(x: Operand, indices: Operand, axis: int = 0) -> Result:
    """Entries of x at integer `indices` along `axis`, as `jnp.take` / `torch.index_select`.

    x: `(*before, n, *after)`, indices: any shape of ints in [-n, n) ->
    `(*before, *indices.shape, *after)`. The gradient scatter-adds: an index taken k times
    receives the sum of its k cotangents. Out-of-range indices are a ValueError when `indices`
    is concrete; under `jit` (values unknown) they give NaN, never a wrong finite number.
    """
    x = _as_operand(x, "x", "take")
    if isinstance(indices, Tensor) or not jnp.issubdtype(jnp.result_type(indices), jnp.integer):
        raise TypeError(f"take: `indices` must be an integer array, got {type(indices).__name__} "
                        f"of dtype {getattr(indices, 'dtype', None)}")
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"take: `axis` must be an int, got {type(axis).__name__}")
    if not -len(x.shape) <= axis < len(x.shape):
        raise ValueError(f"take: `axis` {axis} is out of range for `x` of shape {tuple(x.shape)}")
    n = x.shape[axis]
    try:
        values = np.asarray(indices)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        values = None  # traced: checked at run time by the NaN fill
    if values is not None:
        bad = values[(values < -n) | (values >= n)]
        if bad.size:
            raise ValueError(f"take: `indices` must lie in [{-n}, {n}) for axis {axis} of size "
                             f"{n}, got {bad[:5].tolist()}")
        indices = jnp.asarray(np.where(values < 0, values + n, values))
    else:
        indices = jnp.where(indices < 0, indices + n, indices)
    return apply("take", x, indices, axis=axis % len(x.shape))


# ---- attention ----------------------------------------------------------------------------
def _attention_mask(mask, scores_shape, dtype):
    """`mask` checked against the scores `(..., L, S)` and given their rank (leading 1s)."""
    if isinstance(mask, Tensor):
        if mask.dtype != dtype:
            raise TypeError(f"scaled_dot_product_attention: a float `attn_mask` must have the "
                            f"query's dtype {dtype}, got {mask.dtype}")
    else:
        if not hasattr(mask, "shape"):
            raise TypeError(f"scaled_dot_product_attention: `attn_mask` must be a bool or float "
                            f"array, got {type(mask).__name__}")
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_ and mask.dtype != dtype:
            raise TypeError(f"scaled_dot_product_attention: `attn_mask` must be a bool array or "
                            f"a float array of the query's dtype {dtype}, got {mask.dtype}")
    shape = tuple(mask.shape)
    if len(shape) > len(scores_shape) or any(
            m not in (1, n) for m, n in zip(shape[::-1], scores_shape[::-1])):
        raise ValueError(f"scaled_dot_product_attention: `attn_mask` must broadcast to the "
                         f"attention scores' shape {tuple(scores_shape)} (..., L, S), got {shape}")
    if len(shape) < len(scores_shape):
        mask = apply("reshape", mask, shape=(1,) * (len(scores_shape) - len(shape)) + shape)
    return mask


def scaled_dot_product_attention(q: Operand, k: Operand, v: Operand, *,
                                 attn_mask: Operand | None = None, is_causal: bool = False,
                                 scale: float | None = None, dropout_p: float = 0.0,
                                 key: jax.Array | None = None) -> Result:
    """softmax(q kᵀ · scale + bias) v, as `torch.nn.functional.scaled_dot_product_attention`.

    q: `(..., L, E)`, k: `(..., S, E)`, v: `(..., S, Ev)` of one float dtype and rank, their
    batch axes broadcasting -> `(..., L, Ev)`. scale: default 1/√E.
    attn_mask: broadcastable to `(..., L, S)`; a bool mask says which scores take part (True:
    attend, False: masked out, as PyTorch's SDPA; note that `fdl.nn.MultiheadAttention`'s
    bool masks are the other way round, as PyTorch's), a float mask (the query's dtype) is
    added to the scores. is_causal: query i attends to keys j <= i only (the upper-left
    triangle, also for L != S); it cannot be combined with `attn_mask` (as PyTorch).
    A query whose every key is masked out gets zeros (and zero gradients), as PyTorch.
    dropout_p: dropout on the attention weights (kept ones scaled by 1/(1 - p)), which then
    needs a PRNG `key`; 0 (the default) is deterministic.

    Composed of `fdl.ops`' primitives (matmul, transpose, where, softmax), so both autodiffs
    differentiate it; a float mask is differentiated too when it is a Tensor.
    """
    where = "scaled_dot_product_attention"
    q, k, v = (_as_operand(a, name, where) for a, name in ((q, "q"), (k, "k"), (v, "v")))
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"{where}: `q`, `k` and `v` must have one dtype, got {q.dtype}, "
                        f"{k.dtype} and {v.dtype}")
    rank = len(q.shape)
    if rank < 2 or len(k.shape) != rank or len(v.shape) != rank:
        raise ValueError(f"{where}: `q`, `k` and `v` must have one rank >= 2, (..., L, E), "
                         f"(..., S, E) and (..., S, Ev), got shapes {tuple(q.shape)}, "
                         f"{tuple(k.shape)} and {tuple(v.shape)}")
    if k.shape[-1] != q.shape[-1] or v.shape[-2] != k.shape[-2]:
        raise ValueError(f"{where}: `k` must have shape (..., S, {q.shape[-1]}) and `v` "
                         f"(..., S, Ev) with the same S, got {tuple(k.shape)} and {tuple(v.shape)}")
    try:
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(f"{where}: the batch axes of `q`, `k` and `v` must broadcast, got shapes "
                         f"{tuple(q.shape)}, {tuple(k.shape)} and {tuple(v.shape)}") from None
    if not isinstance(is_causal, bool):
        raise TypeError(f"{where}: `is_causal` must be a bool, got {is_causal!r}")
    if is_causal and attn_mask is not None:
        raise ValueError(f"{where}: `attn_mask` and `is_causal=True` cannot both be given (as "
                         f"PyTorch): pass the causal mask or the flag")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0 <= dropout_p <= 1:
        raise ValueError(f"{where}: `dropout_p` must be a number in [0, 1], got {dropout_p!r}")
    L, S = q.shape[-2], k.shape[-2]
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    axes = tuple(range(rank - 2)) + (rank - 1, rank - 2)
    scores = apply("matmul", q, apply("transpose", k, axes=axes)) * float(scale)
    dead = None  # (..., L, 1): queries whose every key is masked out
    if is_causal:
        causal = jnp.tril(jnp.ones((L, S), jnp.bool_)).reshape((1,) * (rank - 2) + (L, S))
        scores = apply("where", causal, scores, -jnp.inf)
    elif attn_mask is not None:
        mask = _attention_mask(attn_mask, (*batch, L, S), q.dtype)
        if mask.dtype == jnp.bool_:
            scores = apply("where", mask, scores, -jnp.inf)
            dead = ~jnp.any(mask, axis=-1, keepdims=True)
        else:
            scores = scores + mask
            raw = mask.value if isinstance(mask, Tensor) else mask
            dead = jnp.all(raw == -jnp.inf, axis=-1, keepdims=True)
    if dead is not None:  # softmax over all -inf is NaN: such rows become 0, as PyTorch's
        scores = apply("where", dead, 0.0, scores)
    weights = apply("softmax", scores, axis=-1)
    if dead is not None:
        weights = apply("where", dead, 0.0, weights)
    if dropout_p > 0:
        if key is None:
            raise ValueError(f"{where}: `key` is required when `dropout_p` > 0 (pass key=...)")
        if dropout_p == 1:
            weights = weights * 0.0
        else:
            keep = jax.random.bernoulli(key, 1.0 - dropout_p, tuple(weights.shape))
            weights = apply("where", keep, weights * (1.0 / (1.0 - dropout_p)), 0.0)
    return apply("matmul", weights, v)
