"""fdl.losses against PyTorch (golden values in tests/golden/losses.json), closed forms and NumPy.

One oracle helper, `check_against_torch`, runs a golden case through funcdl: the loss value and
the gradient with respect to the prediction under BOTH `jax.grad` and `fdl.autodiff.grad`.
"""
import functools
import importlib.util
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import funcdl as fdl
from funcdl import losses, ops

GOLDEN = pathlib.Path(__file__).parent / "golden"
CASES = json.loads((GOLDEN / "losses.json").read_text())["cases"]
TOLERANCE = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=1e-5, atol=1e-6)}
CONSTANT_OPTIONS = ("weight", "pos_weight")


def golden_arguments(case):
    """(input, target, keyword options, cotangent or None) of a golden case, as jax arrays."""
    dtype = np.dtype(case["dtype"])
    target_dtype = np.int64 if case["target_dtype"] == "int" else dtype
    options = {key: jnp.asarray(np.asarray(value, dtype)) if key in CONSTANT_OPTIONS else value
               for key, value in case["options"].items()}
    options["reduction"] = case["reduction"]
    cotangent = None if case["cotangent"] is None else jnp.asarray(np.asarray(case["cotangent"], dtype))
    return (jnp.asarray(np.asarray(case["input"], dtype)), jnp.asarray(np.asarray(case["target"], target_dtype)),
            options, cotangent)


def check_against_torch(case):
    """funcdl's value and input gradient (jax.grad and fdl.autodiff.grad) equal PyTorch's.

    Returns the worst relative errors {"value", "jax", "funcdl"} over entries above atol, for reporting.
    """
    loss = getattr(losses, case["loss"])
    input, target, options, cotangent = golden_arguments(case)

    def objective(x):
        value = loss(x, target, **options)
        return value if cotangent is None else ops.sum(value * cotangent)

    results = {"value": loss(input, target, **options), "jax": jax.grad(objective)(input),
               "funcdl": fdl.autodiff.grad(objective)(input)}
    expected = {"value": np.asarray(case["value"]), "jax": np.asarray(case["grad"]),
                "funcdl": np.asarray(case["grad"])}
    errors = {}
    for key, result in results.items():
        assert result.dtype == np.dtype(case["dtype"]), f"{key}: dtype {result.dtype}, expected {case['dtype']}"
        assert result.shape == expected[key].shape, f"{key}: shape {result.shape}, expected {expected[key].shape}"
        np.testing.assert_allclose(np.asarray(result), expected[key], err_msg=key, **TOLERANCE[case["dtype"]])
        finite = np.isfinite(expected[key]) & (np.abs(expected[key]) > TOLERANCE[case["dtype"]]["atol"])
        errors[key] = float(np.max(np.abs(np.asarray(result, np.float64)[finite] / expected[key][finite] - 1),
                                   initial=0.0))
    return errors


# PyTorch's backward floors p (1 - p) at a C++ `float` EPSILON = 1e-12, i.e. 9.999999960041972e-13
# also in float64, so at p = 0 or 1 it returns -1.000000004e12 where fdl.ops (1e-12 as a double)
# gives -1e12: 4e-9 apart. Strict: once fdl.ops uses float(np.float32(1e-12)), remove this mark.
@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_matches_torch(case, request):
    if case["dtype"] == "float64":
        request.getfixturevalue("x64")
    check_against_torch(case)


def test_golden_covers_the_options():
    names = {case["name"] for case in CASES}
    for fragment in ("smooth_l1_loss_beta0.0", "huber_loss_delta2.0", "cross_entropy_ls_weight_ignore_rank4",
                     "cross_entropy_prob_ls_weight_rank1", "nll_loss_weight_ignore_rank4", "allignored",
                     "binary_cross_entropy_clamp", "with_logits_large_posweight", "posweight_middle",
                     "cross_entropy_large", "seed002_bce"):
        assert any(fragment in name for name in names), fragment
    for loss in ("l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss", "cross_entropy", "nll_loss",
                 "binary_cross_entropy", "binary_cross_entropy_with_logits"):
        for dtype in ("float32", "float64"):
            reductions = {case["reduction"] for case in CASES if case["loss"] == loss and case["dtype"] == dtype}
            assert reductions == {"mean", "sum", "none"}, (loss, dtype, reductions)


# ---- seed 002, section 1: the examples, against numbers derived by hand ------------------------
def seed_case(name):
    return next(case for case in CASES if case["name"] == f"seed002_{name}")


