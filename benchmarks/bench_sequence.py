"""Time sequence-model training steps: funcdl's jitted step (`make_train_step`, with
`grad_backend="jax"` and `"funcdl"`) against the same model hand-written in JAX (`lax.scan`,
`jax.nn`, optax-free Adam written as funcdl's) and PyTorch eager on CPU.

Workload `lstm` (issue "state and sequences"): `LSTM(128)` over sequences of 100 steps,
batches of 64, 32 input features, a `Linear(1)` on the last step's output, the mean squared
error, Adam 1e-3. Every implementation starts from the same weights (PyTorch's copied in) and
does the same work per step: forward over the 100 steps, backward, one Adam update.

Workload `transformer` (issue "Speed"): `TransformerEncoder` of 2 post-norm
`TransformerEncoderLayer(128, 4, dim_feedforward=512, dropout=0.0, batch_first=True)` (ReLU)
over batches of 32 sequences of 64 tokens of 128 features, the mean over the sequence, a
`Linear(1)`, the mean squared error, Adam 1e-3; the hand-written JAX step writes the same
math with `jax.nn` and matmuls, PyTorch runs `nn.TransformerEncoder` (its fast path is
inference-only: a training step takes the ordinary one).

Each row is the median of `--repeats` rounds of `--steps` steps (a round runs every
implementation in turn, so that a change of load hits all alike); the warm-up's extra time
over the median is the compile time. The JSON goes to benchmarks/results/sequence.json.
Target: funcdl's step <= 1.1x the hand-written JAX step with both backends.

    python benchmarks/bench_sequence.py [--repeats 5] [--steps 20] [--workloads lstm,transformer]

The JSON keeps the rows of a workload that a run leaves out (`--workloads lstm` refreshes the
LSTM's rows only).
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


def lstm_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, LENGTH, FEATURES)).astype(np.float32)
    y = rng.normal(size=(BATCH, 1)).astype(np.float32)
    return x, y


def lstm_model():
    lstm, head = fdl.nn.LSTM(HIDDEN, batch_first=True), fdl.nn.Linear(1)

    def init(key, x):
        k1, k2 = jax.random.split(key)
        return {"lstm": lstm.init(k1, x),
                "head": head.init(k2, jax.ShapeDtypeStruct((x.shape[0], HIDDEN), x.dtype))}

    def apply(params, x, *, key=None, train=False):
        out, _ = lstm.apply(params["lstm"], x)
        return head.apply(params["head"], out[:, -1, :])

    return fdl.nn.named_model("LSTMRegressor", init, apply)


def bench_funcdl(model, params, x, y, backend):
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


def lstm_loss(p, x, y):
    """The LSTM written directly: `lax.scan` over time, `jax.nn.sigmoid`, one fused matmul per
    gate block."""
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


def hand_jax(loss_fn, params, x, y):
    """`loss_fn`'s gradient by `jax.value_and_grad` and the same Adam update (funcdl's, which is
    PyTorch's), in one jitted step."""
    opt = fdl.optim.adam(LR)

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


def lstm_pytorch(params, x, y):
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




# ---- the transformer encoder -----------------------------------------------------------------
D_MODEL, HEADS, FEEDFORWARD, LAYERS, TOKENS, SEQ_BATCH, EPS = 128, 4, 512, 2, 64, 32, 1e-5


def transformer_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(SEQ_BATCH, TOKENS, D_MODEL)).astype(np.float32)
    y = rng.normal(size=(SEQ_BATCH, 1)).astype(np.float32)
    return x, y


def transformer_model():
    layer = fdl.nn.TransformerEncoderLayer(D_MODEL, HEADS, dim_feedforward=FEEDFORWARD,
                                           dropout=0.0, batch_first=True)
    encoder, head = fdl.nn.TransformerEncoder(layer, LAYERS), fdl.nn.Linear(1)

    def init(key, x):
        k1, k2 = jax.random.split(key)
        return {"encoder": encoder.init(k1, x),
                "head": head.init(k2, jax.ShapeDtypeStruct((x.shape[0], D_MODEL), x.dtype))}

    def apply(params, x, *, key=None, train=False):
        out = encoder.apply(params["encoder"], x)
        return head.apply(params["head"], fdl.ops.mean(out, axis=1))

    return fdl.nn.named_model("TransformerRegressor", init, apply)


def _layer_norm(p, x):
    centred = x - jnp.mean(x, axis=-1, keepdims=True)
    return centred / jnp.sqrt(jnp.mean(centred ** 2, axis=-1, keepdims=True) + EPS) * p["w"] + p["b"]


def _encoder_layer(p, x):
    """PyTorch's post-norm layer on x (N, L, E): x = LN(x + MHA(x)); x = LN(x + FF(x))."""
    n, length, e = x.shape
    a, d = p["self_attn"], e // HEADS
    q, k, v = jnp.split(x @ a["in_proj_w"].T + a["in_proj_b"], 3, axis=-1)
    q, k, v = (t.reshape(n, length, HEADS, d).transpose(0, 2, 1, 3) for t in (q, k, v))
    weights = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2) / np.sqrt(d).astype(x.dtype), axis=-1)
    attended = (weights @ v).transpose(0, 2, 1, 3).reshape(n, length, e)
    x = _layer_norm(p["norm1"], x + attended @ a["out_proj_w"].T + a["out_proj_b"])
    hidden = jax.nn.relu(x @ p["linear1"]["w"] + p["linear1"]["b"])
    return _layer_norm(p["norm2"], x + hidden @ p["linear2"]["w"] + p["linear2"]["b"])


