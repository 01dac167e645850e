"""PyTorch golden values for `funcdl.losses`: run `.venv/bin/python tests/golden/generate_losses.py`.

Writes `tests/golden/losses.json`: one entry per case with the inputs themselves (so the tests
need no RNG agreement), PyTorch's loss value and its gradient with respect to `input`. For
`reduction="none"` the gradient is that of `(loss * cotangent).sum()` with the stored cotangent.
float64 cases carry most of the coverage; a float32 subset checks single precision. Cases named
`seed002_*` reproduce the loss examples of seed 002 exactly as it writes them, e.g.
`nn.L1Loss()(y_true, y_pred)`: the seed passes the true values as PyTorch's `input`.

Needs torch (the `bench` extra); `tests/test_losses.py` imports `build_cases` to check that the
committed JSON is not stale.
"""
import json
import pathlib
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

OUTPUT = pathlib.Path(__file__).with_name("losses.json")
REDUCTIONS = ("mean", "sum", "none")
# Every keyword that is a tensor in PyTorch; the rest of a case's options are plain scalars.
TENSOR_OPTIONS = ("weight", "pos_weight")
# Few distinct shapes (class axis 1 of size C = 3), shared by all losses: each new shape costs
# the tests a round of jax compilations.
SHAPES = {"rank1": (3,), "rank2": (4, 3), "rank4": (2, 3, 2, 2)}


def _round(array, dtype):
    """Values exactly representable in `dtype`, as nested Python lists (exact in JSON)."""
    return np.asarray(array, dtype=dtype).tolist()


def _shapes(names):
    return {name: SHAPES[name] for name in names}


def torch_case(name, loss, dtype, input, target, reduction="mean", criterion=None, **options):
    """Run `torch.nn.functional.<loss>` on one configuration and record value and input gradient.

    input/target/weight/pos_weight are nested lists already exact in `dtype`; integer targets are
    lists of Python ints (class indices). `criterion` (e.g. `nn.L1Loss()`) replaces the function.
    """
    torch_dtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
    integer_target = np.asarray(target).dtype.kind in "iu"
    x = torch.tensor(input, dtype=torch_dtype, requires_grad=True)
    t = torch.tensor(target, dtype=torch.int64 if integer_target else torch_dtype)
    torch_options = {
        key: torch.tensor(value, dtype=torch_dtype) if key in TENSOR_OPTIONS else value
        for key, value in options.items()
    }
    if criterion is None:
        loss_value = getattr(F, loss)(x, t, reduction=reduction, **torch_options)
    else:
        loss_value = criterion(x, t)
    cotangent = None
    if reduction == "none":
        generator = np.random.RandomState(zlib.crc32(name.encode()))
        cotangent = _round(generator.uniform(-1.0, 1.0, size=tuple(loss_value.shape)), dtype)
        (loss_value * torch.tensor(cotangent, dtype=torch_dtype)).sum().backward()
    else:
        loss_value.backward()
    return {
        "name": name,
        "loss": loss,
        "dtype": dtype,
        "input": input,
        "target": target,
        "target_dtype": "int" if integer_target else dtype,
        "reduction": reduction,
        "options": options,
        "cotangent": cotangent,
        "value": loss_value.detach().tolist(),
        "grad": x.grad.tolist(),
    }


