"""Every example in quick mode, its results checked against the seed or an independent reference.

Each example runs once per session (module-scoped fixtures); the pictures go to a temporary
folder and are decoded with Pillow. Every figure an example saves passes through
`examples.save` or `examples.save_animation`; the fixture wraps both to inspect the figure's
text and axes right after it is written.
"""
import contextlib
import io
import json
import pathlib
import re

import jax
import numpy as np
import pytest
from PIL import Image

from funcdl import examples, nn

PUBLISHED = {  # Mazur (2015), the worked example of seed 002, as published
    "h1": 0.593269992, "h2": 0.596884378, "o1": 0.75136507, "o2": 0.772928465,
    "loss": 0.298371109, "dw1": 0.000438568, "dw4": 0.000995425, "dw5": 0.082167041,
    "dw8": -0.022740242, "w1": 0.149780716, "w5": 0.35891648, "w8": 0.561370121,
}


def describe(fig):
    """What a reader needs of a saved figure: the smallest text in points (every visible,
    non-empty Text artist, tick labels included), each axes' missing labels or title, the
    legends that cover a drawn point, and the text that reaches past the picture's edge."""
    from matplotlib.text import Text

    hidden = undrawn_tick_labels(fig)
    texts = [text for text in fig.findobj(Text) if text.get_visible() and text.get_text().strip()
             and id(text) not in hidden]
    suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
    missing = []
    for ax in fig.axes:
        if hasattr(ax, "_colorbar"):  # a colorbar's axes: its one label says what the colour is
            missing += [] if (ax.get_ylabel() or ax.get_xlabel()) else ["colorbar label"]
            continue
        missing += [part for part, text in (("xlabel", ax.get_xlabel()), ("ylabel", ax.get_ylabel()),
                                            ("title", ax.get_title() or suptitle)) if not text]
    renderer = fig.canvas.get_renderer()
    page = fig.bbox.padded(1)  # a pixel of rounding
    cut = [text.get_text() for text in texts
           if not _inside(text.get_window_extent(renderer), page)]
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    covering = [[entry.get_text() for entry in legend.get_texts()] for legend in legends
                if any(_covers(legend.get_window_extent(renderer), ax) for ax in fig.axes)]
    return {"smallest_pt": min(text.get_fontsize() for text in texts), "missing": missing,
            "legends_covering_data": covering, "cut_text": cut}


def undrawn_tick_labels(fig):
    """The ids of the tick labels matplotlib keeps but does not draw: those of ticks outside
    their axis' view limits."""
    hidden = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            slack = 1e-9 * max(abs(low), abs(high), 1.0)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not low - slack <= tick.get_loc() <= high + slack:
                    hidden |= {id(tick.label1), id(tick.label2)}
    return hidden


def _inside(box, outer):
    return (box.x0 >= outer.x0 and box.y0 >= outer.y0 and box.x1 <= outer.x1
            and box.y1 <= outer.y1)


def drawn_points(ax):
    """The pixels (display coordinates, `(n, 2)`) where `ax` draws its data: every line's
    vertices with points every pixel along each segment between them, and every marker of a
    scatter, clipped to the axes (what lies outside is not drawn)."""
    from matplotlib.collections import PathCollection

    points = []
    for line in ax.get_lines():
        xy = line.get_transform().transform(np.asarray(line.get_xydata(), float))
        xy = xy[np.all(np.isfinite(xy), axis=1)]
        if line.get_linestyle() not in ("None", "", " ") and len(xy) > 1:
            for start, end in zip(xy[:-1], xy[1:]):
                steps = max(int(np.hypot(*(end - start))), 1)
                points.append(start + np.linspace(0, 1, steps + 1)[:, None] * (end - start))
        points.append(xy)
    for collection in ax.collections:
        if isinstance(collection, PathCollection):  # a scatter's markers (not a filled contour)
            offsets = np.asarray(collection.get_offsets(), float)
            points.append(collection.get_offset_transform().transform(offsets))
    if not points:
        return np.zeros((0, 2))
    points = np.concatenate(points)
    box = ax.bbox
    inside = ((points[:, 0] >= box.x0) & (points[:, 0] <= box.x1) & (points[:, 1] >= box.y0)
              & (points[:, 1] <= box.y1))
    return points[inside]


