"""A warning for the classic silent shape bug of a hand-written loss, as PyTorch's `mse_loss`
warns ("Using a target size that is different to the input size"): predictions `(n, 1)`
against targets `(n,)` broadcast to `(n, n)`, so `mean((pred - target) ** 2)` averages over
every pair of rows and trains towards the wrong thing without any error.

`fit` and `evaluate` check once per call, on the host, before anything runs: the model's
output shape for one batch comes from `jax.eval_shape` (a trace, nothing compiled or run),
and a `UserWarning` names both shapes when `broadcast_shapes(pred, target)` is not `pred`'s
shape. Because the check is outside the compiled program it also warns when that program
comes from the cache. Not warned about: equal shapes, shapes that do not broadcast at all
(integer class targets `(n,)` against scores `(n, C)`, left to the loss), and funcdl's own
losses, which refuse a target of another shape themselves.
"""
import functools
import warnings

import jax
import numpy as np

from funcdl.train.step import forward


@functools.partial(jax.jit, static_argnames=("spec", "train"))
def _predictions(params, x, key, *, spec, train):
    return forward(spec, params, x, key, train)


def _batch_struct(tree, batch_rows: int):
    """Shapes and dtypes of one batch of `batch_rows` rows of every leaf of `tree`."""
    def leaf_struct(leaf):
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf)
        return jax.ShapeDtypeStruct((batch_rows,) + tuple(np.shape(leaf))[1:], dtype)
    return jax.tree_util.tree_map(leaf_struct, tree)


def mismatches(pred, target) -> list:
    """`[(pred_shape, target_shape, broadcast_shape), ...]` for the leaves (of equal tree
    structure; a single array each, usually) whose broadcast shape is not the prediction's."""
    pred_leaves, pred_tree = jax.tree_util.tree_flatten(pred)
    target_leaves, target_tree = jax.tree_util.tree_flatten(target)
    if pred_tree != target_tree:
        return []
    found = []
    for p, t in zip(pred_leaves, target_leaves):
        p_shape, t_shape = tuple(p.shape), tuple(t.shape)
        try:
            both = np.broadcast_shapes(p_shape, t_shape)
        except ValueError:
            continue
        if both != p_shape:
            found.append((p_shape, t_shape, both))
    return found


def warn_if_broadcasting(spec, params, x, y, batch_rows: int, key, *, train: bool, where: str):
    """Warn (UserWarning, pointing at the caller of `where`) when `spec.loss_fn` would see
    predictions and targets of one batch of `batch_rows` rows that broadcast to another shape
    than the predictions'. The model is only traced; an error in it is left to the real run."""
    if getattr(spec.loss_fn, "__module__", "").startswith("funcdl.losses"):
        return
    model_only = spec._replace(loss_fn=None, optimizer=None, metrics=())
    try:
        pred = _predictions.eval_shape(params, _batch_struct(x, batch_rows), key,
                                       spec=model_only, train=train)
    except Exception:  # noqa: BLE001 (the training program raises it again, in context)
        return
    for p_shape, t_shape, both in mismatches(pred, _batch_struct(y, batch_rows)):
        warnings.warn(
            f"{where}: the model's predictions have shape {p_shape} and the targets shape "
            f"{t_shape} per batch; `loss_fn` will likely broadcast them to {both}, not to the "
            f"predictions' shape, which gives a wrong loss without an error (e.g. (n, 1) "
            f"against (n,) compares every row with every other). Give `y` the predictions' "
            "shape (for (n, 1) predictions: y.reshape(-1, 1)) or reshape inside `loss_fn`",
            UserWarning, stacklevel=3)
        return
