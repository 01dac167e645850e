"""Tests for `funcdl/optim/schedules.py`: torch.optim.lr_scheduler golden values, the closed
forms under hypothesis, jit/scan use and argument validation.

Golden values: `tests/golden/schedules.json`, written by `tests/golden/generate_optim.py`.
"""
import importlib.util
import json
import math
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax import lax

from funcdl.optim import schedules

GOLDEN_DIR = pathlib.Path(__file__).resolve().parent / "golden"
GOLDEN = json.loads((GOLDEN_DIR / "schedules.json").read_text())
CASES = {f"{case['name']}-{index}": case for index, case in enumerate(GOLDEN["cases"])}


def make_schedule(case):
    return getattr(schedules, case["name"])(case["lr"], **case["kwargs"])


@pytest.mark.parametrize("name", CASES)
def test_float64_matches_torch_scheduler(name, x64):
    case = CASES[name]
    values = make_schedule(case)(jnp.arange(GOLDEN["num_steps"]))
    assert values.dtype == jnp.float64
    # torch updates most schedulers recursively (lr *= gamma, ...): a few ulp away from the
    # closed form; the atol covers a cosine at exactly eta_min = 0.
    np.testing.assert_allclose(values, case["values"], rtol=1e-12, atol=1e-15 * case["lr"])


@pytest.mark.parametrize("name", CASES)
def test_float32_matches_torch_scheduler(name):
    case = CASES[name]
    values = make_schedule(case)(jnp.arange(GOLDEN["num_steps"]))
    assert values.dtype == jnp.float32
    np.testing.assert_allclose(values, case["values"], rtol=2e-6, atol=1e-7 * case["lr"])


def test_golden_cases_cover_every_schedule():
    assert {case["name"] for case in GOLDEN["cases"]} == {
        "constant", "step_decay", "exponential", "cosine_decay", "warmup_cosine"
    }


def test_live_golden_json_is_current():
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location(
        "generate_optim", GOLDEN_DIR / "generate_optim.py"
    )
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    fresh = generator.generate_schedules()
    assert [(c["name"], c["lr"], c["kwargs"]) for c in fresh["cases"]] == [
        (c["name"], c["lr"], c["kwargs"]) for c in GOLDEN["cases"]
    ]
    for fresh_case, stored_case in zip(fresh["cases"], GOLDEN["cases"]):
        np.testing.assert_allclose(fresh_case["values"], stored_case["values"], rtol=1e-13)


# ----------------------------------------------------------------------------- closed forms

# The x64 fixture is a context for the whole test, so reusing it across examples is fine.
FIXTURE_CHECK = HealthCheck.function_scoped_fixture
rates = st.floats(1e-4, 10.0)
steps = st.integers(0, 10_000)


