"""Every bad input of fdl.train raises TypeError/ValueError naming the argument, before
anything compiles (the counter of tests/train_reference.py sees no compilation)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from funcdl import train
from train_reference import ADAM, LOSS, MODEL, PARAMS, X, Y, counting_compilations

ONE_DEVICE_MESH = Mesh(np.array(jax.devices()[:1]), ("batch",))

FIT_ERRORS = [
    (dict(x=X[:40]), ValueError, r"`x` and `y` must have the same number of rows, got 40 and 50"),
    (dict(x=[1.0, 2.0]), TypeError, r"`x` must be an array .*got list"),
    (dict(x=X[:0], y=Y[:0]), ValueError, r"`x` must have at least one row, got 0"),
    (dict(epochs=-1), ValueError, r"`epochs` must be >= 0, got -1"),
    (dict(epochs=2.0), TypeError, r"`epochs` must be an int, got float 2.0"),
    (dict(epochs=True), TypeError, r"`epochs` must be an int, got bool"),
    (dict(batch_size=0), ValueError, r"`batch_size` must be >= 1, got 0"),
    (dict(batch_size=8.5), TypeError, r"`batch_size` must be an int, got float"),
    (dict(grad_backend="torch"), ValueError, r"`grad_backend` must be one of .*'torch'"),
    (dict(validation=(X[:5], Y[:4])), ValueError,
     r"`validation\[0\]` and `validation\[1\]` must have the same number of rows, got 5 and 4"),
    (dict(validation=X), TypeError, r"`validation` must be a pair \(x_val, y_val\)"),
    (dict(metrics=[LOSS]), TypeError, r"`metrics` must be a dict"),
    (dict(metrics={"acc": 3}), TypeError, r"`metrics\['acc'\]` must be a function"),
    (dict(metrics={"val_acc": LOSS}), ValueError, r"`metrics` name 'val_acc' is reserved"),
    (dict(mesh=ONE_DEVICE_MESH), ValueError, r"`mesh` must have an axis named \"data\""),
    (dict(mesh="data"), TypeError, r"`mesh` must be a jax.sharding.Mesh or None, got str"),
    (dict(key=0), TypeError, r"`key` must be a PRNG key"),
    (dict(compute_dtype=jnp.int8), TypeError, r"`compute_dtype` must be a floating-point dtype"),
    (dict(checkpoint_every=0), ValueError, r"`checkpoint_every` must be >= 1, got 0"),
    (dict(resume=True), ValueError, r"`resume=True` needs `checkpoint`"),
    (dict(checkpoint=3), TypeError, r"`checkpoint` must be a path"),
    (dict(shuffle="yes"), TypeError, r"`shuffle` must be a bool, got str"),
    (dict(model="mlp"), TypeError, r"`model` must be a fdl.nn.Model or a function"),
    (dict(loss_fn=None), TypeError, r"`loss_fn` must be a function"),
    (dict(optimizer=object()), TypeError, r"`optimizer` must be an fdl.optim optimizer"),
]


@pytest.mark.parametrize("change, error, match", FIT_ERRORS,
                         ids=[next(iter(c)) + str(i) for i, (c, _, _) in enumerate(FIT_ERRORS)])
def test_fit_rejects_bad_input_before_compiling(change, error, match):
    args = dict(model=MODEL, params=PARAMS, loss_fn=LOSS, optimizer=ADAM, x=X, y=Y)
    kwargs = dict(epochs=1, batch_size=16, progress=False)
    for name, value in change.items():
        (args if name in args else kwargs)[name] = value
    with counting_compilations() as compiled, pytest.raises(error, match=match):
        train.fit(args["model"], args["params"], args["loss_fn"], args["optimizer"], args["x"],
                  args["y"], **kwargs)
    assert compiled == []


def test_a_batch_size_the_mesh_does_not_divide(monkeypatch):
    class FourDevices:  # the check reads only the axis names and sizes of the mesh
        axis_names, shape = ("data",), {"data": 4}
    from funcdl.train import sharding
    monkeypatch.setattr(sharding, "Mesh", FourDevices)
    with pytest.raises(ValueError, match=r"`batch_size` must be divisible by the mesh's "
                                         r"\"data\" size 4, got a batch of 10 rows"):
        train.fit(MODEL, PARAMS, LOSS, ADAM, X, Y, epochs=1, batch_size=10,
                  mesh=FourDevices(), progress=False)


@pytest.mark.parametrize("call, error, match", [
    (lambda: train.evaluate(MODEL, PARAMS, LOSS, X, Y[:3]), ValueError, r"same number of rows"),
    (lambda: train.evaluate(MODEL, PARAMS, "mse", X, Y), TypeError, r"`loss_fn` must be"),
    (lambda: train.evaluate(MODEL, PARAMS, LOSS, X, Y, batch_size=-2), ValueError,
     r"`batch_size` must be >= 1, got -2"),
    (lambda: train.predict(MODEL, PARAMS, 3.0), TypeError, r"`x` must be an array"),
    (lambda: train.predict(None, PARAMS, X), TypeError, r"`model` must be"),
    (lambda: train.make_train_step(MODEL, LOSS, ADAM, grad_backend="autograd"), ValueError,
     r"`grad_backend` must be one of \('jax', 'funcdl'\), got 'autograd'"),
    (lambda: train.make_train_step(MODEL, LOSS, ADAM.init), TypeError, r"`optimizer` must be"),
])
def test_evaluate_predict_and_make_train_step_reject_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
