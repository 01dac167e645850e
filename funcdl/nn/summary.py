"""`summary(model, x)`: Keras's table of a model's layers, their output shapes and params.

Everything is computed abstractly (`jax.eval_shape` of `init` and of each layer's `apply`), so
a summary of a large model for a large batch allocates nothing and runs no layer.
"""
from typing import Any, List, NamedTuple

import jax
import numpy as np

from funcdl import construction
from funcdl.nn.model import Model, Sequential, _as_model, layer_name, sample_struct
from funcdl.nn.state import Variables, is_stateful


class Row(NamedTuple):
    name: str  # "2 Linear(16)": the layer's position in its Sequential and its name
    depth: int  # nesting level (0: the model itself)
    shape: Any  # the output's shape: a tuple, or a pytree of tuples for several outputs
    params: int  # parameter count of the layer (with its sublayers)
    dtypes: str  # the params' dtypes, "-" without params
    nbytes: int


def _sublayers(model: Model):
    """The layers of a `Sequential` (as Models), or None for any other model."""
    record = construction.constructed_by(model)
    if record is None or record.constructor is not Sequential:
        return None
    return [_as_model(layer, i) for i, layer in enumerate(record.args)]


def _count(params):
    leaves = jax.tree_util.tree_leaves(params)
    dtypes = sorted({str(np.dtype(leaf.dtype)) for leaf in leaves})
    return (sum(int(np.prod(leaf.shape)) for leaf in leaves), ", ".join(dtypes) or "-",
            sum(int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize for leaf in leaves))


def _shape(out):
    return jax.tree_util.tree_map(lambda leaf: tuple(leaf.shape), out)


def _rows(model: Model, variables, x, name: str, depth: int) -> tuple:
    """(rows of `model` and its sublayers, the output's struct). `variables`: the params, or
    a stateful model's `Variables` (the params are counted; the state is not a param)."""
    layers = _sublayers(model)
    stateful = is_stateful(model)
    out = jax.eval_shape(lambda v, sample: model.apply(v, sample), variables, x)
    out = out[0] if stateful else out
    params = variables.params if stateful else variables
    count, dtypes, nbytes = _count(params)
    rows: List[Row] = [Row(name, depth, _shape(out), count, dtypes, nbytes)]
    if layers:
        inner = x
        for i, layer in enumerate(layers):
            layer_variables = (Variables(params[i], variables.state[i]) if is_stateful(layer)
                               else params[i])
            more, inner = _rows(layer, layer_variables, inner, f"{i} {_name(layer)}", depth + 1)
            rows.extend(more)
    return rows, out


def _name(model: Model) -> str:
    """A layer's name; a Sequential's is short (its layers have rows of their own)."""
    layers = _sublayers(model)
    return layer_name(model) if layers is None else f"Sequential ({len(layers)} layers)"


def _format_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def summary(model: Model, x: Any) -> str:
    """A table of `model`'s layers for an input like `x`, with the totals (Keras's `summary`).

    Args:
      model: a `Model`; a `Sequential`'s layers get one row each (recursively, indented under
        their Sequential); any other model is one row.
      x: a sample input, an array or a `jax.ShapeDtypeStruct` (only its shape and dtype are
        read: nothing is computed).

    Returns:
      The table as a string: per row the layer (its position and name), its output shape for
      `x` (a tuple), its number of params (with its sublayers') and their dtype; then the total
      params and their size in bytes. Print it.

    Raises:
      TypeError: `model` is not a Model, or `x` is not an array.

    Examples:
        >>> import jax.numpy as jnp
        >>> from funcdl import nn
        >>> model = nn.Sequential(nn.Linear(16), nn.Tanh(), nn.Linear(1))
        >>> print(nn.summary(model, jnp.zeros((8, 4))))
        Layer                  Output shape  Params  Dtype
        ========================================================
        Sequential (3 layers)  (8, 1)            97  float32
          0 Linear(16)         (8, 16)           80  float32
          1 Tanh()             (8, 16)            0  -
          2 Linear(1)          (8, 1)            17  float32
        ========================================================
        Total params: 97 (388 B)
    """
    if not isinstance(model, Model):
        raise TypeError(f"summary: `model` must be a fdl.nn.Model, got {type(model).__name__}")
    x = sample_struct(x, "summary")
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    rows, _ = _rows(model, variables, x, _name(model), 0)
    params = variables.params if is_stateful(model) else variables
    cells = [("  " * row.depth + row.name, str(row.shape), f"{row.params:,}", row.dtypes)
             for row in rows]
    header = ("Layer", "Output shape", "Params", "Dtype")
    widths = [max(len(header[i]), *(len(c[i]) for c in cells)) for i in range(4)]

    def line(cell):
        return (f"{cell[0]:<{widths[0]}}  {cell[1]:<{widths[1]}}  {cell[2]:>{widths[2]}}  "
                f"{cell[3]}").rstrip()

    rule = "=" * (sum(widths) + 6 + 4)
    total, _, nbytes = _count(params)
    return "\n".join([line(header), rule, *map(line, cells), rule,
                      f"Total params: {total:,} ({_format_bytes(nbytes)})"])
