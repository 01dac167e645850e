"""The eager tape's fast path (`funcdl/autodiff/eager_dispatch.py`, the shared `Shape`s of
`tensor.py`): the same numbers and dtypes as jax.numpy on the plain arrays, whatever is cached.

References: jax.numpy on the plain arrays (Python numbers are weakly typed there), NumPy
float64 products written out, and jax.grad.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fdl
from funcdl import ops
from funcdl.autodiff import Tensor
from funcdl.autodiff.vjps import Shape

DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_python_numbers_promote_as_on_plain_arrays(dtype):
    x = jnp.asarray([0.3, -1.7, 2.5], dtype)
    for _ in range(2):  # the second round reads the cached device constants
        for ours, theirs in [(Tensor(x) * 0.9, x * 0.9), (0.05 + Tensor(x), 0.05 + x), (Tensor(x) / 3, x / 3),
                             (2 - Tensor(x), 2 - x), (ops.maximum(Tensor(x), 0.5), jnp.maximum(x, 0.5)),
                             (Tensor(x) * 1e-3, x * 1e-3)]:
            assert ours.dtype == theirs.dtype == dtype
            np.testing.assert_array_equal(np.asarray(ours.value, np.float32), np.asarray(theirs, np.float32))


def test_signed_zero_and_nan_constants():
    x = Tensor(jnp.asarray([1.0, 2.0]))
    np.testing.assert_array_equal(1.0 / (x * -0.0).value, [-np.inf, -np.inf])
    np.testing.assert_array_equal(1.0 / (x * 0.0).value, [np.inf, np.inf])
    assert np.isnan((x + float("nan")).value).all() and np.isnan((x * float("nan")).value).all()


def test_constants_follow_the_x64_setting():
    """A constant first met with 64-bit types off (a float32 copy) is not reused with them on:
    float64 x * 0.1 is x times the float64 nearest 0.1, as NumPy computes it."""
    Tensor(jnp.ones(2)) * 0.1
    with jax.enable_x64(True):
        x = np.array([3.0, 7.0])
        product = (Tensor(jnp.asarray(x)) * 0.1).value
        assert product.dtype == jnp.float64
        np.testing.assert_array_equal(product, x * 0.1)
        assert (x * np.float64(np.float32(0.1)) != x * 0.1).any()  # the test can tell them apart


def test_inputs_no_rule_reads_share_one_shape():
    x = Tensor(jnp.ones(4))
    a, b = x * 0.5, (x + 1.0) * 0.25
    assert a._node.inputs[0] is b._node.inputs[0]
    assert a._node.inputs[0] == Shape((4,), jnp.dtype(jnp.float32))


def test_compiled_chains_keep_low_precision(monkeypatch):
    """Constants inside a compiled chain of rules stay weakly typed: the float16 gradient is
    jax.grad's, in float16 (a float32 constant would promote it, or raise under strict
    promotion)."""
    monkeypatch.setattr(fdl.autodiff.fused_rules, "JIT_AFTER", 1)

    def f(x):
        y = x
        for _ in range(fdl.autodiff.backward.CHAIN_LIMIT + 2):
            y = ops.tanh(y) * 0.9 + 0.05
        return ops.sum(y)

    x = jnp.asarray([0.3, -0.2], jnp.float16)
    for _ in range(2):
        ours = fdl.autodiff.grad(f)(x)
        assert ours.dtype == jnp.float16
        np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(jax.grad(f)(x), np.float32),
                                   rtol=1e-2)  # float16 rounding of 18 steps
