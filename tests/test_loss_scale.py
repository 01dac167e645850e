"""float16's dynamic loss scaling (`funcdl/train/loss_scale.py`) in `fit` and `make_train_step`.

The oracle is `reference_run`, written here from torch.amp.GradScaler's rule alone: a Python
loop over the batches with `jax.grad` of `scale * loss` through the float16 forward, the
gradients unscaled in float32, and Python `if`s for skip/backoff/growth. The scale rule itself
is also checked against torch's own trajectories (tests/golden/loss_scale.json, written by
tests/golden/generate_loss_scale.py).
"""
import functools
import importlib.util
import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import autodiff, checkpoint, losses, nn, ops, optim, train
from funcdl.train import LossScaleState, loss_scale
from train_reference import assert_bitwise_equal, counting_compilations

ROOT = pathlib.Path(__file__).resolve().parent.parent
GOLDEN_DIR = ROOT / "tests" / "golden"
F16, F32 = jnp.dtype(jnp.float16), jnp.dtype(jnp.float32)
LR = 0.01

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 3)).astype(np.float32)
# targets of ~100: 2 * (pred - y) / 8 * 2**16 overflows float16, so the first steps skip
Y = (100 * np.sin(X[:, :1])).astype(np.float32)
PARAMS = {"w1": 0.5 * RNG.normal(size=(3, 8)).astype(np.float32),
          "b1": np.zeros((1, 8), np.float32),
          "w2": 0.5 * RNG.normal(size=(8, 1)).astype(np.float32),
          "b2": np.zeros((1, 1), np.float32)}


def apply(p, x):  # fdl.ops: the same function for jax.grad and fdl.autodiff
    return ops.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def cast(tree, dtype):
    return jax.tree_util.tree_map(lambda a: ops.astype(a, dtype), tree,
                                  is_leaf=lambda a: isinstance(a, autodiff.Tensor))


@functools.partial(jax.jit, static_argnames="backend")
def scaled_grads(p, xb, yb, scale, backend="jax"):
    """Gradient of `scale * mse(forward in float16)`, arriving in float32."""
    def scaled_loss(q):
        pred = ops.astype(apply(cast(q, F16), ops.astype(xb, F16)), F32)
        return losses.mse_loss(pred, yb) * scale
    return (jax.grad if backend == "jax" else autodiff.grad)(scaled_loss)(p)


def reference_run(params, batches, scale=2.0 ** 16, good_steps=0, lr=LR, backend="jax"):
    """torch.amp.GradScaler with plain SGD: `(params, scale, good_steps, [(scale, good)...])`."""
    params, scale = cast(params, F32), np.float32(scale)
    trajectory = []
    for xb, yb in batches:
        grads = scaled_grads(params, xb, yb, scale, backend)
        grads = {k: g * (np.float32(1) / scale) for k, g in grads.items()}
        if not all(bool(jnp.all(jnp.isfinite(g))) for g in grads.values()):
            scale, good_steps = np.float32(scale * 0.5), 0  # skip the step, back off
        else:
            params = {k: params[k] - lr * grads[k] for k in params}
            good_steps += 1
            if good_steps == 2000:
                if np.isfinite(np.float32(scale * 2)):
                    scale = np.float32(scale * 2)
                good_steps = 0
        trajectory.append((float(scale), good_steps))
    return params, scale, good_steps, trajectory


def in_order(epochs, batch_size, x=X, y=Y):
    return [(x[s:s + batch_size], y[s:s + batch_size])
            for _ in range(epochs) for s in range(0, len(x), batch_size)]


def fit16(epochs, batch_size=8, opt=None, **options):
    options = dict(dict(shuffle=False, progress=False, compute_dtype=jnp.float16), **options)
    return train.fit(apply, PARAMS, losses.mse_loss, opt or optim.sgd(LR), X, Y, epochs=epochs,
                     batch_size=batch_size, **options)


def assert_close(actual, expected):
    jax.tree_util.tree_map(lambda a, e: np.testing.assert_allclose(
        np.asarray(a), np.asarray(e), rtol=1e-5, atol=1e-6), actual, expected)