def _covers(legend_box, ax):
    points = drawn_points(ax)
    return bool(np.any((points[:, 0] >= legend_box.x0) & (points[:, 0] <= legend_box.x1)
                       & (points[:, 1] >= legend_box.y0) & (points[:, 1] <= legend_box.y1)))


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """ran(name, **overrides) -> the quick results of example `name` (each computed once per
    overrides), with "printed" (stdout), "stderr" and "figures" {file name: describe(fig)}
    added."""
    cache = {}

    def result(name, **overrides):
        entry = (name, tuple(sorted(overrides.items())))
        if entry not in cache:
            out = tmp_path_factory.mktemp(name)
            figures, printed, stderr = {}, io.StringIO(), io.StringIO()
            save, save_animation = examples.save, examples.save_animation

            def recording_save(fig, out_dir, file_name):
                path = save(fig, out_dir, file_name)
                figures[file_name] = describe(fig)
                return path

            def recording_animation(fig, draw_frame, frames, out_dir, file_name, fps):
                path = save_animation(fig, draw_frame, frames, out_dir, file_name, fps)
                figures[file_name] = describe(fig)
                return path

            with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed), \
                    contextlib.redirect_stderr(stderr):
                patch.setattr(examples, "save", recording_save)
                patch.setattr(examples, "save_animation", recording_animation)
                results = examples.load(name).run(quick=True, out_dir=str(out), **overrides)
            cache[entry] = {**results, "printed": printed.getvalue(),
                            "stderr": stderr.getvalue(), "figures": figures}
        return cache[entry]

    return result


def check_pictures(results, count):
    """Each picture decodes, reads at its native size (API.md "Pictures"), and went through
    the examples' savers (so its fonts and labels were inspected)."""
    assert len(results["pictures"]) == count
    for path in results["pictures"]:
        name = pathlib.Path(path).name
        assert results["figures"][name]["smallest_pt"] >= examples.MIN_FONT_PT >= 9, name
        assert results["figures"][name]["missing"] == [], name
        assert results["figures"][name]["legends_covering_data"] == [], name
        assert results["figures"][name]["cut_text"] == [], name
        with Image.open(path) as image:
            assert image.format == ("GIF" if path.endswith(".gif") else "PNG")
            if image.format == "PNG":  # Pillow reads the pHYs chunk (pixels per metre) as dpi
                assert min(image.info["dpi"]) >= 100, (name, image.info.get("dpi"))
                assert 600 <= image.width <= 1200 and 400 <= image.height <= 800, (name, image.size)
            else:
                assert image.width >= 800 and image.height >= 300, (name, image.size)
            assert image.convert("L").getextrema()[0] < 128  # something drawn on the white


def test_describe_finds_a_legend_on_a_curve_small_text_and_text_off_the_picture(tmp_path):
    """The picture checks can fail: a legend drawn over a line (between two of its vertices,
    not on one), a 7 pt label, a title that runs off the edge, a missing label."""
    fig, ax = examples.figure(width=6, height=4)
    ax.plot([0, 10], [10, 0], label="falling")  # crosses the middle of the axes
    ax.legend(loc="center")
    ax.set_xlabel("x (no unit)", fontsize=7)
    ax.set_title("a title far too long to fit: " + "word " * 30)
    examples.save(fig, tmp_path, "bad.png")
    described = describe(fig)
    assert described["legends_covering_data"] == [["falling"]]
    assert described["smallest_pt"] == 7 and described["missing"] == ["ylabel"]
    assert described["cut_text"] and described["cut_text"][0].startswith("a title far")

    fig, ax = examples.figure(width=6, height=4)
    ax.plot([0, 10], [10, 0], label="falling")
    ax.scatter([9], [9], label="a point")
    ax.legend(loc="upper right")  # an empty corner, but for one scatter marker
    ax.set(xlabel="x (no unit)", ylabel="y (no unit)", title="a line and a point")
    examples.save(fig, tmp_path, "point.png")
    assert describe(fig)["legends_covering_data"] == [["falling", "a point"]]
    examples.legend_outside(ax)
    examples.save(fig, tmp_path, "outside.png")
    described = describe(fig)
    assert described["legends_covering_data"] == described["cut_text"] == described["missing"] == []


