"""Convolution and pooling layers: `Conv2d`, `Conv1d`, `MaxPool2d`, `AvgPool2d`.

PyTorch's layouts (channels first), defaults and init, so weights copy across unchanged:
`Conv2d(...).apply` with `{"w": conv.weight, "b": conv.bias}` gives `torch.nn.Conv2d`'s output.
Inputs may be batched `(N, C, *spatial)` or unbatched `(C, *spatial)`, as in PyTorch.

    >>> import jax, jax.numpy as jnp
    >>> from funcdl import nn
    >>> cnn = nn.Sequential(nn.Conv2d(8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    >>> params = cnn.init(jax.random.key(0), jnp.zeros((4, 1, 8, 8)))
    >>> params[0]["w"].shape, cnn.apply(params, jnp.ones((4, 1, 8, 8))).shape
    ((8, 1, 3, 3), (4, 128))
"""
import contextlib
import math

import jax
import numpy as np
from jax.typing import DTypeLike

from funcdl import ops
from funcdl.construction import recorded
from funcdl.ops_layers import int_tuple
from funcdl.nn import init as initializers
from funcdl.nn.init import Initializer
from funcdl.nn.layers import _param_dtype, layer_initializer
from funcdl.nn.model import (Model, check_input, check_key, check_params, named_model,
                             parameter_free, sample_struct)


@contextlib.contextmanager
def _named(where, op_name):
    """Re-raise an op's TypeError/ValueError ("conv2d: ...") under the layer's name."""
    try:
        yield
    except (TypeError, ValueError) as error:
        if type(error) not in (TypeError, ValueError):
            raise
        raise type(error)(f"{where}: {str(error).removeprefix(f'{op_name}: ')}") from error


def _arguments(pairs):
    return ", ".join(f"{k}={v!r}" for k, v in pairs)


# Channels-first layouts, and how channels-last data are brought to them.
_LAYOUTS = {1: ("(N, C, L)", "(C, L)", "NLC", "x.transpose(0, 2, 1)", "LC", "x.transpose(1, 0)"),
            2: ("(N, C, H, W)", "(C, H, W)", "NHWC", "x.transpose(0, 3, 1, 2)", "HWC",
                "x.transpose(2, 0, 1)")}


def _channels_first(spatial, shape):
    """The sentence that ends every layout error: what funcdl expects, and the fix for
    channels-last data of this rank."""
    batched, unbatched, last, fix, last_unbatched, fix_unbatched = _LAYOUTS[spatial]
    if len(shape) == spatial + 1:
        last, fix = last_unbatched, fix_unbatched
    return (f"funcdl convolutions are channels-first, `x` {batched} or {unbatched} as in "
            f"PyTorch: transpose {last} data with {fix}")


def _check_rank(name, spatial, x_shape, what):
    if len(x_shape) not in (spatial + 1, spatial + 2):
        batched, unbatched = _LAYOUTS[spatial][:2]
        raise ValueError(f"{name}: {what} must have shape {batched} or {unbatched}, got "
                         f"{tuple(x_shape)}; {_channels_first(spatial, (0,) * (spatial + 2))}")


def _check_fits(name, spatial, x_shape, window, padding, dilation, what):
    """ValueError (with the channels-first hint) unless every (dilated) kernel extent fits the
    padded spatial size. The op checks this too; the layer checks first because a kernel that
    does not fit is often channels-last data read as (C=H, H=W, W=C), which the op cannot say."""
    if padding == "same":
        return
    pads = (0,) * spatial if padding == "valid" else int_tuple(padding, spatial, "padding", name, 0)
    reach = [(k - 1) * d + 1 for k, d in zip(window, int_tuple(dilation, spatial, "dilation", name, 1))]
    size = tuple(x_shape[-spatial:])
    if any(n + 2 * p < r for n, p, r in zip(size, pads, reach)):
        raise ValueError(f"{name}: the kernel (extent {tuple(reach)} with dilation) is larger than "
                         f"the padded spatial size {size} of {what} of shape {tuple(x_shape)}; "
                         f"{_channels_first(spatial, x_shape)}")


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _pad_indices(size, before, after, mode):
    """Indices into an axis of `size` that pad it by `before`/`after` entries as PyTorch's
    `padding_mode` (reflect without repeating the edge, replicate the edge, wrap around)."""
    positions = np.arange(-before, size + after)
    if mode == "reflect":
        period = 2 * (size - 1)
        folded = np.mod(positions, period) if period else np.zeros_like(positions)
        return np.where(folded >= size, period - folded, folded)
    if mode == "replicate":
        return np.clip(positions, 0, size - 1)
    return np.mod(positions, size)  # circular


