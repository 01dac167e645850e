"""Tests for `funcdl/train/weights.py`: Keras's weighting rule written out in NumPy as the
reference (per-row loss, weighted, summed, divided by the number of rows)."""
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import losses
from funcdl.train import weights as w

RNG = np.random.default_rng(0)


def test_weighted_mse_is_keras_sum_over_batch_size():
    pred, target = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 3))
    sw = np.array([1.0, 0.0, 2.0, 0.5, 3.0])
    expected = np.sum(sw * np.mean((pred - target) ** 2, axis=1)) / 5
    got = w.weighted_loss(losses.mse_loss, jnp.asarray(pred, jnp.float32),
                          jnp.asarray(target, jnp.float32), jnp.asarray(sw, jnp.float32))
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_class_weight_gives_each_row_its_class_weight():
    logits = RNG.normal(size=(6, 3))
    y = np.array([0, 2, 1, 2, 0, 1])
    weights = w.row_weights(6, y, sample_weight=np.full(6, 0.5), class_weight={2: 3.0, 0: 0.0})
    np.testing.assert_array_equal(weights, 0.5 * np.array([0.0, 3.0, 1.0, 3.0, 0.0, 1.0]))
    log_p = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    expected = np.sum(weights * -log_p[np.arange(6), y]) / 6
    got = w.weighted_loss(losses.cross_entropy, jnp.asarray(logits, jnp.float32),
                          jnp.asarray(y), jnp.asarray(weights))
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert w.row_weights(6, y) is None


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(sample_weight=np.ones(5)), ValueError, r"`sample_weight` must have one weight per row"),
    (dict(sample_weight=-np.ones(6)), ValueError, r"`sample_weight` must hold finite numbers >= 0"),
    (dict(class_weight={"a": 1.0}), TypeError, r"`class_weight` must be a dict \{class index"),
    (dict(class_weight={1: -1.0}), ValueError, r"`class_weight` weights must be >= 0"),
])
def test_bad_weights_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        w.row_weights(6, np.zeros(6, np.int32), **kwargs)


def test_class_weight_needs_integer_targets_and_a_loss_with_reduction():
    with pytest.raises(TypeError, match=r"`class_weight` needs integer class targets"):
        w.row_weights(3, np.zeros((3, 1)), class_weight={0: 1.0})
    with pytest.raises(TypeError, match=r"need a `loss_fn` that takes `reduction=`"):
        w.check_weighted_loss(lambda pred, target: jnp.mean(pred - target))
    w.check_weighted_loss(losses.mse_loss)