@pytest.mark.parametrize("name, by_hand", [
    ("l1", 3.0),  # |1 - 4| = |2 - 5| = |3 - 6| = 3
    ("mse", 35 / 3),  # (25 + 1 + 9) / 3
    ("smooth_l1", 0.46875),  # |d| = 2, 0.5, 0.5, 0.5: (2 - 0.5 + 3 * 0.5 * 0.25) / 4
    # Shifted so that the target's logit is 0: rows (-0.5, 0, -1.5) and (-1, -0.5, 0).
    ("cross_entropy", (math.log(1 + math.exp(-0.5) + math.exp(-1.5)) + math.log(1 + math.exp(-1) + math.exp(-0.5)))
     / 2),
    ("bce", -(math.log(0.7) + math.log(0.8) + math.log(0.9) + math.log(0.3)) / 4),
])
def test_seed_examples(name, by_hand):
    case = seed_case(name)
    input, target, options, _ = golden_arguments(case)
    value = getattr(losses, case["loss"])(input, target, **options)
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(float(value), by_hand, rtol=1e-6)
    np.testing.assert_allclose(case["value"], by_hand, rtol=1e-6)  # PyTorch agrees with the hand


def test_aliases():
    assert losses.mae is losses.l1_loss and losses.mse is losses.mse_loss
    assert losses.bce is losses.binary_cross_entropy


# ---- elementwise losses against a NumPy float64 reimplementation --------------------------------
def numpy_loss(name, d, parameter):
    """(per-element loss, its derivative) of the difference d = input - target."""
    a = np.abs(d)
    if name == "l1_loss" or (name == "smooth_l1_loss" and parameter == 0):
        return a, np.sign(d)
    if name == "mse_loss":
        return d * d, 2 * d
    if name == "smooth_l1_loss":
        loss = np.where(a < parameter, 0.5 * d * d / parameter, a - 0.5 * parameter)
        return loss, np.clip(d / parameter, -1, 1)
    loss = np.where(a < parameter, 0.5 * d * d, parameter * (a - 0.5 * parameter))
    return loss, np.clip(d, -parameter, parameter)


@functools.lru_cache(maxsize=None)
def jitted_value_and_grads(name, reduction, options):
    """jit of (loss, its jax.grad, its fdl.autodiff.grad) for one configuration: one compile per shape."""
    loss = functools.partial(getattr(losses, name), reduction=reduction, **dict(options))

    def total(x, target):
        return ops.sum(loss(x, target))

    def value_and_grads(x, target):
        return loss(x, target), jax.grad(total)(x, target), fdl.autodiff.grad(total)(x, target)

    return jax.jit(value_and_grads)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.integers(1, 4), max_size=4).map(tuple),
       name=st.sampled_from(["l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"]),
       parameter=st.sampled_from([0.0, 0.5, 1.0, 2.5]), reduction=st.sampled_from(["mean", "sum", "none"]),
       seed=st.integers(0, 2**31 - 1))
