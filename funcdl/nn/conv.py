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

from funcdl import ops
from funcdl.ops_layers import int_tuple
from funcdl.nn import init as initializers
from funcdl.nn.layers import _initialized, _param_dtype
from funcdl.nn.model import (check_input, check_key, check_params, named_model, parameter_free,
                             sample_struct)


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


def _conv_layer(kind, spatial, op, out_channels, kernel_size, stride, padding, dilation, groups,
                bias, w_init, b_init, dtype):
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
    if out_channels % groups:
        raise ValueError(f"{kind}: `groups` ({groups}) must divide `out_channels` ({out_channels})")
    options = [(k, v) for k, v, default in (("stride", stride, 1), ("padding", padding, 0),
                                            ("dilation", dilation, 1), ("groups", groups, 1),
                                            ("bias", bias, True)) if v != default]
    name = f"{kind}({out_channels}, {kernel_size!r}{', ' if options else ''}{_arguments(options)})"
    keys = ["b", "w"] if bias else ["w"]

    def init(key, x):
        check_key(key, name)
        x = sample_struct(x, name)
        if len(x.shape) not in (spatial + 1, spatial + 2):
            raise ValueError(f"{name}: sample input `x` must have shape (N, C, {spatial} spatial "
                             f"sizes) or (C, {spatial} spatial sizes), got {x.shape}")
        in_channels = x.shape[-spatial - 1]
        if in_channels % groups:
            raise ValueError(f"{name}: `groups` ({groups}) must divide the input channels "
                             f"({in_channels}) of `x` of shape {x.shape}")
        param_dtype = _param_dtype(dtype, x.dtype, name)
        fan_in = in_channels // groups * math.prod(window)
        bound = 1.0 / math.sqrt(fan_in)  # PyTorch: kaiming_uniform(a=√5), i.e. ±1/√fan_in
        w_key, b_key = jax.random.split(key)
        w_initializer = initializers.uniform(-bound, bound) if w_init is None else w_init
        params = {"w": _initialized(w_initializer, "w_init", w_key,
                                    (out_channels, in_channels // groups, *window), param_dtype, name)}
        if bias:
            b_initializer = initializers.bias_uniform(fan_in) if b_init is None else b_init
            params["b"] = _initialized(b_initializer, "b_init", b_key, (out_channels,), param_dtype, name)
        return params

    def apply(params, x, *, key=None, train=False):
        check_params(params, keys, name)
        check_input(x, name)
        w = params["w"]
        if tuple(w.shape[:1]) != (out_channels,) or tuple(w.shape[2:]) != window:
            raise ValueError(f"{name}: `params['w']` must have shape ({out_channels}, C_in // groups, "
                             f"{', '.join(map(str, window))}), got {tuple(w.shape)}")
        with _named(name, kind.lower()):
            return op(x, w, params.get("b"), stride=stride, padding=padding, dilation=dilation,
                      groups=groups)

    return named_model(name, init, apply)


def Conv2d(out_channels, kernel_size, *, stride=1, padding=0, dilation=1, groups=1, bias=True,
           w_init=None, b_init=None, dtype=None):
    """2-D convolution: x `(N, C_in, H, W)` or `(C_in, H, W)` -> `(N, C_out, H_out, W_out)`.

    params: ``{"w": (C_out, C_in // groups, kh, kw), "b": (C_out,)}`` (no ``"b"`` when
    ``bias=False``), PyTorch's layout; C_in is read from the sample input at init.
    H_out = ⌊(H + 2 p - d (kh - 1) - 1) / s⌋ + 1 (likewise W); see ``fdl.ops.conv2d``.
    kernel_size, stride, dilation: int or pair; padding: int, pair, "valid" or "same".
    w_init, b_init: initializers ``(key, shape, dtype)``; the defaults are PyTorch's, uniform in
    ±1/sqrt(fan_in) with fan_in = C_in // groups · kh · kw for both.
    dtype: the params' dtype (default: the sample's floating dtype, else float32).

    PyTorch: ``torch.nn.Conv2d(C_in, out_channels, kernel_size, stride, padding, dilation, groups, bias)``.
    """
    return _conv_layer("Conv2d", 2, ops.conv2d, out_channels, kernel_size, stride, padding,
                       dilation, groups, bias, w_init, b_init, dtype)


def Conv1d(out_channels, kernel_size, *, stride=1, padding=0, dilation=1, groups=1, bias=True,
           w_init=None, b_init=None, dtype=None):
    """1-D convolution: x `(N, C_in, L)` or `(C_in, L)` -> `(N, C_out, L_out)`; params
    ``{"w": (C_out, C_in // groups, k), "b": (C_out,)}``; arguments as `Conv2d` with one int
    each. PyTorch: ``torch.nn.Conv1d``."""
    return _conv_layer("Conv1d", 1, ops.conv1d, out_channels, kernel_size, stride, padding,
                       dilation, groups, bias, w_init, b_init, dtype)


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


def MaxPool2d(kernel_size, stride=None, padding=0):
    """Max over kh × kw windows: x `(N, C, H, W)` or `(C, H, W)` -> `(N, C, H_out, W_out)`,
    H_out = ⌊(H + 2 p - kh) / s⌋ + 1; stride defaults to kernel_size; padding (with -inf) at
    most half the kernel. Ties send the gradient to the first maximal element in window order.
    PyTorch: ``torch.nn.MaxPool2d(kernel_size, stride, padding)``."""
    return _pool_layer("MaxPool2d", ops.max_pool2d, kernel_size, stride, padding)


def AvgPool2d(kernel_size, stride=None, padding=0):
    """Mean over kh × kw windows, zero padding included in the count (PyTorch's
    count_include_pad=True): shapes and arguments as `MaxPool2d`.
    PyTorch: ``torch.nn.AvgPool2d(kernel_size, stride, padding)``."""
    return _pool_layer("AvgPool2d", ops.avg_pool2d, kernel_size, stride, padding)