def regression_cases(rng, dtype):
    cases = []
    # Rank 1 and other shapes: the NumPy property test of tests/test_losses.py.
    shapes = _shapes(("rank2", "rank4") if dtype == "float64" else ("rank2",))
    configs = [
        ("l1_loss", {}), ("mse_loss", {}),
        ("smooth_l1_loss", {}), ("smooth_l1_loss", {"beta": 0.5}), ("smooth_l1_loss", {"beta": 0.0}),
        ("huber_loss", {}), ("huber_loss", {"delta": 2.0}), ("huber_loss", {"delta": 0.3}),
    ]
    for shape_name, shape in shapes.items():
        # Differences spread over about +-3 so that both branches of smooth_l1/huber are used.
        input = _round(rng.normal(0.0, 2.0, shape), dtype)
        target = _round(rng.normal(0.0, 1.0, shape), dtype)
        for loss, options in configs:
            suffix = "".join(f"_{key}{value}" for key, value in options.items())
            for reduction in REDUCTIONS:
                cases.append(torch_case(f"{loss}{suffix}_{shape_name}_{reduction}_{dtype}", loss, dtype,
                                        input, target, reduction, **options))
    # Differences exactly at the kinks: 0 (abs) and +-beta / +-delta (branch switch).
    input = [[0.0, 1.0, -1.0], [0.5, -0.5, 2.0], [-2.0, 0.25, 0.3], [-0.3, 3.0, 1.5]]
    target = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.25, 0.0], [0.0, 1.0, 0.0]]
    for loss, options in configs:
        suffix = "".join(f"_{key}{value}" for key, value in options.items())
        cases.append(torch_case(f"{loss}{suffix}_kinks_sum_{dtype}", loss, dtype, input, target, "sum", **options))
    return cases


def class_targets(rng, num_classes, shape, ignore_index=None, ignore_count=0):
    """Random class indices, `ignore_count` of them replaced by `ignore_index`.

    Drawn again until the kept targets hold at least two classes (so that class weights matter).
    """
    while True:
        target = rng.randint(0, num_classes, size=shape)
        flat = target.reshape(-1)
        if ignore_count:
            flat[rng.choice(flat.size, ignore_count, replace=False)] = ignore_index
        kept = flat[flat != ignore_index]
        if flat.size == 1 or len(set(kept.tolist())) >= 2:
            return target.tolist()


def probability_targets(rng, shape, class_axis):
    logits = rng.normal(0.0, 1.5, shape)
    probs = np.exp(logits - logits.max(axis=class_axis, keepdims=True))
    return probs / probs.sum(axis=class_axis, keepdims=True)


def classification_cases(rng, dtype):
    cases = []
    num_classes = 3
    shapes = _shapes(("rank1", "rank2", "rank4") if dtype == "float64" else ("rank2",))
    weight = _round([0.5, 2.0, 1.25], dtype)
    for shape_name, shape in shapes.items():
        class_axis = 0 if len(shape) == 1 else 1
        target_shape = shape[:class_axis] + shape[class_axis + 1:]
        logits = _round(rng.normal(0.0, 2.0, shape), dtype)
        labels = class_targets(rng, num_classes, target_shape)
        size = int(np.prod(target_shape))
        # For one sample (rank 1) the "ignore" configurations keep it; "allignored" ignores it.
        labels_ignored = class_targets(rng, num_classes, target_shape, -100, size // 4) if size > 1 else labels
        labels_ignore2 = class_targets(rng, num_classes, target_shape)
        all_ignored = np.full(target_shape, -100).tolist()
        probs = _round(probability_targets(rng, shape, class_axis), dtype)
        integer_configs = [
            ("default", labels, {}),
            ("weight", labels, {"weight": weight}),
            ("ignore", labels_ignored, {}),
            ("ignore2", labels_ignore2, {"ignore_index": 2}),
            ("weight_ignore", labels_ignored, {"weight": weight}),
            ("allignored", all_ignored, {}),
        ]
        smoothing_configs = [
            ("ls", labels, {"label_smoothing": 0.1}),
            ("ls_weight", labels, {"label_smoothing": 0.2, "weight": weight}),
            ("ls_weight_ignore", labels_ignored, {"label_smoothing": 0.2, "weight": weight}),
            ("ls_ignore", labels_ignored, {"label_smoothing": 0.3}),
            ("ls1", labels, {"label_smoothing": 1.0}),
            ("ls_allignored", all_ignored, {"label_smoothing": 0.1, "weight": weight}),
            ("prob", probs, {}),
            ("prob_weight", probs, {"weight": weight}),
            ("prob_ls", probs, {"label_smoothing": 0.15}),
            ("prob_ls_weight", probs, {"label_smoothing": 0.15, "weight": weight}),
        ]
        if dtype == "float32":
            integer_configs = [integer_configs[0], integer_configs[4]]
            smoothing_configs = [smoothing_configs[2], smoothing_configs[9]]
        # One sample (rank 1): "sum" is "none", so it is left out there.
        reductions = ("mean", "none") if shape_name == "rank1" else REDUCTIONS
        for config, target, options in integer_configs + smoothing_configs:
            for reduction in reductions:
                cases.append(torch_case(f"cross_entropy_{config}_{shape_name}_{reduction}_{dtype}",
                                        "cross_entropy", dtype, logits, target, reduction, **options))
        log_probs = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), class_axis).numpy()
        log_probs = _round(log_probs, dtype)
        for config, target, options in integer_configs[:2] if shape_name == "rank1" else integer_configs:
            for reduction in reductions:
                cases.append(torch_case(f"nll_loss_{config}_{shape_name}_{reduction}_{dtype}", "nll_loss",
                                        dtype, log_probs, target, reduction, **options))
    # Large logits: log_softmax must stay finite (no exp overflow) in value and gradient.
    large = _round([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, -1e4], [1e4, 1e4 - 1.0, -1e4]], dtype)
    large_probs = _round([[0.5, 0.5, 0.0], [0.0, 0.25, 0.75], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], dtype)
    for reduction in ("mean", "none"):
        cases.append(torch_case(f"cross_entropy_large_{reduction}_{dtype}", "cross_entropy", dtype, large,
                                [1, 2, 2, 0], reduction))
        cases.append(torch_case(f"cross_entropy_large_prob_ls_{reduction}_{dtype}", "cross_entropy", dtype, large,
                                large_probs, reduction, label_smoothing=0.1))
    return cases