@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_elementwise_losses_match_numpy(x64, shape, name, parameter, reduction, seed):
    if name == "huber_loss" and parameter == 0:
        parameter = 1.0
    rng = np.random.RandomState(seed)
    input, target = rng.normal(0, 2, shape), rng.normal(0, 1, shape)
    options = {"smooth_l1_loss": (("beta", parameter),), "huber_loss": (("delta", parameter),)}.get(name, ())
    elementwise, derivative = numpy_loss(name, input - target, parameter)
    expected = {"mean": elementwise.mean(), "sum": elementwise.sum(), "none": elementwise}[reduction]
    expected_grad = derivative / elementwise.size if reduction == "mean" else derivative
    value, jax_grad, funcdl_grad = jitted_value_and_grads(name, reduction, options)(input, target)
    assert value.shape == np.shape(expected) and value.dtype == jnp.float64
    np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(jax_grad, expected_grad, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(funcdl_grad, expected_grad, rtol=1e-12, atol=1e-14)


# ---- errors ----------------------------------------------------------------------------------------
X = np.zeros((4, 3), np.float32)
LABELS = np.array([0, 1, 2, 0])


def error_case(id, call, error, match):
    return pytest.param(call, error, match, id=id)


Tensor = fdl.autodiff.Tensor
ERRORS = [
    error_case("reduction", lambda: losses.mse_loss(X, X, reduction="avg"), ValueError,
               r"`reduction` must be one of 'mean', 'sum', 'none', got 'avg'"),
    error_case("reduction-classes", lambda: losses.cross_entropy(X, LABELS, reduction="batchmean"), ValueError,
               r"`reduction` must be one of .*'batchmean'"),
    error_case("int-input", lambda: losses.l1_loss(np.zeros((4, 3), np.int32), X), TypeError,
               r"`input` must have a floating-point dtype, got int32"),
    error_case("bool-input", lambda: losses.mse_loss(np.zeros(3, bool), np.zeros(3)), TypeError,
               r"`input` must have a floating-point dtype, got bool"),
    error_case("int-logits", lambda: losses.cross_entropy(LABELS, LABELS), TypeError,
               r"`logits` must have a floating-point dtype"),
    error_case("shape", lambda: losses.mse_loss(X, np.zeros((4, 1), np.float32)), ValueError,
               r"`target` must have the shape of `input`, \(4, 3\), got \(4, 1\) \(PyTorch would broadcast"),
    error_case("target-dtype", lambda: losses.mse_loss(Tensor(X), Tensor(np.zeros((4, 3), np.float16))),
               TypeError, r"`target` must have the dtype of the prediction, float32, got float16"),
    error_case("beta", lambda: losses.smooth_l1_loss(X, X, beta=-1.0), ValueError,
               r"`beta` must be >= 0, got -1.0"),
    error_case("delta", lambda: losses.huber_loss(X, X, delta=0.0), ValueError, r"`delta` must be > 0, got 0.0"),
    error_case("scalar-logits", lambda: losses.cross_entropy(np.float32(1.0), LABELS), ValueError,
               r"`logits` must have shape \(C,\) or \(N, C, ...\), got a scalar"),
    error_case("index-shape", lambda: losses.cross_entropy(X, LABELS[:2]), ValueError,
               r"`target` of class indices must have shape \(4,\) \(`logits` \(4, 3\) without its class axis 1\), "
               r"got \(2,\)"),
    error_case("probability-shape", lambda: losses.cross_entropy(X, np.zeros((4, 2), np.float32)), ValueError,
               r"`target` of class probabilities must have the shape of `logits`, \(4, 3\), got \(4, 2\)"),
    error_case("bool-classes", lambda: losses.cross_entropy(X, LABELS > 0), TypeError,
               r"`target` must be an integer array of class indices or a float array of class probabilities, "
               r"got dtype bool"),
    error_case("float-nll", lambda: losses.nll_loss(X, X), TypeError,
               r"`target` must be an integer array of class indices, got dtype float32"),
    error_case("index-range", lambda: losses.cross_entropy(X, np.array([0, 3, -1, -100])), ValueError,
               r"`target` class indices must lie in \[0, 3\) or equal ignore_index=-100, got \[3, -1\]"),
    error_case("smoothing-negative", lambda: losses.cross_entropy(X, LABELS, label_smoothing=-0.1), ValueError,
               r"`label_smoothing` must be in \[0, 1\], got -0.1"),
    error_case("smoothing-above-1", lambda: losses.cross_entropy(X, LABELS, label_smoothing=1.5), ValueError,
               r"`label_smoothing` must be in \[0, 1\], got 1.5"),
    error_case("weight-length", lambda: losses.cross_entropy(X, LABELS, weight=np.ones(4)), ValueError,
               r"`weight` must have shape \(C,\) = \(3,\), one per class, got \(4,\)"),
    error_case("weight-rank", lambda: losses.nll_loss(X, LABELS, weight=np.ones((3, 1))), ValueError,
               r"`weight` must have shape \(C,\) = \(3,\)"),
    error_case("ignore-probabilities", lambda: losses.cross_entropy(X, X, ignore_index=1), ValueError,
               r"`ignore_index` is not supported with class-probability targets, got 1"),
    error_case("ignore-float", lambda: losses.cross_entropy(X, LABELS, ignore_index=1.0), TypeError,
               r"`ignore_index` must be an int, got 1.0"),
    error_case("int-bce", lambda: losses.bce(X, np.ones((4, 3), np.int32)), TypeError,
               r"`target` must be a floating-point array of probabilities in \[0, 1\], got dtype int32 "
               r"\(cast it to the dtype of `probs`\)"),
    error_case("bool-bce-logits", lambda: losses.binary_cross_entropy_with_logits(X, X > 0), TypeError,
               r"`target` must be a floating-point array of probabilities .*`logits`"),
    error_case("bce-shape", lambda: losses.bce(X, X[:, :1]), ValueError,
               r"`target` must have the shape of `probs`, \(4, 3\), got \(4, 1\)"),
    error_case("pos-weight", lambda: losses.binary_cross_entropy_with_logits(X, X, np.ones(4)), ValueError,
               r"`pos_weight` must broadcast to the input shape \(4, 3\), got shape \(4,\)"),
    error_case("weight-enlarges", lambda: losses.bce(X, X, weight=np.ones((2, 4, 3))), ValueError,
               r"`weight` must broadcast to the input shape \(4, 3\), got shape \(2, 4, 3\)"),
    error_case("weight-tensor", lambda: losses.bce(X, X, weight=Tensor(np.ones(3, np.float32))), TypeError,
               r"`weight` must be an array \(it receives no gradient\), got a Tensor"),
]


@pytest.mark.parametrize("call, error, match", ERRORS)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_errors_are_raised_at_trace_time():
    with pytest.raises(ValueError, match=r"`target` must have the shape of `input`"):
        jax.jit(losses.mse_loss)(X, X[:2])
    with pytest.raises(ValueError, match=r"`target` of class indices must have shape"):
        jax.jit(losses.cross_entropy)(X, LABELS[:2])


# ---- dtypes, jit, the Tensor API ---------------------------------------------------------------------
WEIGHT = np.array([0.5, 2.0, 1.0])
LOSS_CALLS = {  # every loss once, with its options: (float32 x, float32 probs, data) -> loss
    "l1": lambda x, probs, data: losses.l1_loss(x, data["target"]),
    "mse": lambda x, probs, data: losses.mse_loss(x, data["target"], reduction="sum"),
    "smooth_l1": lambda x, probs, data: losses.smooth_l1_loss(x, data["target"], beta=0.5),
    "huber": lambda x, probs, data: losses.huber_loss(x, data["target"], delta=2.0),
    "ce": lambda x, probs, data: losses.cross_entropy(x, data["labels"], WEIGHT, label_smoothing=0.1),
    "ce_prob": lambda x, probs, data: losses.cross_entropy(x, data["soft"], WEIGHT, label_smoothing=0.1),
    "nll": lambda x, probs, data: losses.nll_loss(ops.log_softmax(x, axis=1), data["labels"], WEIGHT),
    "bce": lambda x, probs, data: losses.bce(probs, data["soft"], weight=WEIGHT),
    "bce_logits": lambda x, probs, data: losses.binary_cross_entropy_with_logits(
        x, data["soft"], pos_weight=WEIGHT, weight=WEIGHT),
}


def all_losses(x, probs, data):
    return {name: call(x, probs, data) for name, call in LOSS_CALLS.items()}


def example_inputs():
    """float32 x (4, 3) and probs; float64 (NumPy's default) targets, one label ignored."""
    rng = np.random.RandomState(0)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    data = {"labels": np.array([0, 2, -100, 1]), "soft": rng.uniform(size=(4, 3)),
            "target": rng.normal(size=(4, 3))}
    return x, 1 / (1 + np.exp(-x)), data


def test_float32_stays_float32_under_x64(x64):
    x, probs, data = example_inputs()
    for name, call in LOSS_CALLS.items():
        def pick(x, probs):
            return call(x, probs, data)
        # Shapes and dtypes by tracing alone (jax.eval_shape): nothing is compiled.
        assert jax.eval_shape(pick, x, probs).dtype == jnp.float32, name
        for grad in (jax.grad, fdl.autodiff.grad):
            gx, gp = jax.eval_shape(grad(pick, argnums=(0, 1)), x, probs)
            assert gx.dtype == gp.dtype == jnp.float32, (name, grad)


def test_jit_gives_the_eager_values():
    x, probs, data = example_inputs()
    eager = all_losses(x, probs, data)
    jitted = jax.jit(all_losses)(x, probs, data)
    for name, value in eager.items():
        np.testing.assert_allclose(jitted[name], value, rtol=1e-6, err_msg=name)
    # Inside jit the class indices are traced: the range check is skipped, shapes are still checked.
    assert np.isfinite(jax.jit(losses.cross_entropy)(x, data["labels"]))


def test_tensor_api_backward():
    x, _, data = example_inputs()
    labels = data["labels"]
    leaf = fdl.autodiff.Tensor(x)
    losses.cross_entropy(leaf, labels, label_smoothing=0.2).backward()
    expected = jax.grad(lambda x: losses.cross_entropy(x, labels, label_smoothing=0.2))(jnp.asarray(x))
    np.testing.assert_allclose(leaf.grad, expected, rtol=1e-6)


# ---- the committed JSON is what the generator produces --------------------------------------------
def test_golden_json_is_up_to_date():
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("generate_losses", GOLDEN / "generate_losses.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    fresh = generator.build_cases()
    assert [case["name"] for case in fresh] == [case["name"] for case in CASES]
    for new, old in zip(fresh, CASES):
        for key in ("loss", "dtype", "input", "target", "target_dtype", "reduction", "options", "cotangent"):
            assert new[key] == old[key], (old["name"], key)
        rtol = 1e-12 if old["dtype"] == "float64" else 1e-6  # room for another CPU's summation order
        for key in ("value", "grad"):
            np.testing.assert_allclose(new[key], old[key], rtol=rtol, atol=0, err_msg=f"{old['name']} {key}")


# ---- out-of-range class indices under jit / vmap: NaN, never a finite wrong number -----------------
OUT_OF_RANGE_LOGITS = np.random.default_rng(5).normal(size=(4, 3)).astype(np.float32)
CLASS_LOSSES = {
    "cross_entropy": losses.cross_entropy,
    "cross_entropy_weight": lambda x, t, **kw: losses.cross_entropy(x, t, weight=jnp.array([0.5, 1.0, 2.0]), **kw),
    "cross_entropy_smoothing": lambda x, t, **kw: losses.cross_entropy(x, t, label_smoothing=0.1, **kw),
    "nll_loss": lambda x, t, **kw: losses.nll_loss(ops.log_softmax(x, axis=1), t, **kw),
    "nll_loss_weight": lambda x, t, **kw: losses.nll_loss(ops.log_softmax(x, axis=1), t,
                                                          weight=jnp.array([0.5, 1.0, 2.0]), **kw),
}


@functools.cache
def jitted_class_losses(reduction):
    """One compiled program giving every class loss of `CLASS_LOSSES` for traced targets."""
    return jax.jit(lambda x, t, ignore_index: {
        name: loss(x, t, ignore_index=ignore_index, reduction=reduction) for name, loss in CLASS_LOSSES.items()},
        static_argnums=2)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_out_of_range_targets_are_nan_under_jit(reduction):
    run = jitted_class_losses(reduction)
    good = np.array([0, 2, 1, 2])
    reference = {name: np.asarray(loss(OUT_OF_RANGE_LOGITS, good, reduction=reduction))  # eager: the range check passes
                 for name, loss in CLASS_LOSSES.items()}
    for bad_value in (-1, 3, 7):  # -1 would wrap to weight[-1]; 3 would pick nothing yet count
        bad = good.copy()
        bad[1] = bad_value
        for name, value in run(OUT_OF_RANGE_LOGITS, bad, -100).items():
            value = np.asarray(value)
            if reduction == "none":  # only the bad sample's loss is NaN; the others are unchanged
                assert np.isnan(value[1]), (name, bad_value)
                keep = np.arange(4) != 1
                np.testing.assert_allclose(value[keep], reference[name][keep], rtol=1e-6, err_msg=name)
            else:
                assert np.isnan(value), (name, bad_value, value)
        # Eagerly (concrete targets) the same call raises (checked once, for "mean").
        for loss in CLASS_LOSSES.values() if reduction == "mean" else ():
            with pytest.raises(ValueError, match=r"`target` class indices must lie in \[0, 3\)"):
                loss(OUT_OF_RANGE_LOGITS, bad, reduction=reduction)
    # ignore_index stays ignored, also when it is itself out of range (-1 here): finite, and as eager.
    ignored = good.copy()
    ignored[1] = -1
    for name, value in run(OUT_OF_RANGE_LOGITS, ignored, -1).items():
        eager = CLASS_LOSSES[name](OUT_OF_RANGE_LOGITS, ignored, ignore_index=-1, reduction=reduction)
        assert np.all(np.isfinite(value)), name
        np.testing.assert_allclose(value, eager, rtol=1e-6, err_msg=name)


def test_out_of_range_targets_are_nan_under_vmap_and_in_the_gradient():
    bad = np.array([0, 3, 1, 2])
    per_sample = jax.vmap(lambda x, t: losses.cross_entropy(x, t))(OUT_OF_RANGE_LOGITS, bad)
    assert np.isnan(per_sample[1]) and np.all(np.isfinite(np.asarray(per_sample)[[0, 2, 3]]))
    gradient = jax.jit(jax.grad(lambda x, t: losses.cross_entropy(x, t)))(OUT_OF_RANGE_LOGITS, bad)
    assert np.isnan(np.asarray(gradient)).any()


# ---- low precision: no count, sum or constant overflows in float16 / bfloat16 ---------------------
def softmax_cross_entropy_reference(logits, probs, weight=None):
    """float64 NumPy: per-sample -Σ_c w_c p_c log_softmax(z)_c and its gradient d/dz."""
    z = np.asarray(logits, np.float64)
    weight = np.ones(z.shape[1]) if weight is None else np.asarray(weight, np.float64)
    log_probs = z - z.max(1, keepdims=True)
    log_probs = log_probs - np.log(np.exp(log_probs).sum(1, keepdims=True))
    wp = probs * weight
    grad = np.exp(log_probs) * wp.sum(1, keepdims=True) - wp
    return -(wp * log_probs).sum(1), grad


# bfloat16 has float32's exponent range: its counts cannot overflow (checked by hand, 2e-2 agreement).
LOW_PRECISION = {"float16": (jnp.float16, 3e-3)}


@functools.cache
def low_precision_functions():
    """{backend: {name: jitted value_and_grad}} of the class losses whose mean used to overflow,
    under `jax` and under `fdl.autodiff`."""
    weight = jnp.array([0.5, 1.25, 2.0])
    fns = {
        # 70000 samples: Σ of the kept-target weights (the count) passes float16's 65504.
        "indices_70000": lambda z, t: losses.cross_entropy(z, t),
        "weighted_70000": lambda z, t: losses.cross_entropy(z, t, weight=weight.astype(z.dtype)),
        # 300 x 300: Σ over all elements of the probability-target and smoothing terms passes 65504.
        "probabilities": lambda z, p: losses.cross_entropy(z, p),
        "smoothing": lambda z, t: losses.cross_entropy(z, t, label_smoothing=0.1),
    }
    return np.asarray(weight, np.float64), {
        backend: {name: jax.jit(value_and_grad(f)) for name, f in fns.items()}
        for backend, value_and_grad in (("jax", jax.value_and_grad), ("tape", fdl.autodiff.value_and_grad))}


def as_float64(x):
    return np.asarray(jnp.asarray(x).astype(jnp.float32), np.float64)


@pytest.mark.slow  # ~6 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("dtype_name", LOW_PRECISION)
def test_class_losses_in_low_precision_match_float64(dtype_name):
    dtype, rtol = LOW_PRECISION[dtype_name]
    weight, fns = low_precision_functions()
    rng = np.random.default_rng(7)
    many = jnp.asarray(rng.normal(size=(70000, 3)) * 2, dtype)
    many_targets = rng.integers(0, 3, 70000)
    square = jnp.asarray(rng.normal(size=(300, 300)) * 2, dtype)
    square_targets = rng.integers(0, 300, 300)
    probs = jnp.asarray(rng.dirichlet(np.ones(300), 300), dtype)
    weight = as_float64(jnp.asarray(weight, dtype))  # the weights the loss sees
    expected, arguments = {}, {}
    per_sample, grad = softmax_cross_entropy_reference(as_float64(many), np.eye(3)[many_targets])
    expected["indices_70000"] = (per_sample.mean(), grad / 70000)
    per_sample, grad = softmax_cross_entropy_reference(as_float64(many), np.eye(3)[many_targets], weight)
    total_weight = weight[many_targets].sum()
    expected["weighted_70000"] = (per_sample.sum() / total_weight, grad / total_weight)
    per_sample, grad = softmax_cross_entropy_reference(as_float64(square), as_float64(probs))
    expected["probabilities"] = (per_sample.mean(), grad / 300)
    smoothed = 0.9 * np.eye(300)[square_targets] + 0.1 / 300
    per_sample, grad = softmax_cross_entropy_reference(as_float64(square), smoothed)
    expected["smoothing"] = (per_sample.mean(), grad / 300)
    arguments = {"indices_70000": (many, many_targets), "weighted_70000": (many, many_targets),
                 "probabilities": (square, probs), "smoothing": (square, square_targets)}
    for backend, name in ((backend, name) for backend in fns for name in fns[backend]):
        value, gradient = fns[backend][name](*arguments[name])
        name = f"{name} ({backend})"
        assert value.dtype == gradient.dtype == dtype, name
        expected_value, expected_grad = expected[name.split()[0]]
        np.testing.assert_allclose(float(value), expected_value, rtol=rtol, err_msg=name)
        np.testing.assert_allclose(as_float64(gradient), expected_grad, rtol=0,
                                   atol=4 * rtol * np.abs(expected_grad).max(), err_msg=name)