# ---- (a) fit against the reference loop ------------------------------------------------------
@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("backend", ["jax", "funcdl"])
def test_fit_float16_follows_the_reference_scaler_over_several_epochs(backend):
    params, state, history = fit16(4, grad_backend=backend)
    expected, scale, good, trajectory = reference_run(PARAMS, in_order(4, 8), backend=backend)
    # skips at the start (and, with jax.grad's rounding, one more later), then training
    assert [s for s, _ in trajectory[:7]] == [2.0 ** k for k in range(15, 8, -1)]
    assert trajectory[7] == (2.0 ** 9, 1)
    assert backend != "jax" or trajectory[11] == (2.0 ** 8, 0)
    assert isinstance(state, LossScaleState)
    assert state.scale.dtype == F32 and state.scale.shape == ()
    assert state.good_steps.dtype == jnp.int32 and state.good_steps.shape == ()
    assert float(state.scale) == scale and int(state.good_steps) == good
    assert_close(params, expected)
    assert all(np.isfinite(history["loss"]))


# ---- (b) overflow: skipped steps, halved scale, no NaN stop ----------------------------------
@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_an_overflowing_step_is_skipped_and_halves_the_scale_without_stopping_fit():
    opt = optim.adam(1e-2)
    params, state, history = fit16(1, batch_size=None, opt=opt)  # one full-batch step
    assert float(state.scale) == 2.0 ** 15 and int(state.good_steps) == 0
    assert_bitwise_equal(params, PARAMS)  # params unchanged
    assert_bitwise_equal(state.inner, opt.init(PARAMS))  # Adam's count and moments too
    assert np.isfinite(history["loss"][0])
    # reference: the full batch skips until the scale fits, then trains
    params, state, _ = fit16(12, batch_size=None, opt=optim.sgd(LR))
    expected, scale, good, trajectory = reference_run(PARAMS, in_order(12, len(X)))
    assert trajectory[0] == (2.0 ** 15, 0) and good > 0
    assert float(state.scale) == scale and int(state.good_steps) == good
    assert_close(params, expected)


def test_a_non_finite_loss_still_stops_a_float16_fit_after_the_skips_before_it():
    x = X.copy()
    x[35] = np.nan  # in the 5th batch: the 4 steps before it are skipped (overflow)
    with pytest.raises(FloatingPointError, match="epoch 0, step 4") as info:
        train.fit(apply, PARAMS, losses.mse_loss, optim.sgd(LR), x, Y, epochs=3, batch_size=8,
                  shuffle=False, progress=False, compute_dtype=jnp.float16)
    expected, scale, good, _ = reference_run(PARAMS, in_order(1, 8)[:4])
    state = info.value.opt_state
    assert isinstance(state, LossScaleState)
    assert float(state.scale) == scale == 2.0 ** 12 and int(state.good_steps) == good == 0
    assert_close(info.value.params, expected)
    assert_bitwise_equal(info.value.params, PARAMS)


def test_an_infinite_update_on_a_step_that_is_not_skipped_still_stops_fit():
    opt = optim.sgd(float("inf"))
    start = LossScaleState(opt.init(PARAMS), 1.0, 0)  # no overflow: the step is applied
    with pytest.raises(FloatingPointError, match="epoch 0, step 0") as info:
        fit16(1, opt=opt, opt_state=start)
    assert_bitwise_equal(info.value.params, PARAMS)
    assert float(info.value.opt_state.scale) == 1.0


# ---- (c) growth ------------------------------------------------------------------------------
def test_the_2000th_finite_step_doubles_the_scale():
    opt = optim.sgd(LR)
    grown = fit16(1, opt_state=LossScaleState(opt.init(PARAMS), 64.0, 1999), batch_size=None)[1]
    assert float(grown.scale) == 128.0 and int(grown.good_steps) == 0
    counted = fit16(1, opt_state=LossScaleState(opt.init(PARAMS), 64.0, 1998),
                    batch_size=None)[1]
    assert float(counted.scale) == 64.0 and int(counted.good_steps) == 1999
    expected = reference_run(PARAMS, in_order(3, 8), 64.0, 1995)
    params, state, _ = fit16(3, opt_state=LossScaleState(opt.init(PARAMS), 64.0, 1995))
    assert float(state.scale) == expected[1] and int(state.good_steps) == expected[2]
    assert expected[3][4] == (128.0, 0)
    assert_close(params, expected[0])