def binary_cases(rng, dtype):
    cases = []
    shapes = _shapes(("rank2", "rank4") if dtype == "float64" else ("rank2",))
    for shape_name, shape in shapes.items():
        logits = rng.normal(0.0, 2.0, shape)
        probs = _round(1.0 / (1.0 + np.exp(-logits)), dtype)
        logits = _round(logits, dtype)
        soft = _round(rng.uniform(0.0, 1.0, shape), dtype)
        hard = rng.randint(0, 2, shape).astype(float).tolist()
        weight = _round(rng.uniform(0.5, 2.0, shape[-1:]), dtype)
        pos_weight = _round(rng.uniform(0.5, 3.0, shape[-1:]), dtype)
        configs = [
            ("binary_cross_entropy", "soft", probs, soft, {}),
            ("binary_cross_entropy", "hard_weight", probs, hard, {"weight": weight}),
            ("binary_cross_entropy_with_logits", "soft", logits, soft, {}),
            ("binary_cross_entropy_with_logits", "hard_posweight", logits, hard, {"pos_weight": pos_weight}),
            ("binary_cross_entropy_with_logits", "soft_posweight_weight", logits, soft,
             {"pos_weight": pos_weight, "weight": weight}),
        ]
        if shape_name == "rank4":
            # pos_weight broadcast over a middle axis: shape (3, 1, 1) against (2, 3, 2, 2).
            configs.append(("binary_cross_entropy_with_logits", "posweight_middle", logits, soft,
                            {"pos_weight": _round(rng.uniform(0.5, 3.0, (3, 1, 1)), dtype)}))
        for loss, config, input, target, options in configs:
            for reduction in REDUCTIONS:
                cases.append(torch_case(f"{loss}_{config}_{shape_name}_{reduction}_{dtype}", loss, dtype,
                                        input, target, reduction, **options))
    # p exactly 0 and 1: log clamped at -100 (values 100 or 0), gradient (p - y) / max(p (1 - p), 1e-12).
    tiny = 1e-45 if dtype == "float32" else 1e-50  # log(tiny) < -100: clamped too
    edge_probs = [[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [tiny, 0.5, 1.0 - 2.0 ** -24], [1.0, 0.0, 0.3]]
    edge_target = [[1.0, 0.0, 0.0], [1.0, 0.25, 0.75], [1.0, 0.5, 0.0], [0.5, 0.5, 1.0]]
    for reduction in REDUCTIONS:
        cases.append(torch_case(f"binary_cross_entropy_clamp_{reduction}_{dtype}", "binary_cross_entropy", dtype,
                                _round(edge_probs, dtype), edge_target, reduction))
    large = [[1e4, -1e4, 1e4], [-1e4, 1e4, -1e4], [0.0, 50.0, -50.0], [1e4, -1e4, 1e4]]
    large_target = [[1.0, 0.0, 0.0], [1.0, 0.3, 0.7], [1.0, 0.0, 1.0], [0.5, 0.5, 0.0]]
    for reduction in ("mean", "none"):
        cases.append(torch_case(f"binary_cross_entropy_with_logits_large_{reduction}_{dtype}",
                                "binary_cross_entropy_with_logits", dtype, large, large_target, reduction))
        cases.append(torch_case(f"binary_cross_entropy_with_logits_large_posweight_{reduction}_{dtype}",
                                "binary_cross_entropy_with_logits", dtype, large, large_target, reduction,
                                pos_weight=_round(rng.uniform(0.5, 3.0, 3), dtype)))
    return cases


def seed_cases():
    """Seed 002, section 1: each example as the seed calls it, e.g. `nn.L1Loss()(y_true, y_pred)`.

    float32 (torch's default dtype, as the seed's `torch.tensor([...])`); where the seed shows a
    second way (`nn.functional.smooth_l1_loss`, `nn.functional.binary_cross_entropy`), it must agree.
    """
    dtype = "float32"
    cases = [
        torch_case("seed002_l1", "l1_loss", dtype, [1.0, 2.0, 3.0], [4.0, 5.0, 6.0], criterion=nn.L1Loss()),
        torch_case("seed002_mse", "mse_loss", dtype, [1.0, 4.0, 5.0], [6.0, 3.0, 2.0], criterion=nn.MSELoss()),
        torch_case("seed002_smooth_l1", "smooth_l1_loss", dtype, [1.0, 2.0, 3.0, 4.0], [3.0, 2.5, 3.5, 4.5],
                   criterion=nn.SmoothL1Loss()),
        torch_case("seed002_cross_entropy", "cross_entropy", dtype, [[1.5, 2.0, 0.5], [0.5, 1.0, 1.5]], [1, 2],
                   criterion=nn.CrossEntropyLoss()),
        torch_case("seed002_bce", "binary_cross_entropy", dtype, _round([[0.7], [0.2], [0.9], [0.7]], dtype),
                   [[1.0], [0.0], [1.0], [0.0]], criterion=nn.BCELoss()),
    ]
    for case in cases[2], cases[4]:
        second_way = torch_case(case["name"], case["loss"], dtype, case["input"], case["target"])
        if second_way["value"] != case["value"]:
            raise RuntimeError(f"{case['name']}: the seed's two ways disagree")
    return cases


def build_cases():
    """All golden cases, deterministic: legacy `RandomState` streams are frozen by NumPy."""
    cases = seed_cases()
    for dtype, seed in (("float64", 0), ("float32", 1)):
        rng = np.random.RandomState(seed)
        cases += regression_cases(rng, dtype) + classification_cases(rng, dtype) + binary_cases(rng, dtype)
    names = [case["name"] for case in cases]
    if len(set(names)) != len(names):
        raise RuntimeError("duplicate golden case names")
    return cases


def main():
    cases = build_cases()
    OUTPUT.write_text(json.dumps({"torch_version": torch.__version__, "cases": cases}, separators=(",", ":")))
    print(f"wrote {len(cases)} cases to {OUTPUT} ({OUTPUT.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
