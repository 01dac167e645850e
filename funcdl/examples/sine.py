"""Beyond the seeds: an LSTM that forecasts a noisy sine wave, trained with `fit`.

The series is sin(2π t / 50) plus Gaussian noise of standard deviation 0.1 (`NOISE`), 2000
steps drawn from a fixed NumPy seed. Each training row is a window of the last 32 values
(`WINDOW`); the target is the next value. The first 1600 steps train, the last 400 test. The
model is `fdl.nn.LSTM(32, batch_first=True)` followed by `fdl.nn.Linear(1)` on its last hidden
output, trained with Adam (lr 5e-3, batches of 56, 60 epochs) on the mean squared error: 56 divides
the 1568 training windows, so every batch is whole (one compiled training step, no second one
for a last partial batch); the test windows are evaluated as one batch after each epoch.

The noise sets the floor: no forecast of the next noisy value can beat an RMSE of 0.1 on
average; the clean sine is what the LSTM can learn. Two baselines stand beside it: "the last
value again" (RMSE about 0.1·√2 plus the wave's step, ~0.16) and the clean sine itself (0.1).
The pictures: the one-step forecast on the test steps against the noisy series and the clean
wave, and a 100-step free-running forecast (each prediction fed back as the next input).
Target: a test RMSE within 15% of the noise floor. Measured (`funcdl run sine`): test RMSE
0.1141 against the floor's 0.1054 (the last value again: 0.1757), the free-running forecast
0.123 from the clean wave over 100 steps; `--backend funcdl` gives the same numbers.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

import funcdl as fdl
from funcdl import examples

SEED = "-"
SHOWS = "an LSTM forecasting a noisy sine wave, one step ahead and free-running, through fit"
OPTIONS = ("epochs", "lr", "optimizer", "backend")
PERIOD, NOISE, STEPS, WINDOW, TRAIN_STEPS, DATA_SEED = 50, 0.1, 2000, 32, 1600, 0
HIDDEN, BATCH_SIZE, ROLLOUT = 32, 56, 100


def series():
    """(clean, noisy) float32 arrays of `STEPS` values."""
    t = np.arange(STEPS)
    clean = np.sin(2 * np.pi * t / PERIOD)
    noisy = clean + NOISE * np.random.default_rng(DATA_SEED).normal(size=STEPS)
    return clean.astype(np.float32), noisy.astype(np.float32)


def windows(values, start, stop):
    """Rows `(n, WINDOW, 1)` of the values before each step in [start, stop), targets `(n, 1)`."""
    steps = np.arange(max(start, WINDOW), stop)
    x = np.stack([values[s - WINDOW:s] for s in steps])[..., None]
    return x, values[steps, None], steps


def build():
    """The forecaster: LSTM(32) over the window, Linear(1) on its last output."""
    lstm, head = fdl.nn.LSTM(HIDDEN, batch_first=True), fdl.nn.Linear(1)

    def init(key, x):
        lstm_key, head_key = jax.random.split(key)
        return {"lstm": lstm.init(lstm_key, x),
                "head": head.init(head_key, jax.ShapeDtypeStruct((x.shape[0], HIDDEN), x.dtype))}

    def apply(params, x, *, key=None, train=False):
        out, _ = lstm.apply(params["lstm"], x)
        return head.apply(params["head"], out[:, -1, :])

    return fdl.nn.named_model("Forecaster(LSTM(32), Linear(1))", init, apply)


@functools.partial(jax.jit, static_argnames=("model", "steps"))
def forecasts(model, params, x, start_window, *, steps):
    """Both forecasts in one compiled program: the one-step forecast of every window of `x`
    `(n, WINDOW, 1)` -> `(n,)`, and the free-running one from `start_window` `(WINDOW,)` ->
    `(steps,)`, each prediction the newest input value of the next (a `lax.scan`)."""
    def step(window, _):
        value = model.apply(params, window[None, :, None])[0, 0]
        return jnp.concatenate([window[1:], value[None]]), value

    _, free = jax.lax.scan(step, jnp.asarray(start_window, jnp.float32), None, length=steps)
    return model.apply(params, x)[:, 0], free


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def run(quick=False, out_dir="runs/sine", *, epochs=None, lr=5e-3, optimizer="adam",
        backend="jax", key=None):
    """Train the forecaster; returns the test RMSE, the baselines', the history and pictures."""
    epochs = (4 if quick else 60) if epochs is None else epochs
    key = jax.random.PRNGKey(0) if key is None else key
    clean, noisy = series()
    x_train, y_train, _ = windows(noisy, 0, TRAIN_STEPS)
    x_test, y_test, test_steps = windows(noisy, TRAIN_STEPS, STEPS)
    model = build()
    params = model.init(key, x_train[:BATCH_SIZE])
    params, _, history = fdl.train.fit(
        model, params, fdl.losses.mse_loss, getattr(fdl.optim, optimizer)(lr), x_train, y_train,
        epochs=epochs, batch_size=BATCH_SIZE, validation=(x_test, y_test),
        validation_batch_size=len(y_test), key=key, grad_backend=backend, progress=False)
    forecast, free = map(np.asarray, forecasts(model, params, x_test,
                                               noisy[TRAIN_STEPS - WINDOW:TRAIN_STEPS],
                                               steps=ROLLOUT))
    results = {"quick": quick, "epochs": epochs, "history": history,
               "test_rmse": rmse(forecast, y_test[:, 0]),
               "last_value_rmse": rmse(x_test[:, -1, 0], y_test[:, 0]),
               "clean_rmse": rmse(clean[test_steps], y_test[:, 0]), "noise": NOISE}
    results["rollout_rmse_vs_clean"] = rmse(free, clean[TRAIN_STEPS:TRAIN_STEPS + ROLLOUT])
    print(f"test RMSE of the one-step forecast: {results['test_rmse']:.4f} (noise floor "
          f"{results['clean_rmse']:.4f}: the clean wave; the last value again: "
          f"{results['last_value_rmse']:.4f})")
    print(f"{ROLLOUT}-step free-running forecast against the clean wave: RMSE "
          f"{results['rollout_rmse_vs_clean']:.4f}")
    results["pictures"] = [plot(clean, noisy, test_steps, forecast, free, history, out_dir)]
    return results


