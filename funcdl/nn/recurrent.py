"""`RNN`, `LSTM` and `GRU`: PyTorch's recurrent layers, equations, gate order, layouts and init.

With x_t the input at step t and h_{t-1} the previous hidden state (PyTorch's notation):

    RNN:  h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)          (or relu)
    LSTM: i, f, g, o = split(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh, 4)
          c_t = σ(f) c_{t-1} + σ(i) tanh(g),   h_t = σ(o) tanh(c_t)
    GRU:  r, z = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr), σ(... z ...)
          n = tanh(W_in x_t + b_in + r (W_hn h_{t-1} + b_hn)),   h_t = (1 - z) n + z h_{t-1}

Params: a flat list in PyTorch's order `[layer0, layer0_reverse, layer1, ...]`, each
`{"w_ih": (G·H, in), "w_hh": (G·H, H), "b_ih": (G·H,), "b_hh": (G·H,)}` with G = 1, 4, 3 gates
(no biases with `bias=False`), so PyTorch's `weight_ih_l0`, `weight_hh_l0_reverse`, ... copy
across; every entry drawn uniform in ±1/sqrt(H) as PyTorch's `reset_parameters`.

The time loop is `fdl.ops.scan`: `lax.scan` for arrays (`jax.grad` differentiates it), and one
node of the tape when a `fdl.autodiff.Tensor` is involved (its rule is the reverse scan).
"""
import math

import jax
import jax.numpy as jnp

from funcdl import ops
from funcdl.construction import recorded
from funcdl.nn import init as initializers
from funcdl.nn.layout_hints import batch_first_hint, features_hint
from funcdl.nn.model import Model, check_key, named_model, sample_struct

GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}


def _linear(x, w, b):
    y = ops.matmul(x, ops.transpose(w))
    return y if b is None else y + ops.reshape(b, (1,) * (len(y.shape) - 1) + (-1,))


def _cell(kind, nonlinearity, hidden):
    """step((h, c), x_t) for one layer and direction, given its params p."""

    def step(p, carry, x):
        h, c = carry
        gi = _linear(x, p["w_ih"], p.get("b_ih"))
        gh = _linear(h, p["w_hh"], p.get("b_hh"))
        if kind == "RNN":
            new = gi + gh
            h = ops.tanh(new) if nonlinearity == "tanh" else ops.relu(new)
            return (h, c), h
        if kind == "LSTM":
            gates = gi + gh
            i, f = ops.sigmoid(gates[..., :hidden]), ops.sigmoid(gates[..., hidden:2 * hidden])
            g = ops.tanh(gates[..., 2 * hidden:3 * hidden])
            o = ops.sigmoid(gates[..., 3 * hidden:])
            c = f * c + i * g
            h = o * ops.tanh(c)
            return (h, c), h
        r = ops.sigmoid(gi[..., :hidden] + gh[..., :hidden])
        z = ops.sigmoid(gi[..., hidden:2 * hidden] + gh[..., hidden:2 * hidden])
        n = ops.tanh(gi[..., 2 * hidden:] + r * gh[..., 2 * hidden:])
        h = (1 - z) * n + z * h
        return (h, c), h

    return step


