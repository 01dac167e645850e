"""What funcdl's rules compile to, where it decides the speed: a static slice's gradient is a
pad (XLA's CPU scatter is many times slower), and the gradient of a weight shared by a batch
(a Linear on (N, L, in)) is one matmul over the flattened batch, never an (N, in, out)
intermediate summed afterwards. Values against jax.grad."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fdl
from funcdl import ops


def primitives(f, *args):
    return [eqn for eqn in jax.make_jaxpr(f)(*args).eqns]


@pytest.mark.parametrize("index", [(slice(None),), (Ellipsis, slice(2, 5)), (1, slice(None, None, 2)),
                                   (slice(1, 6, 3), Ellipsis, 3), (-1,)])
def test_a_static_slice_gradient_is_a_pad_not_a_scatter(index):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 6, 7)), jnp.float32)
    f = lambda x: ops.sum(ops.square(x[index]))  # noqa: E731
    names = {eqn.primitive.name for eqn in primitives(fdl.autodiff.grad(f), x)}
    assert not any("scatter" in name for name in names), names
    np.testing.assert_array_equal(fdl.autodiff.grad(f)(x), jax.grad(f)(x))


def test_an_array_index_gradient_still_scatters_and_drops_out_of_range():
    x = jnp.arange(5.0)
    f = lambda x: ops.sum(x[jnp.array([0, 0, 3])] * jnp.array([1.0, 2.0, 3.0]))  # noqa: E731
    np.testing.assert_array_equal(fdl.autodiff.grad(f)(x), jnp.array([3.0, 0, 0, 3.0, 0]))


def test_a_shared_weight_gets_one_matmul_over_the_flattened_batch():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(5, 6)), jnp.float32)
    f = lambda w: ops.sum(ops.square(ops.matmul(x, w)))  # noqa: E731
    shapes = [tuple(v.aval.shape) for eqn in primitives(fdl.autodiff.grad(f), w)
              if eqn.primitive.name == "dot_general" for v in eqn.outvars]
    assert (3, 5, 6) not in shapes and (5, 6) in shapes, shapes
    np.testing.assert_allclose(fdl.autodiff.grad(f)(w), jax.grad(f)(w), rtol=1e-5)
