"""`x` and `y` as pytrees (dicts, tuples of arrays with one number of rows): `fit`, `evaluate`
and `predict` hand the model and the loss batches of the same structure. Reference: the same
training on the single-array equivalent, `x = concat(x["a"], x["b"])` and `y` as one (n, 2)
array, which visits the same rows in the same order."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import losses, optim, train

RNG = np.random.RandomState(7)
N = 50
A = RNG.randn(N, 2).astype(np.float32)
B = RNG.randn(N, 1).astype(np.float32)
Y = np.stack([A[:, 0] * B[:, 0], np.sin(A[:, 1])], axis=1).astype(np.float32)
W = RNG.randn(3, 2).astype(np.float32) * 0.5
X_TREE, Y_TREE = {"a": A, "b": B}, (Y[:, :1], Y[:, 1:])
X_FLAT = np.concatenate([A, B], axis=1)


def tree_apply(params, x):  # a dict in, a tuple out
    out = x["a"] @ params["wa"] + x["b"] @ params["wb"] + params["bias"]
    return out[:, :1], out[:, 1:]


def tree_loss(pred, target):  # the mean over both outputs: the flat mse exactly
    return 0.5 * (losses.mse_loss(pred[0], target[0]) + losses.mse_loss(pred[1], target[1]))


def flat_apply(params, x):
    return x @ params["w"] + params["bias"]


def tree_params():
    return {"wa": jnp.asarray(W[:2]), "wb": jnp.asarray(W[2:]), "bias": jnp.zeros((1, 2))}


def flat_params():
    return {"w": jnp.asarray(W), "bias": jnp.zeros((1, 2))}


def assert_same_training(tree_result, flat_result):
    (p_tree, _, h_tree), (p_flat, _, h_flat) = tree_result, flat_result
    w = np.concatenate([np.asarray(p_tree["wa"]), np.asarray(p_tree["wb"])])
    np.testing.assert_allclose(w, p_flat["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p_tree["bias"], p_flat["bias"], rtol=1e-5, atol=1e-6)
    assert h_tree.keys() == h_flat.keys()
    for name in h_tree:
        np.testing.assert_allclose(h_tree[name], h_flat[name], rtol=1e-5)


@pytest.mark.parametrize("batch_size, shuffle", [(16, True), (16, False), (None, False)],
                         ids=["shuffled minibatch", "minibatch", "full batch"])
@pytest.mark.slow  # ~14 s: the slow tier (`make test-slow`, run by CI)
def test_fit_on_pytrees_equals_fit_on_the_concatenated_arrays(batch_size, shuffle):
    opt, key = optim.adam(1e-2), jax.random.key(4)
    kwargs = dict(epochs=3, batch_size=batch_size, shuffle=shuffle, key=key, progress=False)
    tree = train.fit(tree_apply, tree_params(), tree_loss, opt, X_TREE, Y_TREE,
                     validation=({"a": A[:20], "b": B[:20]}, (Y[:20, :1], Y[:20, 1:])),
                     **kwargs)
    flat = train.fit(flat_apply, flat_params(), losses.mse_loss, opt, X_FLAT, Y,
                     validation=(X_FLAT[:20], Y[:20]), **kwargs)
    assert_same_training(tree, flat)


def test_the_model_and_loss_receive_batches_of_the_given_structure():
    seen = []

    def apply(params, x):
        seen.append(("x", sorted(x), x["a"].shape, x["b"].shape))
        return tree_apply(params, x)

    def loss(pred, target):
        seen.append(("y", type(target).__name__, target[0].shape, target[1].shape))
        return tree_loss(pred, target)

    train.fit(apply, tree_params(), loss, optim.sgd(0.1), X_TREE, Y_TREE, epochs=1,
              batch_size=16, progress=False)
    assert ("x", ["a", "b"], (16, 2), (16, 1)) in seen  # a full batch
    assert ("x", ["a", "b"], (2, 2), (2, 1)) in seen  # the last, partial one
    assert ("y", "tuple", (16, 1), (16, 1)) in seen


def test_evaluate_and_predict_on_pytrees():
    params = tree_params()
    pred = X_FLAT @ W  # the bias starts at zero
    result = train.evaluate(tree_apply, params, tree_loss, X_TREE, Y_TREE, batch_size=16,
                            metrics={"first": lambda p, t: jnp.mean(jnp.abs(p[0] - t[0]))})
    np.testing.assert_allclose(result["loss"], np.mean((pred - Y) ** 2), rtol=1e-5)
    np.testing.assert_allclose(result["first"], np.mean(np.abs(pred[:, 0] - Y[:, 0])),
                               rtol=1e-5)
    first, second = train.predict(tree_apply, params, X_TREE, batch_size=16)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), pred, rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("x, y, match", [
    ({"image": np.zeros((10, 4)), "mask": np.zeros((9,))}, np.zeros((10,)),
     r"every array of `x` must have the same number of rows: `x\['image'\]` has 10 rows, "
     r"`x\['mask'\]` 9"),
    (np.zeros((10, 2)), (np.zeros((10,)), np.zeros((8, 1))),
     r"`y\[0\]` has 10 rows, `y\[1\]` 8"),
    ({"a": np.zeros((10, 2))}, {"t": np.zeros((7,))},
     r"`x` and `y` must have the same number of rows, got 10 and 7"),
    ({}, np.zeros((10,)), r"`x` must hold at least one array, got a dict without leaves"),
    ((), np.zeros((10,)), r"`x` must hold at least one array, got a tuple without leaves"),
])
def test_pytrees_whose_rows_differ_or_that_hold_nothing_are_named(x, y, match):
    with pytest.raises(ValueError, match=match):
        train.fit(tree_apply, tree_params(), tree_loss, optim.sgd(0.1), x, y, epochs=1,
                  progress=False)


def test_a_pytree_leaf_that_is_not_an_array_is_named():
    with pytest.raises(TypeError, match=r"`x` must be an array .*got dict whose leaf `x\['b'\]` "
                                        r"is a float"):
        train.predict(tree_apply, tree_params(), {"a": A, "b": 1.0})
    with pytest.raises(ValueError,
                       match=r"`x` must hold at least one array, got a dict without leaves"):
        train.predict(tree_apply, tree_params(), {"a": None})


MESH_SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    from jax.sharding import Mesh
    from funcdl import optim, train
    import test_train_pytrees as t
    assert len(jax.devices()) == 2, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    opt = optim.adam(1e-2)
    val = ({"a": t.A[:20], "b": t.B[:20]}, (t.Y[:20, :1], t.Y[:20, 1:]))
    kwargs = dict(epochs=2, batch_size=16, key=jax.random.key(4), progress=False,
                  validation=val)
    one = train.fit(t.tree_apply, t.tree_params(), t.tree_loss, opt, t.X_TREE, t.Y_TREE, **kwargs)
    two = train.fit(t.tree_apply, t.tree_params(), t.tree_loss, opt, t.X_TREE, t.Y_TREE,
                    mesh=mesh, **kwargs)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, 1e-5, 1e-6),
                           one[:2], two[:2])
    np.testing.assert_allclose(one[2]["val_loss"], two[2]["val_loss"], 1e-5)
    print("MESH OK")
''')


@pytest.mark.slow  # a fresh jax process with two forced host devices (tests/test_train_mesh.py)
def test_fit_on_pytrees_on_a_two_device_mesh():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=os.pathsep.join([os.getcwd(), os.path.dirname(__file__)]))
    result = subprocess.run([sys.executable, "-c", MESH_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and "MESH OK" in result.stdout, result.stderr[-3000:]