def load_generator():
    pytest.importorskip("torch")
    path = GOLDEN_DIR / "generate_loss_scale.py"
    spec = importlib.util.spec_from_file_location("generate_loss_scale", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GOLDEN = json.loads((GOLDEN_DIR / "loss_scale.json").read_text())


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[c["name"] for c in GOLDEN["cases"]])
def test_the_scale_rule_is_torch_grad_scalers(case):
    flags = np.concatenate([np.full(count, bool(inf)) for inf, count in case["runs"]])

    @jax.jit
    def run(flags):
        def body(carry, found_inf):
            carry = loss_scale.next_scale(*carry, found_inf)
            return carry, carry
        start = (jnp.float32(case["init_scale"]), jnp.int32(0))
        return jax.lax.scan(body, start, flags)[1]

    scales, goods = map(np.asarray, run(flags))
    ends = np.cumsum([count for _, count in case["runs"]])
    recorded = sorted({i for end, (_, count) in zip(ends, case["runs"])
                       for i in (end - count, end - 1)})
    assert [[float(scales[i]), int(goods[i])] for i in recorded] == case["states"]


@pytest.mark.slow  # ~6 s: the slow tier (`make test-slow`, run by CI)
def test_the_committed_golden_file_is_what_torch_writes_now():
    generator = load_generator()
    assert (GOLDEN_DIR / "loss_scale.json").read_text() == generator.as_text(generator.generate())


# ---- (d) why: float16 gradients underflow without the scale ----------------------------------
def test_the_float16_first_update_is_the_float32_one_where_unscaled_gradients_underflow():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(64, 4)).astype(np.float32), rng.normal(size=(64, 1)).astype(
        np.float32)
    model = nn.Sequential(nn.Linear(16), nn.Tanh(), nn.Linear(1))
    params = model.init(jax.random.key(0), x)

    def small_loss(pred, target):  # gradients around 1e-8: below float16's subnormals
        return 1e-6 * losses.mse_loss(pred, target)

    def update(dtype):
        new = train.fit(model, params, small_loss, optim.sgd(1e4), x, y, epochs=1,
                        progress=False, compute_dtype=dtype)[0]
        return jax.tree_util.tree_map(lambda a, b: np.float64(a) - np.float64(b), new, params)

    def relative_error(update, reference):
        pairs = zip(jax.tree_util.tree_leaves(update), jax.tree_util.tree_leaves(reference))
        difference = sum(float(np.sum((u - r) ** 2)) for u, r in pairs)
        return (difference / sum(float(np.sum(r ** 2))
                                 for r in jax.tree_util.tree_leaves(reference))) ** 0.5

    reference = update(None)
    # without scaling (written out): the first layer's gradient is exactly 0 in float16
    unscaled = jax.grad(lambda q: small_loss(
        model.apply(cast(q, F16), x.astype(F16)).astype(F32), y))(params)
    assert np.all(np.asarray(unscaled[0]["w"]) == 0)
    unscaled_update = jax.tree_util.tree_map(lambda g: -1e4 * np.float64(g), unscaled)
    assert relative_error(unscaled_update, reference) > 0.3
    assert relative_error(update(jnp.float16), reference) < 0.01


# ---- (e) checkpoint and resume ---------------------------------------------------------------
def test_resume_keeps_the_scale_bitwise(tmp_path):
    path = tmp_path / "run.safetensors"
    kwargs = dict(shuffle=True, key=jax.random.key(3))
    full = fit16(6, **kwargs)
    first = fit16(3, checkpoint=path, **kwargs)
    stored = checkpoint.load(path)
    assert stored["['opt_state'].scale"] == np.float32(first[1].scale)
    assert stored["['opt_state'].good_steps"].dtype == np.int32
    resumed = fit16(6, checkpoint=path, resume=True, **kwargs)
    assert isinstance(resumed[1], LossScaleState)
    assert_bitwise_equal(resumed[:2], full[:2])
    assert resumed[2] == full[2]
    assert float(full[1].scale) < 2.0 ** 16  # the scale did move


