"""Models as pure functions over parameter pytrees: ``Model(init, apply)`` and its layers.

    >>> import jax, jax.numpy as jnp
    >>> from funcdl import nn
    >>> model = nn.Sequential(nn.Linear(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(3))
    >>> params = model.init(jax.random.key(0), jnp.zeros((8, 4)))
    >>> model.apply(params, jnp.ones((8, 4)), key=jax.random.key(1), train=True).shape
    (8, 3)

``fdl.nn.init`` holds the initializers ``(key, shape, dtype, *, fan_in, fan_out) -> array``
(each layer passes the fans of its weight's layout); ``help(fdl.nn.Model)`` says how to write a
layer of your own (``fdl.nn.named_model``). Layers built by the same call compare equal
(``Linear(4) == Linear(4)``; see ``funcdl.construction``).
"""
from funcdl.nn import init
from funcdl.nn.layers import (Dropout, Flatten, LeakyReLU, Linear, LogSoftmax, ReLU, Sigmoid,
                              Softmax, Tanh)
from funcdl.nn.model import Model, Sequential, named_model
from funcdl.nn.activations import GELU, SiLU
from funcdl.nn.conv import AvgPool2d, Conv1d, Conv2d, MaxPool2d
from funcdl.nn.embedding import Embedding
from funcdl.nn.norm import GroupNorm, LayerNorm, RMSNorm
from funcdl.nn.summary import summary
from funcdl.nn.state import Variables, is_stateful
from funcdl.nn.batchnorm import BatchNorm1d, BatchNorm2d
from funcdl.nn.recurrent import GRU, LSTM, RNN
from funcdl.nn.attention import MultiheadAttention
from funcdl.nn.transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = ["Model", "Sequential", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax",
           "LogSoftmax", "Dropout", "Flatten", "init", "named_model",
           "Conv2d", "Conv1d", "MaxPool2d", "AvgPool2d", "LayerNorm", "Embedding", "GELU", "SiLU", "summary",
           "Variables", "is_stateful", "BatchNorm1d", "BatchNorm2d", "RNN", "LSTM", "GRU",
           "MultiheadAttention", "TransformerEncoderLayer", "TransformerEncoder",
           "GroupNorm", "RMSNorm"]