@settings(max_examples=40, deadline=None, suppress_health_check=[FIXTURE_CHECK])
@given(lr=rates, step_size=st.integers(1, 100), gamma=st.floats(0.05, 1.0), step=steps)
def test_step_decay_formula(lr, step_size, gamma, step, x64):
    expected = lr * gamma ** (step // step_size)
    actual = float(schedules.step_decay(lr, step_size, gamma)(step))
    # pow's error grows with the exponent (up to 10^4 here), as torch's repeated products do.
    assert math.isclose(actual, expected, rel_tol=1e-10, abs_tol=1e-300)


@settings(max_examples=40, deadline=None, suppress_health_check=[FIXTURE_CHECK])
@given(lr=rates, total_steps=st.integers(1, 1000), step=steps, fraction=st.floats(0.0, 1.0))
def test_cosine_decay_stays_between_eta_min_and_lr(lr, total_steps, step, fraction, x64):
    eta_min = fraction * lr
    schedule = schedules.cosine_decay(lr, total_steps, eta_min)
    value = float(schedule(step))
    assert eta_min - 1e-12 <= value <= lr + 1e-12
    if step <= total_steps:  # falling until total_steps ...
        assert float(schedule(min(step + 1, total_steps))) <= value + 1e-12
    # ... and periodic after it, as torch's CosineAnnealingLR
    assert math.isclose(float(schedule(step + 2 * total_steps)), value, rel_tol=1e-9,
                        abs_tol=1e-12)


@settings(max_examples=40, deadline=None, suppress_health_check=[FIXTURE_CHECK])
@given(
    lr=rates,
    warmup_steps=st.integers(0, 50),
    decay_steps=st.integers(1, 500),
    step=st.integers(0, 1000),
    fraction=st.floats(0.0, 1.0),
)
def test_warmup_cosine_shape(lr, warmup_steps, decay_steps, step, fraction, x64):
    total_steps = warmup_steps + decay_steps
    eta_min = fraction * lr
    schedule = schedules.warmup_cosine(lr, warmup_steps, total_steps, eta_min=eta_min)
    value = float(schedule(step))
    assert math.isclose(float(schedule(warmup_steps)), lr, rel_tol=1e-12)  # the peak
    if step < warmup_steps:
        assert math.isclose(value, lr * step / warmup_steps, rel_tol=1e-12, abs_tol=1e-300)
    elif step >= total_steps:
        assert math.isclose(value, eta_min, rel_tol=1e-12, abs_tol=1e-15)  # held, not periodic
    else:
        assert eta_min - 1e-12 <= value <= lr + 1e-12
        assert float(schedule(step + 1)) <= value + 1e-12


# ----------------------------------------------------------------------------- use in jax


ALL = {
    "constant": schedules.constant(0.1),
    "step_decay": schedules.step_decay(0.1, step_size=3),
    "exponential": schedules.exponential(0.1, gamma=0.9),
    "cosine_decay": schedules.cosine_decay(0.1, total_steps=10),
    "warmup_cosine": schedules.warmup_cosine(0.1, warmup_steps=3, total_steps=10),
}


@pytest.mark.parametrize("name", ALL)
def test_traced_step_in_jit_and_scan(name):
    schedule = ALL[name]
    eager = schedule(jnp.arange(12))
    jitted = jax.jit(schedule)(jnp.arange(12, dtype=jnp.int32))

    def body(carry, step):
        return carry, schedule(step)

    _, scanned = lax.scan(body, None, jnp.arange(12))
    # Fusion may round differently; (1 + cos) cancels near the end of a cosine, hence the atol.
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(scanned, eager, rtol=1e-6, atol=1e-8)
    assert schedule(5).shape == () and schedule(5).dtype == jnp.float32
    assert float(schedule(5)) == pytest.approx(float(eager[5]), rel=1e-6)


# ----------------------------------------------------------------------------- validation

INVALID = [
    (schedules.constant, (-0.1,), {}, "`lr` must be >= 0, got -0.1"),
    (schedules.step_decay, (-1.0, 10), {}, "`lr` must be >= 0, got -1.0"),
    (schedules.step_decay, (0.1, 0), {}, "`step_size` must be an int >= 1, got 0"),
    (schedules.step_decay, (0.1, 2.5), {}, "`step_size` must be an int >= 1, got 2.5"),
    (schedules.exponential, (-0.1, 0.9), {}, "`lr` must be >= 0, got -0.1"),
    (schedules.cosine_decay, (0.1, 0), {}, "`total_steps` must be an int >= 1, got 0"),
    (schedules.cosine_decay, (0.1, 10), {"eta_min": -1e-3},
     "`eta_min` must be >= 0, got -0.001"),
    (schedules.warmup_cosine, (0.1, 10, 10), {},
     "`warmup_steps` must be an int in [0, total_steps=10), got 10"),
    (schedules.warmup_cosine, (0.1, -1, 10), {},
     "`warmup_steps` must be an int in [0, total_steps=10), got -1"),
    (schedules.warmup_cosine, (0.1, 2, True), {}, "`total_steps` must be an int >= 1, got True"),
    (schedules.warmup_cosine, (0.1, 2, 10), {"warmup_start": -0.1},
     "`warmup_start` must be >= 0, got -0.1"),
]


@pytest.mark.parametrize("factory, args, kwargs, message", INVALID)
def test_invalid_arguments_raise(factory, args, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        factory(*args, **kwargs)


# ----------------------------------------------------------------------------- records (issue 17)

@pytest.mark.parametrize("build, changed", [
    (lambda: schedules.constant(0.1), lambda: schedules.constant(0.2)),
    (lambda: schedules.step_decay(0.1, 10), lambda: schedules.step_decay(0.1, 10, gamma=0.5)),
    (lambda: schedules.exponential(0.1, 0.9), lambda: schedules.exponential(0.1, 0.99)),
    (lambda: schedules.cosine_decay(1e-3, 100), lambda: schedules.cosine_decay(1e-3, 100, eta_min=1e-5)),
    (lambda: schedules.warmup_cosine(1e-3, 10, 100), lambda: schedules.warmup_cosine(1e-3, 11, 100)),
])
def test_a_schedule_is_keyed_by_its_construction(build, changed):
    # Schedules are plain functions (compared by identity); an optimizer given one as `lr`
    # compares it by this key, so a rebuilt schedule makes an equal optimizer.
    from funcdl.construction import construction_key
    first, again = build(), build()
    assert first is not again and construction_key(first) == construction_key(again)
    assert hash(construction_key(first)) == hash(construction_key(again))
    assert construction_key(first) != construction_key(changed())
