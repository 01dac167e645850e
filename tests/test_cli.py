"""The `funcdl` command: run in-process through `main`, and once as `python -m funcdl`."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

import funcdl
from funcdl import cli, example_commands, examples
from funcdl.autodiff.rule_ops import strip
from funcdl.autodiff.vjps import PRIMITIVES


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"funcdl {funcdl.__version__}\n"


def test_python_dash_m_funcdl():
    root = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "funcdl", "--version"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert (done.returncode, done.stdout) == (0, f"funcdl {funcdl.__version__}\n")


@pytest.mark.parametrize("argv, message", [
    ([], "funcdl: error: the following arguments are required: command"),
    (["nonsense"], "funcdl: error: argument command: invalid choice: 'nonsense'"),
    (["gradcheck", "no_such_case"], "funcdl gradcheck: error: argument case: unknown case 'no_such_case'"),
    (["run", "mnist"], "funcdl run: error: argument NAME: unknown example 'mnist' (choose from adaline,"),
    (["run", "xor", "--epochs", "ten"], "funcdl run: error: argument --epochs: expected a positive int, got 'ten'"),
    (["run", "xor", "--epochs", "0"], "funcdl run: error: argument --epochs: expected a positive int, got '0'"),
    (["run", "boston", "--lr", "-0.1"], "funcdl run: error: argument --lr: expected a positive float, got '-0.1'"),
    (["run", "boston", "--lr", "nan"], "funcdl run: error: argument --lr: expected a positive float, got 'nan'"),
    (["run", "boston", "--optimizer", "lbfgs"], "funcdl run: error: argument --optimizer: invalid choice: 'lbfgs'"),
    (["run", "boston", "--backend", "torch"], "funcdl run: error: argument --backend: invalid choice: 'torch'"),
    (["run", "backprop", "--epochs", "3"], "funcdl run: error: backprop does not take --epochs (it takes --lr, --backend)"),
    (["demo", "--quick"], "funcdl: error: unrecognized arguments: --quick"),
])
def test_usage_errors_are_one_line_and_exit_with_code_2(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
    assert err.count("--help") == 1  # the hint once


@pytest.mark.parametrize("command", [["run", "adaline"], ["demo"]])
@pytest.mark.parametrize("problem", ["file", "under_a_file"])
def test_a_bad_out_folder_is_a_usage_error_found_before_training(command, problem, tmp_path,
                                                                 monkeypatch, capsys):
    file = tmp_path / "pictures.png"
    file.write_text("not a folder")
    out = file if problem == "file" else file / "more"
    trained = []
    monkeypatch.setattr(examples.load("adaline"), "run", lambda **options: trained.append(1))
    with pytest.raises(SystemExit) as done:
        cli.main([*command, "--out", str(out), "--no-cache"])
    assert done.value.code == 2 and not trained
    captured = capsys.readouterr()
    expected = ("exists and is not a folder" if problem == "file" else
                f"{str(file)!r} is a file, so {str(out)!r} cannot be a folder")
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"funcdl {command[0]}: error: argument --out: the pictures' folder ")
    assert expected in captured.err and file.read_text() == "not a folder"


def test_the_default_out_folder_is_checked_too(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("")  # runs/adaline cannot be made
    with pytest.raises(SystemExit) as done:
        cli.main(["run", "adaline", "--no-cache"])
    assert done.value.code == 2
    assert "the pictures' folder 'runs' is a file, so 'runs/adaline' cannot be" in capsys.readouterr().err


def test_folder_problem_is_none_for_a_new_or_existing_folder(tmp_path):
    assert example_commands.folder_problem(tmp_path) is None
    assert example_commands.folder_problem(tmp_path / "new" / "deeper") is None
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_every_optimizer_name_is_an_fdl_optim_alias_and_each_example_takes_it(capsys, tmp_path):
    assert set(cli.OPTIMIZERS) == {"sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"}
    # boston and digits call `getattr(fdl.optim, name)(lr)`; optimizers has its own table
    assert all(callable(getattr(funcdl.optim, name)) for name in cli.OPTIMIZERS)
    optimizers = examples.load("optimizers")
    assert set(cli.OPTIMIZERS) == {*optimizers.SEED_OPTIMIZERS, *optimizers.MORE_OPTIMIZERS}
    for name in cli.OPTIMIZERS:
        assert cli.build_parser().parse_args(["run", "digits", "--optimizer", name]).optimizer == name
    assert cli.main(["run", "optimizers", "--optimizer", "adamw", "--epochs", "2",
                     "--out", str(tmp_path), "--no-cache"]) == 0
    assert "    adamw(lr=0.01): loss 0.298371 ->" in capsys.readouterr().out
    with pytest.raises(ValueError, match="`optimizer` must be one of sgd, .*, adamw, got 'lbfgs'"):
        optimizers.run(optimizer="lbfgs", out_dir=str(tmp_path))


@pytest.mark.parametrize("name", [name for name in examples.NAMES
                                  if "optimizer" in examples.load(name).OPTIONS])
def test_adamw_reaches_every_example_that_takes_an_optimizer(name, tmp_path, monkeypatch, capsys):
    module = examples.load(name)
    called = []
    monkeypatch.setattr(module, "run", lambda **options: called.append(options) or {"pictures": []})
    monkeypatch.setattr(module, "verdict", lambda results: ("checks", "got", True))
    assert cli.main(["run", name, "--optimizer", "adamw", "--out", str(tmp_path), "--no-cache"]) == 0
    assert [options["optimizer"] for options in called] == ["adamw"]


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_a_quick_run_says_what_it_checked_and_never_pass(tmp_path, capsys):
    assert cli.main(["run", "boston", "--quick", "--out", str(tmp_path), "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "boston, quick run: checks training ran: the train and test MSE fell" in out
    assert re.search(r"in 100 epochs train MSE fell from \d+\.\d to \d+\.\d\d, test MSE from", out)
    assert "[ok]" in out and "[pass]" not in out and "the seed reports" not in out


def test_a_diverging_run_is_one_line_and_exit_code_1(tmp_path, capsys):
    assert cli.main(["run", "boston", "--lr", "10", "--epochs", "30", "--out", str(tmp_path),
                     "--no-cache"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("funcdl run boston: fit: ") and "non-finite" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_list_names_every_example_with_its_seed(capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(examples.NAMES)
    assert [line.split()[2] for line in lines] == ["000", "001", "002", "002", "003", "004", "-", "-", "-"]


def test_run_prints_the_results_and_writes_to_out(tmp_path, capsys):
    assert cli.main(["run", "optimizers", "--optimizer", "adam", "--lr", "0.05", "--epochs", "5",
                     "--out", str(tmp_path), "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "adam(lr=0.05): loss 0.298371 ->" in out and "in 5 epochs" in out
    assert "momentum" not in out and "[pass]" in out
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ema.png", "optimizers.png"]


@pytest.mark.slow  # ~6 s: the slow tier (`make test-slow`, run by CI)
def test_demo_table_and_exit_code(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(examples, "NAMES", ("backprop",))
    assert cli.main(["demo", "--out", str(tmp_path), "--no-cache"]) == 0
    out = capsys.readouterr().out
    header = "| example | the seed reports | funcdl got | pass | cold s | warm s |"
    row = next(line for line in out.splitlines() if line.startswith("| backprop |"))
    assert header in out and "| pass |" in row and "1 examples in" in out and "all reproduced" in out
    backprop = examples.load("backprop")
    monkeypatch.setattr(backprop, "verdict", lambda results: ("a", "b", False))
    assert cli.main(["demo", "--out", str(tmp_path), "--no-cache"]) == 1
    assert "| backprop | a | b | FAIL |" in capsys.readouterr().out


@pytest.mark.slow  # ~8 s: the slow tier (`make test-slow`, run by CI)
def test_example_file_runs_alone_and_fills_the_compilation_cache(tmp_path):
    root = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "FUNCDL_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PYTHONPATH", None)  # the example file finds the checkout's funcdl by itself
    done = subprocess.run([sys.executable, str(root / "examples" / "backprop.py"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "all 21 published numbers within" in done.stdout and "[pass]" in done.stdout
    assert any((tmp_path / "cache").iterdir())  # compilations cached, thresholds at 0


@pytest.mark.slow  # ~80 s: the slow tier (`make test-slow`, run by CI)
def test_gradcheck_passes_and_covers_every_primitive(monkeypatch, capsys):
    applied = set()

    def recording(name, forward):
        def forward_and_record(*args, **params):
            applied.add(name)
            return forward(*args, **params)
        return forward_and_record

    for name, primitive in list(PRIMITIVES.items()):
        monkeypatch.setitem(PRIMITIVES, name, primitive._replace(forward=recording(name, primitive.forward)))
    assert cli.main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    # the transposes that only second order applies (the rules of getitem's, max pooling's
    # and take's rules)
    assert set(PRIMITIVES) - applied == {"index_get", "max_pool_gather", "take_zeros"}
    assert cli.main(["gradcheck", "--order", "2", "indexing", "max_pool2d", "take_repeated"]) == 0
    capsys.readouterr()
    assert applied == set(PRIMITIVES)  # every op of fdl.ops and every operator
    header, rule, *rows, blank, summary = out.splitlines()
    assert header.startswith("| leaf") and set(rule) <= {"|", "-"}
    assert len(rows) > len(cli.gradcheck_cases()) and all(row.endswith("| ok |") for row in rows)
    assert "| mlp_softmax_cross_entropy: argument 0['w1'] " in out
    assert summary.startswith(f"{len(cli.gradcheck_cases())} functions, {len(rows)} leaves: all passed")


def test_gradcheck_order_2_checks_hessians_and_prints_skips(monkeypatch, capsys):
    monkeypatch.setitem(cli.NOT_TWICE_DIFFERENTIABLE, "abs", "a kink at a sampled point (for the test)")
    # (matmul, not a convolution: jax.hessian of conv2d costs ~40 s here, and the nested conv
    # rules are checked in tests/test_autodiff_second_order.py)
    assert cli.main(["gradcheck", "--order", "2", "tanh", "abs", "matmul"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("skipped abs: a kink at a sampled point (for the test)\n")
    assert "| tanh: argument 0 " in out and "| matmul: argument 1 " in out and "| abs:" not in out
    assert out.splitlines()[-1].startswith("2 functions, 3 leaves: all passed")
    # a rule right at first order and wrong at second (its output read as a constant) fails
    tanh = PRIMITIVES["tanh"]
    monkeypatch.setitem(PRIMITIVES, "tanh", tanh._replace(
        vjps=(lambda g, ans, x: g * (1 - strip(ans) * strip(ans)),)))
    assert cli.main(["gradcheck", "tanh"]) == 0
    assert cli.main(["gradcheck", "--order", "2", "tanh"]) == 1
    assert "FAIL |" in capsys.readouterr().out


def test_gradcheck_fails_with_exit_code_1_on_a_wrong_rule(monkeypatch, capsys):
    wrong = PRIMITIVES["tanh"]._replace(vjps=(lambda g, ans, x: g * (1 - ans),))
    monkeypatch.setitem(PRIMITIVES, "tanh", wrong)
    assert cli.main(["gradcheck", "tanh", "exp"]) == 1
    out = capsys.readouterr().out
    assert "| tanh: argument 0 " in out and "FAIL |" in out and "| exp: argument 0 " in out
    assert out.splitlines()[-1].startswith("2 functions, 2 leaves: FAILED: tanh (")