@pytest.mark.slow  # ~5 s: the slow tier (`make test-slow`, run by CI)
def test_adaline_mean_of_last_half_is_2x_plus_1(ran):
    results = ran("adaline")
    assert abs(results["w_mean_last_half"] - 2) < 0.1 and abs(results["b_mean_last_half"] - 1) < 0.1
    assert abs(results["b"] * 10 - round(results["b"] * 10)) < 1e-4  # b moves in steps of 0.1
    assert examples.load("adaline").verdict(results)[2]
    check_pictures(results, 1)


def test_relu_quadratic_first_initialisation_fits_in_1500_and_second_does_not(ran):
    results = ran("relu_quadratic")
    assert results["iterations"] == 1500
    assert results["first_loss_at_1500"] < 0.15 < 0.5 < results["second_loss_at_1500"]
    check_pictures(results, 3)


def test_relu_quadratic_animation_has_30_frames_in_the_full_run(ran):
    relu_quadratic = examples.load("relu_quadratic")
    gif = next(path for path in ran("relu_quadratic")["pictures"] if path.endswith(".gif"))
    with Image.open(gif) as image:
        assert image.n_frames == relu_quadratic.QUICK_FRAMES  # the quick run draws fewer
    # the full run's frames: its iterations (8 passes over the samples), its frame count
    full = relu_quadratic.frame_steps(8 * relu_quadratic.SAMPLES - 1, relu_quadratic.FRAMES)
    assert len(full) >= 30 and full[0] == 39 and full[-1] == 8 * relu_quadratic.SAMPLES - 1
    assert np.all(np.diff(full) > 0)
    assert np.sum(full < relu_quadratic.SAMPLES) >= 20  # most frames while the first one fits


def test_backprop_matches_the_published_numbers_in_both_autodiffs(ran):
    results = ran("backprop")
    for column in ("jax", "funcdl"):
        for name, value in PUBLISHED.items():
            assert results[column][name] == pytest.approx(value, abs=1e-6), (column, name)
    # the shared bias's gradient is the sum over its units: closed form from the forward values
    r = results["jax"]
    delta_o = [(r["o1"] - 0.01) * r["o1"] * (1 - r["o1"]), (r["o2"] - 0.99) * r["o2"] * (1 - r["o2"])]
    assert r["db2 (shared)"] == pytest.approx(sum(delta_o), rel=1e-12)
    assert r["b2"] == pytest.approx(0.60 - 0.5 * sum(delta_o), rel=1e-12)


def test_optimizers_fall_and_the_ema_has_its_closed_form(ran):
    results = ran("optimizers")
    assert set(results["final_loss"]) == {"sgd", "momentum", "adagrad", "rmsprop", "adam"}
    for name, first in results["first_loss"].items():
        assert first == pytest.approx(0.298371109, abs=1e-6)  # the published loss at the start
        assert results["final_loss"][name] < first
    # the seed's PyTorch code, run by tests/golden/generate_optim.py (float32, foreach=False)
    golden = json.loads((pathlib.Path(__file__).parent / "golden" / "optim.json").read_text())
    torch_runs = {case["name"]: case["float32"]["loss"] for case in golden["cases"]}
    for name, case in (("momentum", "seed_sgd_momentum"), ("adagrad", "seed_adagrad"),
                       ("rmsprop", "seed_rmsprop_momentum"), ("adam", "seed_adam")):
        losses = results["losses"][name]
        np.testing.assert_allclose(losses, torch_runs[case][:len(losses)], rtol=1e-4, err_msg=name)
    temperature = examples.load("optimizers").TEMPERATURE
    for beta in (0.5, 0.9):
        # S_t = beta^t Y_0 + (1 - beta) sum_{k=1..t} beta^(t-k) Y_k
        t = np.arange(len(temperature))
        weights = np.where(t[None, :] <= t[:, None], beta ** np.maximum(t[:, None] - t[None, :], 0), 0.0)
        weights[:, 1:] *= 1 - beta
        np.testing.assert_allclose(results["ema"][beta], weights @ temperature, rtol=1e-12)
    check_pictures(results, 2)


