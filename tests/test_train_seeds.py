"""The seeds' trainings through fit: XOR (seed 004), Boston linear regression (seed 003) against
closed-form least squares, and a digits MLP."""
import jax
import jax.numpy as jnp
import numpy as np

from funcdl import datasets, losses, nn, optim, train

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
XOR_Y = np.array([[0], [1], [1], [0]], np.float32)
XOR_NET = nn.Sequential(nn.Linear(8), nn.ReLU(), nn.Linear(4), nn.Sigmoid(), nn.Linear(1),
                        nn.Sigmoid())


def summed_squared_error(pred, target):
    return losses.mse_loss(pred, target, reduction="sum")


def test_xor_converges_for_most_initialisations():
    opt = optim.sgd(lr=0.6)
    solved = 0
    for seed in range(10):  # one compiled 400-epoch program, reused for every seed
        params = XOR_NET.init(jax.random.key(seed), XOR_X)
        params, _, history = train.fit(XOR_NET, params, summed_squared_error, opt, XOR_X,
                                       XOR_Y, epochs=400, progress=False)
        pred = np.asarray(XOR_NET.apply(params, XOR_X))
        solved += bool(np.all((pred > 0.5) == (XOR_Y > 0.5)) and history["loss"][-1] < 0.1)
    assert solved >= 7, f"XOR solved for {solved} of 10 initialisations"


def boston_split():
    x, y = datasets.load_boston()
    order = np.random.RandomState(73).permutation(len(x))
    n_test = int(round(0.15 * len(x)))
    test, tr = order[:n_test], order[n_test:]
    mean, std = x[tr].mean(0), x[tr].std(0)
    scale = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    return (scale(x[tr]), y[tr, None].astype(np.float32), scale(x[test]),
            y[test, None].astype(np.float32))


def test_boston_linear_regression_lands_near_closed_form_least_squares():
    x_train, y_train, x_test, y_test = boston_split()
    model = nn.Linear(1)
    params = model.init(jax.random.key(0), x_train)
    params, _, history = train.fit(model, params, losses.mse_loss, optim.sgd(1e-2), x_train,
                                   y_train, epochs=300, progress=False)
    design = np.hstack([x_train, np.ones((len(x_train), 1))]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, y_train.astype(np.float64), rcond=None)
    exact_mse = np.mean((np.hstack([x_test, np.ones((len(x_test), 1))]) @ coef - y_test) ** 2)
    fitted_mse = train.evaluate(model, params, losses.mse_loss, x_test, y_test)["loss"]
    assert abs(fitted_mse - exact_mse) <= 0.2 * exact_mse, (fitted_mse, exact_mse)
    assert history["loss"][-1] < history["loss"][0] / 10


def test_digits_mlp_reaches_95_percent_test_accuracy():
    x, y = datasets.load_digits()
    order = np.random.RandomState(0).permutation(len(x))
    x = (x / 16.0).astype(np.float32)
    test, tr = order[:360], order[360:]
    model = nn.Sequential(nn.Linear(64), nn.ReLU(), nn.Linear(10))
    params = model.init(jax.random.key(0), x[:1])
    accuracy = lambda logits, labels: jnp.mean(jnp.argmax(logits, -1) == labels)  # noqa: E731
    params, _, history = train.fit(model, params, losses.cross_entropy, optim.adam(1e-2),
                                   x[tr], y[tr], epochs=15, batch_size=64,
                                   key=jax.random.key(1), validation=(x[test], y[test]),
                                   metrics={"accuracy": accuracy}, progress=False)
    result = train.evaluate(model, params, losses.cross_entropy, x[test], y[test],
                            metrics={"accuracy": accuracy})
    assert result["accuracy"] >= 0.95, result
    np.testing.assert_allclose(history["val_accuracy"][-1], result["accuracy"], rtol=1e-6)
