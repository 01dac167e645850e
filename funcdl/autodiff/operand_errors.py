"""Clear errors for operands that jax rejects: checked only once jax has failed, so that the
eager tape pays nothing for them on the way (`tensor._forward`)."""
import jax.numpy as jnp
import numpy as np


def _broadcast_error(name, *operands):
    shapes = [jnp.shape(x) for x in operands]
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        return ValueError(f"`{name}`: operand shapes {', '.join(map(str, shapes))} do not "
                          "broadcast together")
    return None


_ELEMENTWISE = {"add", "subtract", "multiply", "divide", "power", "maximum", "minimum", "where",
                "clip", "binary_cross_entropy"}


def _concatenate_error(shapes, axis):
    if any(len(s) != len(shapes[0]) for s in shapes) or not shapes[0]:
        return ValueError(f"`concatenate`: all operands must have the same rank >= 1, got shapes "
                          f"{', '.join(map(str, shapes))}")
    axis = axis % len(shapes[0])
    if len({s[:axis] + s[axis + 1:] for s in shapes}) > 1:
        return ValueError(f"`concatenate`: shapes {', '.join(map(str, shapes))} differ outside "
                          f"axis {axis}")
    return None


def _reshape_error(shape, new_shape):
    size, known = int(np.prod(shape, dtype=np.int64)), [n for n in new_shape if n != -1]
    inferred = len(known) < len(new_shape)
    known_size = int(np.prod(known, dtype=np.int64))
    if len(new_shape) - len(known) > 1 or (
            known_size != size if not inferred else (known_size == 0 or size % known_size)):
        return ValueError(f"`reshape`: cannot reshape an array of shape {shape} (size {size}) "
                          f"into shape {new_shape}")
    return None


def _matmul_error(a, b):
    if not a or not b:
        return ValueError(f"`matmul`: operands must have at least 1 dimension, got shapes {a} and {b}")
    k_b = b[0] if len(b) == 1 else b[-2]
    if a[-1] != k_b:
        return ValueError(f"`matmul`: contraction dimensions differ: `a` {a} has {a[-1]} "
                          f"columns but `b` {b} has {k_b} rows")
    return None


def operand_error(name, values, params):
    """The clear error for operands of primitive `name` that do not fit, or None."""
    if name in _ELEMENTWISE:
        return _broadcast_error(name, *values)
    if name in ("concatenate", "stack"):
        shapes = [jnp.shape(x) for x in values]
        if name == "stack":
            return None if len(set(shapes)) == 1 else ValueError(
                f"`stack`: all operands must have the same shape, got {', '.join(map(str, shapes))}")
        return _concatenate_error(shapes, params.get("axis", 0))
    if name == "reshape":
        return _reshape_error(jnp.shape(values[0]), tuple(params["shape"]))
    if name == "matmul":
        return _matmul_error(*map(jnp.shape, values))
    return None