def test_boston_quick_improves_and_the_closed_form_is_least_squares(ran):
    results = ran("boston")
    assert results["epochs"] == 100
    assert results["test_mse"] < results["first_test_mse"]
    boston = examples.load("boston")
    x_train, y_train, x_test, y_test = (np.asarray(a, np.float64) for a in boston.split_and_standardise())
    assert (len(x_train), len(x_test)) == (430, 76)
    np.testing.assert_allclose(x_train.mean(axis=0), 0, atol=1e-5)
    design = np.hstack([x_train, np.ones((430, 1))])
    solution = np.linalg.solve(design.T @ design, design.T @ y_train)  # normal equations
    test_design = np.hstack([x_test, np.ones((76, 1))])
    assert results["closed_form_test_mse"] == pytest.approx(
        np.mean((test_design @ solution - y_test) ** 2), rel=1e-8)
    check_pictures(results, 1)


def seed_xor_in_numpy(x, y, lr=0.6, epochs=400):
    """Seed 004's NumPy network and backward, with the step function as ReLU's derivative."""
    rng = np.random.RandomState(0)
    shapes = ((2, 8), (8, 4), (4, 1))
    params = [(rng.rand(*shape), rng.rand(shape[1])) for shape in shapes]
    for _ in range(epochs):
        (w1, b1), (w2, b2), (w3, b3) = params
        z1 = x @ w1 + b1
        a1 = np.maximum(z1, 0)
        a2 = 1 / (1 + np.exp(-(a1 @ w2 + b2)))
        p = 1 / (1 + np.exp(-(a2 @ w3 + b3)))
        g3 = 2 * (p - y) * p * (1 - p)
        g2 = g3 @ w3.T * a2 * (1 - a2)
        g1 = g2 @ w2.T * (z1 > 0)
        params = [(w - lr * a.T @ g, b - lr * g.sum(0)) for (w, b), a, g in
                  zip(params, (x, a1, a2), (g1, g2, g3))]
    (w1, b1), (w2, b2), (w3, b3) = params
    hidden = 1 / (1 + np.exp(-(np.maximum(x @ w1 + b1, 0) @ w2 + b2)))
    return (1 / (1 + np.exp(-(hidden @ w3 + b3))))[:, 0]


def test_xor_reproduces_the_seed(ran):
    results = ran("xor")
    xor = examples.load("xor")
    predictions = np.array(results["predictions"])
    assert list(predictions > 0.5) == [True, False, False, True]
    reference = seed_xor_in_numpy(np.array(xor.SEED_X, float), np.array(xor.SEED_Y, float))
    np.testing.assert_allclose(predictions, reference, rtol=1e-9)
    np.testing.assert_allclose(predictions, xor.SEED_PREDICTIONS, atol=2e-3)  # the seed's ReLU rule
    assert results["runs"] == 20 and results["converged_sum"] > 10
    assert results["converged_sum"] >= results["converged_mean"]
    check_pictures(results, 1)


def test_xor_progress_bar_and_text_show_the_same_loss(ran):
    """The bar shows the trained loss, the mean squared error over the 4 rows (the seed's
    printed number); the text prints the same number, says that it is the bar's, and gives
    the sum (what the seed's gradient is of) beside it."""
    results = ran("xor")
    shown = re.findall(r"loss[=:\s]\s*([0-9][0-9.eE+-]*)", results["stderr"])
    assert shown, f"no loss in the progress output: {results['stderr'][-300:]!r}"
    bar = shown[-1]  # the last epoch's
    text = re.search(r"mean squared error ([0-9.eE+-]+) \(the bar's loss; the seed's: "
                     r"0\.0010815776944942087\), summed ([0-9.eE+-]+)", results["printed"])
    assert text is not None, results["printed"]
    assert float(bar) == pytest.approx(results["loss"], rel=1e-3)  # the bar rounds to 4 digits
    assert float(bar) == pytest.approx(float(text.group(1)), rel=1e-3)
    assert float(text.group(1)) == results["loss"]
    assert float(text.group(2)) == pytest.approx(4 * results["loss"], rel=1e-3)
    assert results["summed_loss"] == 4 * results["loss"]


def test_digits_quick_accuracy(ran):
    results = ran("digits")
    assert results["test_accuracy"] >= 0.95
    assert len(results["history"]["val_accuracy"]) == results["epochs"] == 15
    confusion = np.array(results["confusion"])
    assert confusion.sum() == 359
    assert np.trace(confusion) / confusion.sum() == pytest.approx(results["test_accuracy"], abs=1e-6)
    check_pictures(results, 2)


