"""The types that funcdl's signatures are annotated with, for readers and type checkers.

An op or a loss takes jax or NumPy arrays (and Python numbers) or `fdl.autodiff.Tensor`s, and
returns the same kind: an array under `jax.grad`, a Tensor under `fdl.autodiff.grad`.
"""
import jax
import numpy as np

from funcdl.autodiff.tensor import Tensor

Operand = jax.Array | np.ndarray | float | Tensor  # an input: an array, a number or a Tensor
Result = jax.Array | Tensor  # an output: an array, or a Tensor when an input is one
Axis = int | tuple[int, ...] | None  # an axis, several axes, or None (all of them)
