"""Time sequence-model training steps: funcdl's jitted step (`make_train_step`, with
`grad_backend="jax"` and `"funcdl"`) against the same model hand-written in JAX (`lax.scan`,
`jax.nn`, optax-free Adam written as funcdl's) and PyTorch eager on CPU.

Workload `lstm` (issue "state and sequences"): `LSTM(128)` over sequences of 100 steps,
batches of 64, 32 input features, a `Linear(1)` on the last step's output, the mean squared
error, Adam 1e-3. Every implementation starts from the same weights (PyTorch's copied in) and
does the same work per step: forward over the 100 steps, backward, one Adam update.

Each row is the median of `--repeats` rounds of `--steps` steps (a round runs every
implementation in turn, so that a change of load hits all alike); the warm-up's extra time
over the median is the compile time. The JSON goes to benchmarks/results/sequence.json.
Target: funcdl's step <= 1.1x the hand-written JAX step with both backends.

    python benchmarks/bench_sequence.py [--repeats 5] [--steps 20]
"""
import argparse
import datetime
import json
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import funcdl as fdl  # noqa: E402

HIDDEN, LENGTH, BATCH, FEATURES, LR = 128, 100, 64, 32, 1e-3


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, LENGTH, FEATURES)).astype(np.float32)
    y = rng.normal(size=(BATCH, 1)).astype(np.float32)
    return x, y


def funcdl_model():
    lstm, head = fdl.nn.LSTM(HIDDEN, batch_first=True), fdl.nn.Linear(1)

    def init(key, x):
        k1, k2 = jax.random.split(key)
        return {"lstm": lstm.init(k1, x),
                "head": head.init(k2, jax.ShapeDtypeStruct((x.shape[0], HIDDEN), x.dtype))}

    def apply(params, x, *, key=None, train=False):
        out, _ = lstm.apply(params["lstm"], x)
        return head.apply(params["head"], out[:, -1, :])

    return fdl.nn.named_model("LSTMRegressor", init, apply)


def bench_funcdl(params, x, y, backend):
    model = funcdl_model()
    opt = fdl.optim.adam(LR)
    step = fdl.train.make_train_step(model, fdl.losses.mse_loss, opt, grad_backend=backend)
    state = {"params": jax.tree_util.tree_map(jnp.array, params)}
    state["opt"] = opt.init(state["params"])
    x, y = jnp.asarray(x), jnp.asarray(y)

    def run(steps):
        p, s = state["params"], state["opt"]
        for _ in range(steps):
            p, s, loss = step(p, s, x, y)
        loss.block_until_ready()
        state["params"], state["opt"] = p, s

    return run


def hand_jax(params, x, y):
    """The LSTM written directly: `lax.scan` over time, `jax.nn.sigmoid`, one fused matmul per
    gate block, and the same Adam update (funcdl's, which is PyTorch's)."""
    opt = fdl.optim.adam(LR)

    def loss_fn(p, x, y):
        cell = p["lstm"][0]
        xs = jnp.swapaxes(x, 0, 1) @ cell["w_ih"].T + cell["b_ih"] + cell["b_hh"]

        def step(carry, gx):
            h, c = carry
            gates = gx + h @ cell["w_hh"].T
            i, f, g, o = jnp.split(gates, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), None

        zeros = jnp.zeros((x.shape[0], HIDDEN), x.dtype)
        (h, _), _ = jax.lax.scan(step, (zeros, zeros), xs)
        pred = h @ p["head"]["w"] + p["head"]["b"]
        return jnp.mean((pred - y) ** 2)

    @jax.jit
    def train_step(p, s, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        updates, s = opt.update(grads, s, p)
        return fdl.optim.apply_updates(p, updates), s, loss

    state = {"params": jax.tree_util.tree_map(jnp.array, params)}
    state["opt"] = opt.init(state["params"])
    x, y = jnp.asarray(x), jnp.asarray(y)

    def run(steps):
        p, s = state["params"], state["opt"]
        for _ in range(steps):
            p, s, loss = train_step(p, s, x, y)
        loss.block_until_ready()
        state["params"], state["opt"] = p, s

    return run


def pytorch_eager(params, x, y):
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    lstm = torch.nn.LSTM(FEATURES, HIDDEN, batch_first=True)
    head = torch.nn.Linear(HIDDEN, 1)
    with torch.no_grad():
        cell = params["lstm"][0]
        for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
            kind = {"w": "weight", "b": "bias"}[name[0]] + name[1:]
            getattr(lstm, f"{kind}_l0").copy_(torch.tensor(np.asarray(cell[name])))
        head.weight.copy_(torch.tensor(np.asarray(params["head"]["w"]).T))
        head.bias.copy_(torch.tensor(np.asarray(params["head"]["b"])))
    opt = torch.optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=LR,
                           foreach=False)
    tx, ty = torch.tensor(x), torch.tensor(y)

    def run(steps):
        for _ in range(steps):
            opt.zero_grad()
            out, _ = lstm(tx)
            loss = torch.mean((head(out[:, -1, :]) - ty) ** 2)
            loss.backward()
            opt.step()

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    x, y = data()
    params = funcdl_model().init(jax.random.key(0), jnp.asarray(x))
    runs = {"funcdl (jax)": bench_funcdl(params, x, y, "jax"),
            "funcdl (funcdl)": bench_funcdl(params, x, y, "funcdl"),
            "hand-written JAX": hand_jax(params, x, y)}
    if not args.no_torch:
        try:
            runs["PyTorch eager"] = pytorch_eager(params, x, y)
        except ImportError:
            print("PyTorch is not installed (the bench extra): its row is left out")
    warm = {}
    for name, run in runs.items():
        started = time.perf_counter()
        run(args.steps)
        warm[name] = time.perf_counter() - started
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run(args.steps)
            times[name].append((time.perf_counter() - started) / args.steps)
    reference = statistics.median(times["hand-written JAX"])
    rows = []
    print(f"LSTM({HIDDEN}), sequence {LENGTH}, batch {BATCH}, {FEATURES} features, Adam: "
          f"ms per training step (median of {args.repeats} x {args.steps} steps)")
    for name in runs:
        median = statistics.median(times[name])
        compile_s = warm[name] - median * args.steps
        rows.append({"name": name, "ms_per_step": median * 1e3,
                     "vs_hand_jax": median / reference, "compile_s": compile_s})
        print(f"  {name:18s} {median * 1e3:8.2f} ms  {median / reference:5.2f}x hand-written JAX"
              f"  (compile {compile_s:.1f} s)")
    out = HERE / "results" / "sequence.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_sequence.py " + " ".join(argv or sys.argv[1:]),
        "jax": jax.__version__, "python": platform.python_version(),
        "workload": {"model": f"LSTM({HIDDEN})", "length": LENGTH, "batch": BATCH,
                     "features": FEATURES}, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