@pytest.mark.slow  # a second model's quick run (3 epochs of a ResNet): the heaviest example test
def test_digits_resnet_quick_trains_a_stateful_model_with_its_own_pictures(ran):
    digits = examples.load("digits")
    assert nn.is_stateful(digits.build("resnet"))
    assert nn.is_stateful(digits.build("resnet", (8, 16), first_block=False))
    results = ran("digits", model="resnet")
    assert results["epochs"] == 5 and results["model"] == "resnet"
    assert results["widths"] == (8, 16) == digits.RESNET_WIDTHS[0]  # the quick run's half widths
    assert "resnet, 5 epochs" in results["printed"]
    assert results["test_accuracy"] >= digits.TARGETS["resnet"][0] == 0.85  # chance is 10%
    assert len(results["history"]["val_accuracy"]) == 5
    confusion = np.array(results["confusion"])
    assert confusion.sum() == 359
    assert np.trace(confusion) / confusion.sum() == pytest.approx(results["test_accuracy"],
                                                                  abs=1e-6)
    assert [pathlib.Path(p).name for p in results["pictures"]] == [
        "digits_resnet_curves.png", "digits_resnet_confusion.png"]
    check_pictures(results, 2)
    checks, got, passed = digits.verdict(results)
    assert passed and "99%" in checks and "ResNet 8-16 (1 block)" in checks and "resnet" in got
    assert not digits.verdict({**results, "quick": False, "epochs": 12,
                               "test_accuracy": 0.985})[2]  # the full run's target is 99%


@pytest.mark.slow  # ~8 s: the slow tier (`make test-slow`, run by CI)
def test_digits_cnn_quick_pictures_read(ran):
    """The CNN's pictures: its longer title line fits the confusion matrix's picture."""
    results = ran("digits", model="cnn")
    assert results["model"] == "cnn" and results["test_accuracy"] >= 0.95
    assert [pathlib.Path(p).name for p in results["pictures"]] == [
        "digits_cnn_curves.png", "digits_cnn_confusion.png"]
    check_pictures(results, 2)


@pytest.mark.slow  # ~15 s: the slow tier (`make test-slow`, run by CI)
@pytest.mark.parametrize("name", examples.NAMES)
def test_a_quick_verdict_says_what_it_checked_not_the_seeds_numbers(name, ran):
    """The quick run's verdict names its own check; the seed's report is the full run's."""
    results = ran(name)
    module = examples.load(name)
    checks, got, passed = module.verdict(results)
    seed_reports, _, _ = module.verdict({**results, "quick": False})
    assert passed and checks != seed_reports and got


def test_boston_quick_verdict_is_whether_the_loss_fell():
    boston = examples.load("boston")
    fell = {"quick": True, "epochs": 100, "first_train_mse": 600.0, "train_mse": 34.7,
            "first_test_mse": 700.0, "test_mse": 30.0, "closed_form_test_mse": 21.9}
    checks, got, passed = boston.verdict(fell)
    assert passed and "23.73" not in checks + got and "fell from 600.0 to 34.70" in got
    assert not boston.verdict({**fell, "test_mse": 701.0})[2]
    assert not boston.verdict({**fell, "train_mse": 600.5})[2]
    # the full run compares with the closed form: 34.7 is far from it, whatever fell
    assert not boston.verdict({**fell, "quick": False, "epochs": 300})[2]


def test_every_example_has_the_interface():
    for name in examples.NAMES:
        module = examples.load(name)
        assert callable(module.run) and callable(module.verdict)
        assert isinstance(module.SEED, str) and module.SHOWS and isinstance(module.OPTIONS, tuple)
    with pytest.raises(ValueError, match="`name` must be one of adaline, .*got 'mnist'"):
        examples.load("mnist")
    with pytest.raises(ValueError, match="`model` must be 'mlp', 'cnn' or 'resnet', got 'rnn'"):
        examples.load("digits").build("rnn")