def plot(clean, noisy, test_steps, forecast, free, history, out_dir):
    fig, (ax_one, ax_free, ax_loss) = examples.figure(1, 3, width=10, height=4.6)
    fig.suptitle("LSTM(32) forecasting sin(2πt/50) + N(0, 0.1²)")
    shown = test_steps[:200]
    ax_one.plot(shown, noisy[shown], ".", markersize=3, color="0.6", label="noisy series")
    ax_one.plot(shown, clean[shown], "k--", linewidth=0.8, label="clean wave")
    ax_one.plot(shown, forecast[:200], color="C1", label="one-step forecast")
    ax_one.set(xlabel="time step", ylabel="value (no unit)", title="one step ahead (test)")
    steps = np.arange(TRAIN_STEPS, TRAIN_STEPS + len(free))
    ax_free.plot(np.arange(TRAIN_STEPS - WINDOW, TRAIN_STEPS),
                 noisy[TRAIN_STEPS - WINDOW:TRAIN_STEPS], ".", markersize=3, color="0.6",
                 label="the inputs")
    ax_free.plot(steps, clean[steps], "k--", linewidth=0.8, label="clean wave")
    ax_free.plot(steps, free, color="C2", label="free-running forecast")
    ax_free.set(xlabel="time step", ylabel="value (no unit)",
                title=f"free-running, {len(free)} steps")
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax_loss.plot(epochs, history["loss"], label="train MSE")
    ax_loss.plot(epochs, history["val_loss"], label="test MSE")
    ax_loss.axhline(NOISE ** 2, color="k", linestyle=":", linewidth=0.8, label="noise floor 0.01")
    ax_loss.set(xlabel="epoch", ylabel="mean squared error (log scale)", yscale="log", title="training")
    for ax in (ax_one, ax_free):  # below the axes, so that no legend covers a curve
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=9)
    ax_loss.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=9)
    return examples.save(fig, out_dir, "sine.png")


def verdict(results):
    """Full run: test RMSE within 15% of the noise floor (the clean wave's RMSE); the quick
    run: the forecast beats the last value repeated."""
    got = (f"test RMSE {results['test_rmse']:.4f} (floor {results['clean_rmse']:.4f}, last value "
           f"{results['last_value_rmse']:.4f})")
    if results["quick"]:
        return (f"after {results['epochs']} epochs the forecast beats repeating the last value",
                got, results["test_rmse"] < results["last_value_rmse"])
    return ("nothing (sine is beyond the seeds); the target is a test RMSE within 15% of the "
            "noise floor", got, results["test_rmse"] <= 1.15 * results["clean_rmse"])