def _padded(x, spatial, amounts, mode):
    """x with its last `spatial` axes padded by `amounts` ((before, after) per axis), built
    from `fdl.ops.take` so that both autodiffs differentiate it (the gradient scatter-adds)."""
    for axis, (before, after) in zip(range(len(x.shape) - spatial, len(x.shape)), amounts):
        if before or after:
            x = ops.take(x, _pad_indices(x.shape[axis], before, after, mode), axis=axis)
    return x


def _pad_amounts(spatial, window, padding, dilation):
    """(before, after) per spatial axis of an int/tuple or "same"/"valid" `padding`."""
    if padding == "valid":
        return ((0, 0),) * spatial
    if padding == "same":  # PyTorch: the extra entry of an odd total goes after
        totals = [d * (k - 1) for d, k in zip(dilation, window)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in padding)


def _conv_layer(kind, spatial, op, out_channels, kernel_size, stride, padding, dilation, groups,
                bias, w_init, b_init, dtype, padding_mode="zeros"):
    if isinstance(out_channels, bool) or not isinstance(out_channels, int):
        raise TypeError(f"{kind}: `out_channels` must be an int, got {type(out_channels).__name__}")
    if out_channels < 1:
        raise ValueError(f"{kind}: `out_channels` must be >= 1, got {out_channels}")
    window = int_tuple(kernel_size, spatial, "kernel_size", kind, 1)
    int_tuple(stride, spatial, "stride", kind, 1)
    int_tuple(dilation, spatial, "dilation", kind, 1)
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(f"{kind}: `padding` must be 'valid', 'same', an int or a tuple of "
                             f"{spatial} ints, got {padding!r}")
    else:
        int_tuple(padding, spatial, "padding", kind, 0)
    int_tuple(groups, 1, "groups", kind, 1)
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"{kind}: `padding_mode` must be one of {', '.join(map(repr, PADDING_MODES))}, "
                         f"got {padding_mode!r}")
    if padding_mode != "zeros" and padding == "same" and any(
            s != 1 for s in int_tuple(stride, spatial, "stride", kind, 1)):
        raise ValueError(f"{kind}: padding='same' needs stride 1 (as PyTorch), got stride {stride!r}")
    pad_amounts = _pad_amounts(spatial, window, padding if isinstance(padding, str)
                               else int_tuple(padding, spatial, "padding", kind, 0),
                               int_tuple(dilation, spatial, "dilation", kind, 1))
    if out_channels % groups:
        raise ValueError(f"{kind}: `groups` ({groups}) must divide `out_channels` ({out_channels})")
    options = [(k, v) for k, v, default in (("stride", stride, 1), ("padding", padding, 0),
                                            ("dilation", dilation, 1), ("groups", groups, 1),
                                            ("bias", bias, True),
                                            ("padding_mode", padding_mode, "zeros")) if v != default]
    name = f"{kind}({out_channels}, {kernel_size!r}{', ' if options else ''}{_arguments(options)})"
    keys = ["b", "w"] if bias else ["w"]
    draw_w = None if w_init is None else layer_initializer(w_init, "w_init", name)
    draw_b = None if b_init is None else layer_initializer(b_init, "b_init", name)

    def init(key, x):
        check_key(key, name)
        x = sample_struct(x, name)
        _check_rank(name, spatial, x.shape, "sample input `x`")
        _check_fits(name, spatial, x.shape, window, padding, dilation, "sample input `x`")
        in_channels = x.shape[-spatial - 1]
        if in_channels % groups:
            raise ValueError(f"{name}: `groups` ({groups}) must divide the input channels "
                             f"({in_channels}) of `x` of shape {x.shape}; "
                             f"{_channels_first(spatial, x.shape)}")
        param_dtype = _param_dtype(dtype, x.dtype, name)
        shape = (out_channels, in_channels // groups, *window)
        fan_in, fan_out = initializers.compute_fans(shape, "out_in")
        w_key, b_key = jax.random.split(key)
        if draw_w is None:
            bound = 1.0 / math.sqrt(fan_in)  # PyTorch: kaiming_uniform(a=√5), i.e. ±1/√fan_in
            w = initializers.uniform(-bound, bound)(w_key, shape, param_dtype)
        else:
            w = draw_w(w_key, shape, param_dtype, fan_in, fan_out)
        params = {"w": w}
        if bias:
            draw = draw_b or layer_initializer(initializers.bias_uniform(fan_in), "b_init", name)
            params["b"] = draw(b_key, (out_channels,), param_dtype, fan_in, fan_out)
        return params

    def apply(params, x, *, key=None, train=False):
        check_params(params, keys, name)
        check_input(x, name)
        w = params["w"]
        if (len(w.shape) != spatial + 2 or tuple(w.shape[:1]) != (out_channels,)
                or tuple(w.shape[2:]) != window):
            raise ValueError(f"{name}: `params['w']` must have shape ({out_channels}, C_in // groups, "
                             f"{', '.join(map(str, window))}), got {tuple(w.shape)}")
        _check_rank(name, spatial, x.shape, "`x`")
        channels, expected = x.shape[-spatial - 1], w.shape[1] * groups
        if channels != expected:
            batched, unbatched = (f.replace("C", str(expected)) for f in _LAYOUTS[spatial][:2])
            raise ValueError(
                f"{name}: `x` of shape {tuple(x.shape)} has {channels} channels (axis "
                f"{len(x.shape) - spatial - 1}) but `params['w']` of shape {tuple(w.shape)} "
                f"expects {expected} (w.shape[1] * groups = {w.shape[1]} * {groups}): expected "
                f"`x` of shape {batched} or {unbatched}; {_channels_first(spatial, x.shape)}")
        _check_fits(name, spatial, x.shape, window, padding, dilation, "`x`")
        conv_padding = padding
        if padding_mode != "zeros":
            if padding_mode == "reflect":
                sizes = x.shape[len(x.shape) - spatial:]
                if any(max(a) >= n for a, n in zip(pad_amounts, sizes)):
                    raise ValueError(f"{name}: padding_mode='reflect' needs each padding < the "
                                     f"input's size, got padding {padding!r} for `x` of shape "
                                     f"{tuple(x.shape)}")
            x, conv_padding = _padded(x, spatial, pad_amounts, padding_mode), 0
        with _named(name, kind.lower()):
            return op(x, w, params.get("b"), stride=stride, padding=conv_padding,
                      dilation=dilation, groups=groups)

    return named_model(name, init, apply)


@recorded
def Conv2d(out_channels: int, kernel_size: int | tuple[int, int], *,
           stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
           dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
           padding_mode: str = "zeros", w_init: Initializer | None = None,
           b_init: Initializer | None = None, dtype: DTypeLike | None = None) -> Model:
    """2-D convolution: x `(N, C_in, H, W)` or `(C_in, H, W)` -> `(N, C_out, H_out, W_out)`.

    params: ``{"w": (C_out, C_in // groups, kh, kw), "b": (C_out,)}`` (no ``"b"`` when
    ``bias=False``), PyTorch's layout; C_in is read from the sample input at init.
    H_out = ⌊(H + 2 p - d (kh - 1) - 1) / s⌋ + 1 (likewise W); see ``fdl.ops.conv2d``.
    kernel_size, stride, dilation: int or pair; padding: int, pair, "valid" or "same".
    padding_mode: "zeros" (default), "reflect", "replicate" or "circular", as PyTorch's: the
    input is padded that way (reflect needs padding < the input's size), then convolved.
    w_init, b_init: initializers ``(key, shape, dtype, *, fan_in, fan_out)`` (see
    ``fdl.nn.init``), given PyTorch's fans of w, fan_in = C_in // groups · kh · kw and
    fan_out = C_out · kh · kw, so ``init.kaiming_normal()`` draws as
    ``torch.nn.init.kaiming_normal_`` on ``torch.nn.Conv2d``'s weight (three-argument
    ``(key, shape, dtype)`` ones are called without the fans). The defaults are PyTorch's,
    uniform in ±1/sqrt(fan_in) for both.
    Channels first: an input whose channel axis does not match w (channels-last data, NHWC)
    is a ValueError that names both counts, the layout expected with C_in from w
    (``(N, 3, H, W) or (3, H, W)``) and the transpose that fixes it.
    dtype: the params' dtype (default: the sample's floating dtype, else float32).

    PyTorch: ``torch.nn.Conv2d(C_in, out_channels, kernel_size, stride, padding, dilation, groups,
    bias, padding_mode)``.
    """
    return _conv_layer("Conv2d", 2, ops.conv2d, out_channels, kernel_size, stride, padding,
                       dilation, groups, bias, w_init, b_init, dtype, padding_mode)


@recorded
def Conv1d(out_channels: int, kernel_size: int | tuple[int], *, stride: int | tuple[int] = 1,
           padding: int | tuple[int] | str = 0, dilation: int | tuple[int] = 1, groups: int = 1,
           bias: bool = True, padding_mode: str = "zeros", w_init: Initializer | None = None,
           b_init: Initializer | None = None, dtype: DTypeLike | None = None) -> Model:
    """1-D convolution: x `(N, C_in, L)` or `(C_in, L)` -> `(N, C_out, L_out)`; params
    ``{"w": (C_out, C_in // groups, k), "b": (C_out,)}``; arguments as `Conv2d` with one int
    each. PyTorch: ``torch.nn.Conv1d``."""
    return _conv_layer("Conv1d", 1, ops.conv1d, out_channels, kernel_size, stride, padding,
                       dilation, groups, bias, w_init, b_init, dtype, padding_mode)


def _pool_layer(kind, op, kernel_size, stride, padding):
    int_tuple(kernel_size, 2, "kernel_size", kind, 1)
    if stride is not None:
        int_tuple(stride, 2, "stride", kind, 1)
    pad = int_tuple(padding, 2, "padding", kind, 0)
    if any(2 * p > k for p, k in zip(pad, int_tuple(kernel_size, 2, "kernel_size", kind, 1))):
        raise ValueError(f"{kind}: `padding` must be at most half of `kernel_size` (as PyTorch), "
                         f"got padding {padding!r} for kernel_size {kernel_size!r}")
    options = [(k, v) for k, v, default in (("stride", stride, None), ("padding", padding, 0))
               if v != default]
    name = f"{kind}({kernel_size!r}{', ' if options else ''}{_arguments(options)})"

    def pool(x):
        check_input(x, name)
        with _named(name, op.__name__):
            return op(x, kernel_size, stride, padding)

    return parameter_free(name, pool)


@recorded
def MaxPool2d(kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
              padding: int | tuple[int, int] = 0) -> Model:
    """Max over kh × kw windows: x `(N, C, H, W)` or `(C, H, W)` -> `(N, C, H_out, W_out)`,
    H_out = ⌊(H + 2 p - kh) / s⌋ + 1; stride defaults to kernel_size; padding (with -inf) at
    most half the kernel. Ties send the gradient to the first maximal element in window order.
    PyTorch: ``torch.nn.MaxPool2d(kernel_size, stride, padding)``."""
    return _pool_layer("MaxPool2d", ops.max_pool2d, kernel_size, stride, padding)


@recorded
def AvgPool2d(kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
              padding: int | tuple[int, int] = 0) -> Model:
    """Mean over kh × kw windows, zero padding included in the count (PyTorch's
    count_include_pad=True): shapes and arguments as `MaxPool2d`.
    PyTorch: ``torch.nn.AvgPool2d(kernel_size, stride, padding)``."""
    return _pool_layer("AvgPool2d", ops.avg_pool2d, kernel_size, stride, padding)
