"""`TransformerEncoderLayer` and `TransformerEncoder`: PyTorch's transformer encoder.

One layer, on x `(L, N, E)` (`(N, L, E)` with batch_first, `(L, E)` unbatched), with
SA = self-attention (`MultiheadAttention`), FF(x) = linear2(dropout(activation(linear1(x))))
and dropout1/dropout2 after each block (PyTorch's computation, step for step):

    norm_first=False (post-norm):  x = norm1(x + SA(x));        x = norm2(x + FF(x))
    norm_first=True  (pre-norm):   x = x + SA(norm1(x));        x = x + FF(norm2(x))

Params: ``{"self_attn": <MultiheadAttention params, PyTorch's (out, in) layout>,
"linear1": {"w": (E, F), "b": (F,)}, "linear2": {"w": (F, E), "b": (E,)},
"norm1": {"w": (E,), "b": (E,)}, "norm2": {...}}`` (F = dim_feedforward; the linears in
`Linear`'s ``(in, out)`` layout, so PyTorch's ``linear1.weight`` is ``w.T``; no ``"b"`` with
``bias=False``). Init as PyTorch's: the attention's, `Linear`'s (uniform in ±1/√in), LayerNorm
ones and zeros. With dropout 0 (or ``train=False``) the outputs and gradients equal PyTorch's.
"""
import jax
from jax.typing import DTypeLike

from funcdl import ops
from funcdl.construction import recorded
from funcdl.nn import init as initializers
from funcdl.nn.attention import MultiheadAttention, check_sequence
from funcdl.nn.layers import Linear, _param_dtype
from funcdl.nn.model import Model, check_key, check_params, named_model, sample_struct

ACTIVATIONS = {"relu": ops.relu, "gelu": ops.gelu}


def _layer_norm(params, x, eps):
    """LayerNorm over the last axis, PyTorch's numerics (biased variance); `b` optional."""
    centred = x - ops.mean(x, axis=-1, keepdims=True)
    variance = ops.mean(centred * centred, axis=-1, keepdims=True)
    lead = (1,) * (len(x.shape) - 1)
    y = centred / ops.sqrt(variance + eps) * ops.reshape(params["w"], lead + (-1,))
    return y + ops.reshape(params["b"], lead + (-1,)) if "b" in params else y


def _dropout(x, rate, key):
    if rate == 0 or key is None:
        return x
    if rate == 1:
        return x * 0.0
    keep = jax.random.bernoulli(key, 1.0 - rate, tuple(x.shape))
    return ops.where(keep, x * (1.0 / (1.0 - rate)), 0.0)