def test_sine_quick_forecast_beats_the_last_value_and_its_baselines_are_numpy(ran):
    results = ran("sine")
    sine = examples.load("sine")
    clean, noisy = sine.series()
    test = np.arange(sine.TRAIN_STEPS, sine.STEPS)  # every test step has a full window
    truth = noisy[test].astype(np.float64)
    assert results["last_value_rmse"] == pytest.approx(
        np.sqrt(np.mean((noisy[test - 1] - truth) ** 2)), rel=1e-9)
    assert results["clean_rmse"] == pytest.approx(np.sqrt(np.mean((clean[test] - truth) ** 2)),
                                                  rel=1e-9)
    assert results["clean_rmse"] < results["test_rmse"] < results["last_value_rmse"]
    assert len(results["history"]["val_loss"]) == results["epochs"]
    check_pictures(results, 1)


def test_sort_quick_beats_copying_and_its_data_and_baselines_are_numpy(ran):
    results = ran("sort")
    sort = examples.load("sort")
    _, test_key = jax.random.split(jax.random.PRNGKey(sort.DATA_SEED))
    digits, ordered = sort.sequences(test_key, sort.TEST_ROWS)
    assert digits.shape == (sort.TEST_ROWS, 8) and digits.min() >= 0 and digits.max() <= 9
    np.testing.assert_array_equal(ordered, np.sort(digits, axis=1))
    again, _ = sort.sequences(test_key, sort.TEST_ROWS)
    np.testing.assert_array_equal(again, digits)  # the data come from the key
    assert results["copy_accuracy"] == pytest.approx(np.mean(digits == ordered), rel=1e-12)
    assert results["copy_accuracy"] < results["test_accuracy"] <= 1
    assert len(results["history"]["val_accuracy"]) == results["epochs"] == 2
    assert results["layers"] == sort.QUICK_LAYERS == 1  # the full run's encoder has 2
    assert "1-layer encoder" in sort.verdict(results)[0]
    assert results["history"]["val_accuracy"][-1] == pytest.approx(results["test_accuracy"], abs=1e-6)
    check_pictures(results, 1)


def test_sort_attention_maps_are_pytorchs_and_the_predictions_the_models():
    """sort's picture (NumPy on the host): each layer's head-averaged attention weights are
    PyTorch's (`need_weights=True`) with the weights copied across, and the predicted digits
    are the argmax of the model's own `apply`, for a 2-layer encoder."""
    torch = pytest.importorskip("torch")
    sort = examples.load("sort")
    model, _ = sort.build(2)
    rows, _ = sort.sequences(jax.random.PRNGKey(3), 4)
    params = model.init(jax.random.PRNGKey(5), rows)
    params = jax.tree_util.tree_map(lambda a: 3 * a, params)  # attention far from uniform

    def t(a):
        return torch.tensor(np.asarray(a, np.float64))

    for row in rows:
        maps, predicted = sort.attention_maps(params, row)
        logits = np.asarray(model.apply(params, row[None]))[0]
        np.testing.assert_array_equal(predicted, np.argmax(logits, axis=-1))
        h = t(params["embed"]["w"])[torch.tensor(row)] + t(params["position"])
        for index, p in enumerate(params["encoder"]["layers"]):
            layer = torch.nn.TransformerEncoderLayer(sort.D_MODEL, sort.HEADS, sort.FEEDFORWARD,
                                                     dropout=0.0, batch_first=True).double().eval()
            with torch.no_grad():
                for name, value in [("self_attn.in_proj_weight", p["self_attn"]["in_proj_w"]),
                                    ("self_attn.in_proj_bias", p["self_attn"]["in_proj_b"]),
                                    ("self_attn.out_proj.weight", p["self_attn"]["out_proj_w"]),
                                    ("self_attn.out_proj.bias", p["self_attn"]["out_proj_b"]),
                                    ("linear1.weight", np.asarray(p["linear1"]["w"]).T),
                                    ("linear1.bias", p["linear1"]["b"]),
                                    ("linear2.weight", np.asarray(p["linear2"]["w"]).T),
                                    ("linear2.bias", p["linear2"]["b"]),
                                    ("norm1.weight", p["norm1"]["w"]), ("norm1.bias", p["norm1"]["b"]),
                                    ("norm2.weight", p["norm2"]["w"]), ("norm2.bias", p["norm2"]["b"])]:
                    layer.get_parameter(name).copy_(t(value))
                _, weights = layer.self_attn(h[None], h[None], h[None], need_weights=True,
                                             average_attn_weights=True)
                np.testing.assert_allclose(maps[index], weights[0].numpy(), atol=2e-5)
                h = layer(h[None])[0]
