"""The eager tape's fast path into jax: jitted forwards and device copies of Python constants.

Binary elementwise primitives without params (`add`, `multiply`, ...) run eagerly through a
jitted copy of their forward: jax's C++ dispatch of a jitted call skips jax.numpy's Python
argument handling. A Python float or int operand (the `0.9` in `y * 0.9`) would be copied to
the device at every call; `device_constant` keeps one weakly typed device array per value
instead, which jax promotes exactly as it promotes the Python number (`x_f16 * 0.9` stays
float16) and which runs the same compiled program. The copies are keyed by type, value and
the x64 setting (which decides their dtype); zeros and NaNs are not kept (0.0 == -0.0, and NaN
matches no key), and at most MAX_CONSTANTS are. Tracers (under `jax.jit` or `jax.grad`) never
come here, so traced programs are unchanged.
"""
import jax
import jax.numpy as jnp
from jax._src import config as _config

JITTED_FORWARD_OPS = frozenset(("add", "subtract", "multiply", "divide", "maximum", "minimum"))
MAX_CONSTANTS = 1024
_jitted = {}  # name -> (forward, jax.jit(forward))
_constants = {}  # (type, value, x64) -> weakly typed device array
_x64 = _config.enable_x64
_NUMBERS = (float, int)  # exactly: bool stays a Python bool


def device_constant(value):
    """A weakly typed device array equal to Python number `value` (made once), or `value`
    itself when it is not kept (0, NaN, or the cache is full)."""
    key = (type(value), value, _x64.value)
    constant = _constants.get(key)
    if constant is None:
        if not (value and value == value) or len(_constants) >= MAX_CONSTANTS:
            return value
        constant = _constants[key] = jnp.asarray(value)
    return constant


def call_jitted(name, forward, values):
    """`forward(x, y)` (`values`: the two operands) through the jitted copy of primitive
    `name`'s forward (remade if the table's entry changed), Python numbers as cached device
    constants."""
    entry = _jitted.get(name)
    if entry is None or entry[0] is not forward:
        entry = _jitted[name] = (forward, jax.jit(forward))
    x, y = values
    if type(x) in _NUMBERS:
        x = device_constant(x)
    if type(y) in _NUMBERS:
        y = device_constant(y)
    return entry[1](x, y)