@recorded
def TransformerEncoderLayer(d_model: int, nhead: int, *, dim_feedforward: int = 2048,
                            dropout: float = 0.1, activation: str = "relu",
                            layer_norm_eps: float = 1e-5, batch_first: bool = False,
                            norm_first: bool = False, bias: bool = True,
                            dtype: DTypeLike | None = None) -> Model:
    """A transformer encoder layer, as `torch.nn.TransformerEncoderLayer` (the computation
    and the params are in the module docstring).

    ``apply(params, x, *, key=None, train=False, src_mask=None, src_key_padding_mask=None,
    is_causal=False)``: x `(L, N, E)` (`(N, L, E)` with batch_first, `(L, E)` unbatched) ->
    the same shape. The masks are `MultiheadAttention`'s ``attn_mask`` `(L, L)` or
    `(N·nhead, L, L)` and ``key_padding_mask`` `(N, L)` (bool: True is masked out; float:
    added); ``is_causal`` alone applies the causal mask. Dropout (rate ``dropout``, on the
    attention weights and after each block) only with ``train=True``, which then needs
    ``key``.
    activation: ``"relu"`` or ``"gelu"`` (the exact, erf form). dtype: the params' dtype.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from funcdl import nn
        >>> layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True)
        >>> x = jnp.ones((2, 5, 16))  # (N, L, E)
        >>> params = layer.init(jax.random.key(0), x)
        >>> sorted(params), params["linear1"]["w"].shape
        (['linear1', 'linear2', 'norm1', 'norm2', 'self_attn'], (16, 32))
        >>> layer.apply(params, x, is_causal=True).shape
        (2, 5, 16)

    PyTorch: ``torch.nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout,
    activation, layer_norm_eps, batch_first, norm_first, bias)``.
    """
    where = "TransformerEncoderLayer"
    for argument, value in (("d_model", d_model), ("nhead", nhead),
                            ("dim_feedforward", dim_feedforward)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: `{argument}` must be an int >= 1, got {value!r}")
    if d_model % nhead:
        raise ValueError(f"{where}: `d_model` ({d_model}) must be divisible by `nhead` ({nhead})")
    if activation not in ACTIVATIONS:
        raise ValueError(f"{where}: `activation` must be 'relu' or 'gelu', got {activation!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
        raise ValueError(f"{where}: `dropout` must be a number in [0, 1], got {dropout!r}")
    if isinstance(layer_norm_eps, bool) or not isinstance(layer_norm_eps, (int, float)) or not layer_norm_eps >= 0:
        raise ValueError(f"{where}: `layer_norm_eps` must be a number >= 0, got {layer_norm_eps!r}")
    for argument, value in (("batch_first", batch_first), ("norm_first", norm_first), ("bias", bias)):
        if not isinstance(value, bool):
            raise TypeError(f"{where}: `{argument}` must be a bool, got {value!r}")
    options = [f"{k}={v!r}" for k, v, d in (
        ("dim_feedforward", dim_feedforward, 2048), ("dropout", dropout, 0.1),
        ("activation", activation, "relu"), ("layer_norm_eps", layer_norm_eps, 1e-5),
        ("batch_first", batch_first, False), ("norm_first", norm_first, False),
        ("bias", bias, True)) if v != d]
    name = f"{where}({', '.join([str(d_model), str(nhead)] + options)})"
    attention = MultiheadAttention(d_model, nhead, bias=bias, batch_first=batch_first,
                                   dropout=dropout, dtype=dtype)
    linear1 = Linear(dim_feedforward, bias=bias, dtype=dtype)
    linear2 = Linear(d_model, bias=bias, dtype=dtype)
    act = ACTIVATIONS[activation]
    norm_keys = ["b", "w"] if bias else ["w"]
    layout = "(N, L, E)" if batch_first else "(L, N, E)"

    def check_x(shape, what):
        check_sequence(name, shape, what, layout, d_model, "d_model")

    def init(key, x):
        check_key(key, name)
        x = sample_struct(x, name)
        check_x(x.shape, "the sample input `x`")
        param_dtype = _param_dtype(dtype, x.dtype, name)
        keys = jax.random.split(key, 3)
        hidden = jax.ShapeDtypeStruct(x.shape[:-1] + (dim_feedforward,), x.dtype)

        def norm():
            made = {"w": initializers.ones(None, (d_model,), param_dtype)}
            if bias:
                made["b"] = initializers.zeros(None, (d_model,), param_dtype)
            return made

        return {"self_attn": attention.init(keys[0], x), "linear1": linear1.init(keys[1], x),
                "linear2": linear2.init(keys[2], hidden), "norm1": norm(), "norm2": norm()}

    def apply(params, x, *, key=None, train=False, src_mask: jax.Array | None = None,
              src_key_padding_mask: jax.Array | None = None, is_causal: bool = False):
        check_params(params, ["linear1", "linear2", "norm1", "norm2", "self_attn"], name)
        for norm in ("norm1", "norm2"):
            check_params(params[norm], norm_keys, f"{name}: `params['{norm}']`")
        if not hasattr(x, "shape"):
            raise TypeError(f"{name}: `x` must be an array or Tensor, got {type(x).__name__}")
        check_x(x.shape, "`x`")
        rate = dropout if train else 0.0
        if rate > 0 and key is None:
            raise ValueError(f"{name}: `key` is required when train=True and dropout > 0 "
                             f"(pass key=...)")
        keys = [None] * 4 if rate == 0 else list(jax.random.split(key, 4))

        def self_attention(x):
            y = attention.apply(params["self_attn"], x, key=keys[0], train=train,
                                attn_mask=src_mask, key_padding_mask=src_key_padding_mask,
                                is_causal=is_causal)
            return _dropout(y, rate, keys[1])

        def feed_forward(x):
            y = _dropout(act(linear1.apply(params["linear1"], x)), rate, keys[2])
            return _dropout(linear2.apply(params["linear2"], y), rate, keys[3])

        if norm_first:
            x = x + self_attention(_layer_norm(params["norm1"], x, layer_norm_eps))
            return x + feed_forward(_layer_norm(params["norm2"], x, layer_norm_eps))
        x = _layer_norm(params["norm1"], x + self_attention(x), layer_norm_eps)
        return _layer_norm(params["norm2"], x + feed_forward(x), layer_norm_eps)

    return named_model(name, init, apply)


@recorded
def TransformerEncoder(layer: Model, num_layers: int, *, norm: Model | None = None) -> Model:
    """`num_layers` copies of `layer` (a `TransformerEncoderLayer`) applied in turn, then
    `norm` (a Model such as `LayerNorm(d_model)`, or None), as `torch.nn.TransformerEncoder`.

    params: ``{"layers": [one params per layer], "norm": <norm's params, {} without>}``; each
    layer is initialised with a key of its own (PyTorch deep-copies one layer, so its layers
    start equal; the layout is the same, so PyTorch's weights copy across).
    ``apply(params, x, *, key=None, train=False, mask=None, src_key_padding_mask=None,
    is_causal=False)``: every layer gets the masks (as its ``src_mask`` and
    ``src_key_padding_mask``) and ``is_causal``; x and the output as the layer's.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from funcdl import nn
        >>> layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.0)
        >>> encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(16))
        >>> x = jnp.ones((5, 2, 16))  # (L, N, E)
        >>> params = encoder.init(jax.random.key(0), x)
        >>> len(params["layers"]), sorted(params["norm"])
        (2, ['b', 'w'])
        >>> encoder.apply(params, x, is_causal=True).shape
        (5, 2, 16)

    PyTorch: ``torch.nn.TransformerEncoder(encoder_layer, num_layers, norm)``.
    """
    where = "TransformerEncoder"
    if not isinstance(layer, Model):
        raise TypeError(f"{where}: `layer` must be a Model (a TransformerEncoderLayer), got "
                        f"{type(layer).__name__}")
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"{where}: `num_layers` must be an int >= 1, got {num_layers!r}")
    if norm is not None and not isinstance(norm, Model):
        raise TypeError(f"{where}: `norm` must be a Model (e.g. LayerNorm(d_model)) or None, got "
                        f"{type(norm).__name__}")
    name = f"{where}({layer!r}, {num_layers}" + (f", norm={norm!r})" if norm is not None else ")")

    def init(key, x):
        check_key(key, name)
        x = sample_struct(x, name)
        keys = jax.random.split(key, num_layers + 1)
        return {"layers": [layer.init(keys[i], x) for i in range(num_layers)],
                "norm": {} if norm is None else norm.init(keys[-1], x)}

    def apply(params, x, *, key=None, train=False, mask: jax.Array | None = None,
              src_key_padding_mask: jax.Array | None = None, is_causal: bool = False):
        check_params(params, ["layers", "norm"], name)
        if not isinstance(params["layers"], (list, tuple)) or len(params["layers"]) != num_layers:
            raise ValueError(f"{name}: `params['layers']` must be a list of {num_layers} layers' "
                             f"params, got {type(params['layers']).__name__}"
                             + (f" of {len(params['layers'])}"
                                if isinstance(params["layers"], (list, tuple)) else ""))
        keys = [None] * num_layers if key is None else list(jax.random.split(key, num_layers))
        for i in range(num_layers):
            x = layer.apply(params["layers"][i], x, key=keys[i], train=train, src_mask=mask,
                            src_key_padding_mask=src_key_padding_mask, is_causal=is_causal)
        return x if norm is None else norm.apply(params["norm"], x)

    return named_model(name, init, apply)