def transformer_loss(p, x, y):
    for layer in p["encoder"]["layers"]:
        x = _encoder_layer(layer, x)
    pred = jnp.mean(x, axis=1) @ p["head"]["w"] + p["head"]["b"]
    return jnp.mean((pred - y) ** 2)


def transformer_pytorch(params, x, y):
    import torch

    layer = torch.nn.TransformerEncoderLayer(D_MODEL, HEADS, FEEDFORWARD, dropout=0.0,
                                             batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
    head = torch.nn.Linear(D_MODEL, 1)
    t = lambda a, transpose=False: torch.tensor(np.asarray(a).T if transpose else np.asarray(a))  # noqa: E731
    with torch.no_grad():
        for mine, theirs in zip(params["encoder"]["layers"], encoder.layers):
            a = mine["self_attn"]
            theirs.self_attn.in_proj_weight.copy_(t(a["in_proj_w"]))
            theirs.self_attn.in_proj_bias.copy_(t(a["in_proj_b"]))
            theirs.self_attn.out_proj.weight.copy_(t(a["out_proj_w"]))
            theirs.self_attn.out_proj.bias.copy_(t(a["out_proj_b"]))
            for name in ("linear1", "linear2"):
                getattr(theirs, name).weight.copy_(t(mine[name]["w"], transpose=True))
                getattr(theirs, name).bias.copy_(t(mine[name]["b"]))
            for name in ("norm1", "norm2"):
                getattr(theirs, name).weight.copy_(t(mine[name]["w"]))
                getattr(theirs, name).bias.copy_(t(mine[name]["b"]))
        head.weight.copy_(t(params["head"]["w"], transpose=True))
        head.bias.copy_(t(params["head"]["b"]))
    opt = torch.optim.Adam(list(encoder.parameters()) + list(head.parameters()), lr=LR,
                           foreach=False)
    tx, ty = torch.tensor(x), torch.tensor(y)

    def run(steps):
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.mean((head(encoder(tx).mean(dim=1)) - ty) ** 2)
            loss.backward()
            opt.step()

    return run


WORKLOADS = {
    "lstm": (lstm_data, lstm_model, lstm_loss, lstm_pytorch,
             {"model": f"LSTM({HIDDEN})", "length": LENGTH, "batch": BATCH, "features": FEATURES},
             f"LSTM({HIDDEN}), sequence {LENGTH}, batch {BATCH}, {FEATURES} features, Adam"),
    "transformer": (transformer_data, transformer_model, transformer_loss, transformer_pytorch,
                    {"model": f"TransformerEncoder({LAYERS} x TransformerEncoderLayer({D_MODEL}, "
                              f"{HEADS}, dim_feedforward={FEEDFORWARD}, dropout=0.0))",
                     "length": TOKENS, "batch": SEQ_BATCH, "features": D_MODEL,
                     "head": "mean over the sequence, Linear(1), MSE"},
                    f"TransformerEncoder, {LAYERS} layers, d_model {D_MODEL}, {HEADS} heads, "
                    f"FF {FEEDFORWARD}, sequence {TOKENS}, batch {SEQ_BATCH}, Adam"),
}


def measure(workload, repeats, steps, torch_row=True):
    """The rows of one workload: every implementation, `repeats` rounds of `steps` steps."""
    make_data, make_model, loss_fn, make_torch, _, title = WORKLOADS[workload]
    x, y = make_data()
    model = make_model()
    params = model.init(jax.random.key(0), jnp.asarray(x))
    runs = {"funcdl (jax)": bench_funcdl(model, params, x, y, "jax"),
            "funcdl (funcdl)": bench_funcdl(model, params, x, y, "funcdl"),
            "hand-written JAX": hand_jax(loss_fn, params, x, y)}
    if torch_row:
        try:
            runs["PyTorch eager"] = make_torch(params, x, y)
        except ImportError:
            print("PyTorch is not installed (the bench extra): its row is left out")
    warm = {}
    for name, run in runs.items():
        started = time.perf_counter()
        run(steps)
        warm[name] = time.perf_counter() - started
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run(steps)
            times[name].append((time.perf_counter() - started) / steps)
    reference = statistics.median(times["hand-written JAX"])
    rows = []
    print(f"{title}: ms per training step (median of {repeats} x {steps} steps)")
    for name in runs:
        median = statistics.median(times[name])
        compile_s = max(0.0, warm[name] - median * steps)
        rows.append({"name": name, "ms_per_step": median * 1e3,
                     "vs_hand_jax": median / reference, "compile_s": compile_s})
        print(f"  {name:18s} {median * 1e3:8.2f} ms  {median / reference:5.2f}x hand-written JAX"
              f"  (compile {compile_s:.1f} s)")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workloads", default="lstm,transformer",
                        help=f"comma-separated, of {', '.join(WORKLOADS)}")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results" / "sequence.json"))
    args = parser.parse_args(argv)
    names = [w for w in args.workloads.split(",") if w]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown or not names:
        parser.error(f"--workloads: unknown {unknown}, expected some of {list(WORKLOADS)}")
    out = pathlib.Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    results = dict(previous.get("workloads", {}))
    command = "python benchmarks/bench_sequence.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for name in names:
        results[name] = {"date": date, "command": command, "workload": WORKLOADS[name][4],
                         "rows": measure(name, args.repeats, args.steps, not args.no_torch)}
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"date": date, "command": command, "jax": jax.__version__,
                               "python": platform.python_version(), "workloads": results},
                              indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
