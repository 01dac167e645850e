"""The array methods of `fdl.autodiff.Tensor` (funcdl/tensor_methods.py): one model code, two
autodiffs.

Each case is one function written with methods, as a user writes it on jax arrays. The
reference is jax itself: `jax.grad` of the function on jax arrays calls jax's own methods, while
`fdl.autodiff.grad` calls the Tensor's; values and gradients must agree (float64, 1e-12).
Then NumPy's functions on Tensors, the reads that leave the tape, and the errors.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fdl
from funcdl import ops
from funcdl.autodiff import Tensor

rng = np.random.default_rng(0)
X = rng.normal(size=(2, 3, 4))
C = rng.normal(size=(3, 4))


def _readout(y):
    return (y * y).sum()


# name -> f(x) written with methods (x: (2, 3, 4)); `ops.relu` stands for `.relu()` on jax arrays
METHOD_CASES = {
    "flatten": lambda x: _readout(x.flatten() * np.arange(24.0)),
    "ravel": lambda x: _readout(x.ravel()[::3]),
    "squeeze": lambda x: _readout(x[:, :1].squeeze(1) + x[0, 0].squeeze()),
    "clip": lambda x: _readout(x.clip(-0.5, 0.7) + x.clip(min=0.1) + x.clip(max=-0.2)),
    "var_std": lambda x: _readout(x.var(axis=1)[:, None] + x.std(0, ddof=1) + x.std(axis=(0, 2), keepdims=True).sum()),
    "prod": lambda x: _readout(x.prod(axis=2) + x[0, 0].prod()),
    "sum_mean_max_min": lambda x: _readout(x.sum(0) * x.mean(axis=0, keepdims=True)[0] + x.max(axis=0) - x.min(0)),
    "swapaxes_mT_T": lambda x: _readout(x.swapaxes(0, 2) * 1.5) + _readout(x.mT @ C) + _readout(x[0].T @ C),
    "cumsum": lambda x: _readout(x.cumsum(axis=1) + x.cumsum().reshape(x.shape)),
    "repeat": lambda x: _readout(x.repeat(2, axis=1)) + _readout(x.repeat(2)),
    "take": lambda x: _readout(x.take(np.array([0, 2, 2]), axis=1)) + _readout(x.take(np.array([5, 0]))),
    "round": lambda x: _readout(x.round(1) * x + x.round()),
    "dot": lambda x: _readout(x.dot(C.T) + x[0].dot(C[0])[:, None]),
    "reshape_transpose_astype": lambda x: _readout(x.reshape(6, 4).transpose() + x.transpose(2, 0, 1).reshape((4, 6))
                                                   + x.astype(jnp.float32).astype(jnp.float64).reshape(6, 4).T),
    "mod_floordiv": lambda x: _readout(x % 0.7 + x // 0.5 * x + 1.3 % (x * x + 1.0)),
    "dtype_argument": lambda x: _readout(x.sum(axis=0, dtype=jnp.float32).astype(jnp.float64) + x.mean(0, jnp.float64)),
    "argmax_any_all": lambda x: _readout(x * (x.argmax(axis=2) + x.argmin(2))[..., None].astype(x.dtype)
                                         + ops.where((x > 0).any() & (x > -9).all(axis=0), x, -x)),
}


@pytest.mark.slow  # ~32 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("name", list(METHOD_CASES))
def test_methods_give_the_same_numbers_under_both_autodiffs(name, x64, allow_rank_promotion):
    f = METHOD_CASES[name]
    x = jnp.asarray(X)
    value_jax, grad_jax = jax.value_and_grad(f)(x)
    value_fdl, grad_fdl = fdl.autodiff.value_and_grad(f)(x)
    np.testing.assert_allclose(value_fdl, value_jax, rtol=1e-12)
    np.testing.assert_allclose(grad_fdl, grad_jax, rtol=1e-12, atol=1e-14)
    assert np.any(np.asarray(grad_fdl) != 0)


def test_relu_method_is_fdl_ops_relu(x64, allow_rank_promotion):
    x = jnp.asarray(X)
    by_fdl = fdl.autodiff.grad(lambda x: _readout(x.relu() * C))(x)
    by_jax = jax.grad(lambda x: _readout(ops.relu(x) * C))(x)
    np.testing.assert_allclose(by_fdl, by_jax, rtol=1e-12)


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("function", [np.sum, np.mean, np.max, np.min, np.std, np.var, np.prod])
def test_numpy_reductions_on_a_tensor_stay_on_the_tape(function, x64):
    x = jnp.asarray(X)
    by_fdl = fdl.autodiff.grad(lambda t: function(t * 1.5) * 2.0)(x)
    by_jax = jax.grad(lambda a: getattr(jnp, function.__name__)(a * 1.5) * 2.0)(x)
    np.testing.assert_allclose(by_fdl, by_jax, rtol=1e-12)
    axis_value = function(Tensor(x), axis=1)
    assert isinstance(axis_value, Tensor)
    np.testing.assert_allclose(axis_value.value, function(X, axis=1), rtol=1e-12)


def test_numpy_array_functions_on_a_tensor(x64):
    t = Tensor(jnp.asarray(X))
    for np_function, expected in ((lambda a: np.round(a, 1), np.round(X, 1)), (lambda a: np.clip(a, -0.2, 0.3),
                                  np.clip(X, -0.2, 0.3)), (lambda a: np.cumsum(a, axis=2), np.cumsum(X, axis=2)),
                                  (lambda a: np.swapaxes(a, 0, 1), np.swapaxes(X, 0, 1)),
                                  (lambda a: np.take(a, np.array([3, 1])), np.take(X, [3, 1])),
                                  (lambda a: np.transpose(a), np.transpose(X))):
        result = np_function(t)
        assert isinstance(result, Tensor)
        np.testing.assert_allclose(result.value, expected, rtol=1e-12)
    assert np.argmax(t) == np.argmax(X) and np.argmin(t, axis=0).tolist() == np.argmin(X, axis=0).tolist()


def test_reads_leave_the_tape(x64):
    t = Tensor(jnp.asarray([[1.0, -2.5], [3.0, 0.5]]))
    loss = (t * t).sum()  # 1 + 6.25 + 9 + 0.25
    assert t.size == 4 and isinstance(t.size, int)
    assert loss.item() == 16.5 and isinstance(loss.item(), float) and t.item(1) == -2.5
    assert t.tolist() == [[1.0, -2.5], [3.0, 0.5]]
    assert float(loss) == 16.5 and int(t[1, 0]) == 3 and int(t[0, 1]) == -2
    assert format(loss, ".3f") == "16.500" and f"{loss:8.2f}" == "   16.50" and f"{t[0, 0]:.1e}" == "1.0e+00"
    assert round(Tensor(jnp.asarray(2.5))).value == 2.0  # halves to even, as jnp.round


def test_mod_and_floordiv_follow_python(x64):
    a = np.array([5.5, -5.5, 5.5, -5.5])
    b = np.array([2.0, 2.0, -2.0, -2.0])
    np.testing.assert_array_equal((Tensor(jnp.asarray(a)) % b).value, np.array([x % y for x, y in zip(a, b)]))
    np.testing.assert_array_equal((Tensor(jnp.asarray(a)) // b).value, np.array([x // y for x, y in zip(a, b)]))
    grad_b = fdl.autodiff.grad(lambda b: (a % b).sum())(jnp.asarray(b))
    np.testing.assert_array_equal(grad_b, -np.floor(a / b))  # d(a mod b)/db = -floor(a / b)


@pytest.mark.parametrize("call, error, match", [
    (lambda t: t.sum(out=np.zeros(())), TypeError, r"Tensor.sum: `out` must be None \(arrays are immutable"),
    (lambda t: np.mean(t, out=np.zeros(())), TypeError, r"Tensor.mean: `out` must be None"),
    (lambda t: t.std(out=np.zeros(())), TypeError, r"Tensor.std: `out` must be None"),
    (lambda t: t.flatten(order="F"), ValueError, r"Tensor.flatten: only `order='C'` is supported, got 'F'"),
    (lambda t: t.take(np.array([0]), mode="clip"), ValueError, r"Tensor.take: `mode` must be None or 'raise'"),
    (lambda t: t[0, 0].mT, ValueError, r"Tensor.mT needs at least 2 dimensions, got shape \(4,\)"),
])
def test_method_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(Tensor(jnp.ones((2, 3, 4))))
