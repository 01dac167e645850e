"""How far funcdl's float32 optimizers drift from torch.optim's over 1000 steps, eagerly and
under `jax.jit` (issue 9; the numbers quoted in `funcdl/optim/alias.py`'s docstrings).

Run from the repository root with the `bench` extra (torch==2.13.0, CPU):

    PYTHONPATH=. .venv/bin/python tests/golden/measure_optim_float32.py

Problem: 300 float32 params p_0 ~ U(0.5, 1.5) (NumPy seed 0), the elementwise quadratic
L = Σ 0.5 c (p - 0.25)² with c ~ U(0.5, 2), so g = c (p - 0.25) is computed the same way by
both libraries and only the optimizer's arithmetic differs. 1000 updates at lr 1e-4 (the
other hyperparameters are the defaults, adamw's weight_decay 1e-2 as in the issue). Printed:
the largest elementwise |p_funcdl - p_torch| / |p_torch| after 1000 updates, for funcdl run
eagerly (one `update` call per step, no jit) and jitted (all steps in one `lax.scan`); and the
same for float64, for scale.
"""
import jax
import jax.numpy as jnp
import numpy as np
import torch
from jax import lax

from funcdl import optim

NUM_PARAMS, NUM_STEPS, LR = 300, 1000, 1e-4
rng = np.random.default_rng(0)
P0 = rng.uniform(0.5, 1.5, NUM_PARAMS)
C = rng.uniform(0.5, 2.0, NUM_PARAMS)

CONFIGS = {  # name: (funcdl optimizer, torch class, torch kwargs)
    "sgd": (lambda: optim.sgd(LR), torch.optim.SGD, {}),
    "momentum": (lambda: optim.momentum(LR), torch.optim.SGD, {"momentum": 0.9}),
    "adagrad": (lambda: optim.adagrad(LR), torch.optim.Adagrad, {}),
    "rmsprop": (lambda: optim.rmsprop(LR), torch.optim.RMSprop, {}),
    "adam": (lambda: optim.adam(LR), torch.optim.Adam, {}),
    "adamw": (lambda: optim.adamw(LR, weight_decay=1e-2), torch.optim.AdamW, {"weight_decay": 1e-2}),
}


def grad(p, c):
    return c * (p - 0.25)


def run_torch(torch_class, kwargs, dtype):
    p = torch.tensor(P0, dtype=dtype, requires_grad=True)
    c = torch.tensor(C, dtype=dtype)
    opt = torch_class([p], lr=LR, foreach=False, **kwargs)
    for _ in range(NUM_STEPS):
        p.grad = grad(p.detach(), c)
        opt.step()
    return p.detach().numpy()


def run_eager(opt, dtype):
    p, c = jnp.asarray(P0, dtype), jnp.asarray(C, dtype)
    state = opt.init(p)
    with jax.disable_jit():
        for _ in range(NUM_STEPS):
            updates, state = opt.update(grad(p, c), state, p)
            p = optim.apply_updates(p, updates)
    return np.asarray(p)


def run_jit(opt, dtype):
    @jax.jit
    def run(p, c):
        def step(carry, _):
            p, state = carry
            updates, state = opt.update(grad(p, c), state, p)
            return (optim.apply_updates(p, updates), state), None
        return lax.scan(step, (p, opt.init(p)), None, length=NUM_STEPS)[0][0]
    return np.asarray(run(jnp.asarray(P0, dtype), jnp.asarray(C, dtype)))


def relative(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b) / np.abs(b)))


def main():
    print(f"jax {jax.__version__}, torch {torch.__version__}, {jax.devices()[0].platform}")
    print(f"{'optimizer':10s} {'f32 eager':>10s} {'f32 jit':>10s} {'f64 jit':>10s}")
    for name, (make, torch_class, kwargs) in CONFIGS.items():
        ref32 = run_torch(torch_class, kwargs, torch.float32)
        row = [relative(run_eager(make(), jnp.float32), ref32), relative(run_jit(make(), jnp.float32), ref32)]
        with jax.enable_x64(True):
            row.append(relative(run_jit(make(), jnp.float64), run_torch(torch_class, kwargs, torch.float64)))
        print(f"{name:10s} " + " ".join(f"{value:10.2e}" for value in row))


if __name__ == "__main__":
    main()