def _recurrent(kind, hidden_size, num_layers, nonlinearity, bias, batch_first, bidirectional):
    for argument, value in (("hidden_size", hidden_size), ("num_layers", num_layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{kind}: `{argument}` must be an int >= 1, got {value!r}")
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"{kind}: `nonlinearity` must be 'tanh' or 'relu', got {nonlinearity!r}")
    for argument, value in (("bias", bias), ("batch_first", batch_first),
                            ("bidirectional", bidirectional)):
        if not isinstance(value, bool):
            raise TypeError(f"{kind}: `{argument}` must be a bool, got {value!r}")
    options = [f"num_layers={num_layers}"] if num_layers != 1 else []
    options += [f"nonlinearity={nonlinearity!r}"] if nonlinearity != "tanh" else []
    options += [f"{k}={v}" for k, v, d in (("bias", bias, True), ("batch_first", batch_first, False),
                                            ("bidirectional", bidirectional, False)) if v != d]
    name = f"{kind}({', '.join([str(hidden_size)] + options)})"
    gates, H = GATES[kind], hidden_size
    directions = 2 if bidirectional else 1
    step = _cell(kind, nonlinearity, H)
    keys = ["w_ih", "w_hh"] + (["b_ih", "b_hh"] if bias else [])

    def split_input(x):
        """(input, h_0, c_0) of apply's `x`: an array, (input, h_0) or (input, (h_0, c_0))."""
        if isinstance(x, (tuple, list)):
            if len(x) != 2:
                raise TypeError(f"{name}: `x` must be the input or (input, initial state), got "
                                f"a {type(x).__name__} of {len(x)}")
            data, state = x
            if kind == "LSTM":
                if not isinstance(state, (tuple, list)) or len(state) != 2:
                    raise TypeError(f"{name}: an LSTM's initial state is (h_0, c_0), got "
                                    f"{type(state).__name__}")
                return data, state[0], state[1]
            return data, state, None
        return x, None, None

    def input_size(shape):
        if len(shape) not in (2, 3):
            raise ValueError(f"{name}: the input must have shape (L, N, H_in)"
                             f"{' (batch_first: (N, L, H_in))' if batch_first else ''} or "
                             f"(L, H_in) unbatched, got {tuple(shape)}")
        return shape[-1]

    def init(key, x):
        check_key(key, name)
        data = sample_struct(split_input(x)[0], name)
        size = input_size(data.shape)
        dtype = data.dtype if jnp.issubdtype(data.dtype, jnp.floating) else jnp.float32
        bound = 1.0 / math.sqrt(H)
        draw = initializers.uniform(-bound, bound)
        params = []
        layer_keys = jax.random.split(key, num_layers * directions)
        for layer in range(num_layers):
            in_size = size if layer == 0 else H * directions
            for direction in range(directions):
                k = jax.random.split(layer_keys[layer * directions + direction], 4)
                shapes = {"w_ih": (gates * H, in_size), "w_hh": (gates * H, H),
                          "b_ih": (gates * H,), "b_hh": (gates * H,)}
                params.append({name_: draw(k[i], shapes[name_], dtype)
                               for i, name_ in enumerate(keys)})
        return params

    def apply(params, x, *, key=None, train=False):
        if not isinstance(params, (list, tuple)) or len(params) != num_layers * directions:
            raise TypeError(f"{name}: `params` must be the list of {num_layers * directions} "
                            f"dicts that init returns (one per layer and direction), got "
                            f"{type(params).__name__}")
        data, h0, c0 = split_input(x)
        size = input_size(data.shape)
        expected = params[0]["w_ih"].shape[1]
        if size != expected:
            raise ValueError(f"{name}: the input has {size} features (its last axis), but the "
                             f"params were made for {expected}"
                             f"{features_hint(data.shape, expected)}")
        unbatched = len(data.shape) == 2
        if unbatched:
            data = ops.expand_dims(data, 1)
        elif batch_first:
            data = ops.transpose(data, (1, 0, 2))
        length, batch = data.shape[0], data.shape[1]
        state_shape = (num_layers * directions, batch, H)

        def initial(state, what):
            if state is None:
                return jnp.zeros(state_shape, data.dtype)
            if unbatched:
                state = ops.expand_dims(state, 1)
            if tuple(state.shape) != state_shape:
                swapped = not unbatched and tuple(state.shape) == (state_shape[0], length, H)
                raise ValueError(f"{name}: `{what}` must have shape "
                                 f"{(state_shape[0],) + state_shape[2:] if unbatched else state_shape}"
                                 f", got {tuple(state.shape)}"
                                 f"{batch_first_hint(batch_first, swapped)}")
            return state

        h0 = initial(h0, "h_0")
        c0 = initial(c0, "c_0") if kind == "LSTM" else None
        h_n, c_n, inputs = [], [], data
        for layer in range(num_layers):
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                p = params[index]
                carry = (h0[index], c0[index] if c0 is not None else jnp.zeros((), data.dtype))
                (h, c), ys = ops.scan(lambda carry, x_t, p=p: step(p, carry, x_t), carry,
                                      inputs, reverse=direction == 1)
                outputs.append(ys)
                h_n.append(h)
                c_n.append(c)
            inputs = outputs[0] if directions == 1 else ops.concatenate(outputs, axis=-1)
        output, h_n = inputs, ops.stack(h_n, axis=0)
        c_n = ops.stack(c_n, axis=0) if kind == "LSTM" else None
        if unbatched:
            output = ops.squeeze(output, 1)
            h_n = ops.squeeze(h_n, 1)
            c_n = None if c_n is None else ops.squeeze(c_n, 1)
        elif batch_first:
            output = ops.transpose(output, (1, 0, 2))
        return (output, (h_n, c_n)) if kind == "LSTM" else (output, h_n)

    return named_model(name, init, apply)


_DOC = """{kind} over a sequence, as `torch.nn.{kind}` (the equations and params are in the module
docstring; the input size is read from the sample at `init`).

    hidden_size: H, the features of the hidden state; the options (num_layers, bias,
    batch_first, bidirectional{options}) are PyTorch's.

    x: the input `(L, N, H_in)` (`(N, L, H_in)` with batch_first, `(L, H_in)` unbatched), or
    {initial}.
    Returns {returns}: output `(L, N, D·H)` (D = 2 when bidirectional; `(N, L, D·H)` with
    batch_first), the last hidden state h_n `(D·num_layers, N, H)`{cell}.

Raises:
  ValueError: a bad option, an input whose feature size differs from the params' (naming
    both), an initial state of the wrong shape.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from funcdl import nn
    >>> layer = nn.{kind}(8, num_layers=2, batch_first=True)
    >>> x = jnp.ones((4, 5, 3))  # (N, L, H_in)
    >>> params = layer.init(jax.random.key(0), x)
    >>> [tuple(p["w_ih"].shape) for p in params]
    [({g8}, 3), ({g8}, 8)]
    >>> out, {names} = layer.apply(params, x)
    >>> out.shape, h_n.shape
    ((4, 5, 8), (2, 4, 8))
"""


@recorded
def RNN(hidden_size: int, *, num_layers: int = 1, nonlinearity: str = "tanh", bias: bool = True,
        batch_first: bool = False, bidirectional: bool = False) -> Model:
    return _recurrent("RNN", hidden_size, num_layers, nonlinearity, bias, batch_first,
                      bidirectional)


@recorded
def LSTM(hidden_size: int, *, num_layers: int = 1, bias: bool = True, batch_first: bool = False,
         bidirectional: bool = False) -> Model:
    return _recurrent("LSTM", hidden_size, num_layers, "tanh", bias, batch_first, bidirectional)


@recorded
def GRU(hidden_size: int, *, num_layers: int = 1, bias: bool = True, batch_first: bool = False,
        bidirectional: bool = False) -> Model:
    return _recurrent("GRU", hidden_size, num_layers, "tanh", bias, batch_first, bidirectional)


RNN.__doc__ = _DOC.format(kind="RNN", initial="`(input, h_0)` with h_0 `(D·num_layers, N, H)`",
                          returns="`(output, h_n)`", cell="", g8=8, names="h_n",
                          options=", nonlinearity 'tanh' or 'relu'")
LSTM.__doc__ = _DOC.format(kind="LSTM", initial="`(input, (h_0, c_0))`, each `(D·num_layers, "
                           "N, H)`", returns="`(output, (h_n, c_n))`",
                           cell=" and the cell state c_n of the same shape", g8=32,
                           names="(h_n, c_n)", options="")
GRU.__doc__ = _DOC.format(kind="GRU", initial="`(input, h_0)` with h_0 `(D·num_layers, N, H)`",
                          returns="`(output, h_n)`", cell="", g8=24, names="h_n", options="")