# ---- (f) make_train_step ---------------------------------------------------------------------
def test_make_train_step_float16_scales_the_loss():
    opt = optim.sgd(LR)
    step = train.make_train_step(apply, losses.mse_loss, opt, compute_dtype=jnp.float16)
    batches = in_order(1, 8)
    expected, scale, good, _ = reference_run(PARAMS, batches)
    for start in (None, "plain"):  # a fresh state, or the optimizer's own wrapped
        params = cast(PARAMS, F32)
        state = None if start is None else opt.init(params)
        losses_seen = []
        for xb, yb in batches:
            params, state, loss = step(params, state, xb, yb)
            losses_seen.append(float(loss))
        assert isinstance(state, LossScaleState)
        assert float(state.scale) == scale and int(state.good_steps) == good
        assert_close(params, expected)
        assert np.isfinite(losses_seen).all()


def test_a_loss_scale_state_without_float16_is_a_type_error():
    opt = optim.sgd(LR)
    state = loss_scale.wrap(opt.init(PARAMS))
    message = re.escape("`opt_state` is a LossScaleState") + ".*compute_dtype=bfloat16"
    with pytest.raises(TypeError, match=message):
        fit16(1, opt_state=state, compute_dtype=jnp.bfloat16)
    with pytest.raises(TypeError, match="compute_dtype=None.*opt_state.inner"):
        fit16(1, opt_state=state, compute_dtype=None)
    step = train.make_train_step(apply, losses.mse_loss, opt)
    with pytest.raises(TypeError, match=re.escape("`opt_state` is a LossScaleState")):
        step(cast(PARAMS, F32), state, X[:8], Y[:8])
    with pytest.raises(ValueError, match=re.escape("`opt_state.scale` must be a scalar")):
        fit16(1, opt_state=LossScaleState(opt.init(PARAMS), jnp.ones(2), 0))


def test_a_plain_state_passed_to_a_float16_fit_gets_a_fresh_scale():
    opt = optim.sgd(LR, momentum=0.9)
    given = opt.init(PARAMS)
    _, state, _ = fit16(1, opt=opt, opt_state=given, batch_size=None)
    assert isinstance(state, LossScaleState) and float(state.scale) == 2.0 ** 15
    assert type(state.inner) is type(given)


# ---- (g) bfloat16 and float32 are not scaled -------------------------------------------------
@pytest.mark.parametrize("dtype", [jnp.bfloat16, None], ids=["bfloat16", "float32"])
def test_other_dtypes_have_no_loss_scale(dtype):
    opt, y = optim.sgd(0.1), Y / 100  # gradients that need no scale
    params, state, _ = train.fit(apply, PARAMS, losses.mse_loss, opt, X, y, epochs=2,
                                 batch_size=8, shuffle=False, progress=False,
                                 compute_dtype=dtype)
    assert type(state) is type(opt.init(PARAMS))  # not a LossScaleState
    compute = F32 if dtype is None else jnp.dtype(dtype)

    @jax.jit
    def grads_of(q, xb, yb):  # no scale: the gradient of the loss itself
        return jax.grad(lambda q: losses.mse_loss(
            apply(cast(q, compute), xb.astype(compute)).astype(F32), yb))(q)

    expected = cast(PARAMS, F32)
    for xb, yb in in_order(2, 8, X, y):
        grads = grads_of(expected, xb, yb)
        expected = {k: expected[k] - 0.1 * grads[k] for k in expected}
    jax.tree_util.tree_map(lambda a, e: np.testing.assert_allclose(a, e, atol=1e-7),
                           params, expected)


# ---- compiles --------------------------------------------------------------------------------
def test_a_second_float16_fit_with_an_equal_optimizer_compiles_nothing():
    first = fit16(2, opt=optim.adam(1e-2))
    with counting_compilations() as compiled:
        second = fit16(2, opt=optim.adam(1e-2))
    assert compiled == []
    assert_bitwise_equal(second[:2], first[:2])


# ---- the guide -------------------------------------------------------------------------------
@pytest.mark.slow  # ~7 s: the slow tier (`make test-slow`, run by CI)
def test_every_python_block_of_the_mixed_precision_guide_runs_alone():
    guide = ROOT / "docs" / "guides" / "mixed-precision.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(), re.S)
    assert len(blocks) >= 2
    for code in blocks:
        exec(compile(code, str(guide), "exec"), {"__name__": "__guide__"})
