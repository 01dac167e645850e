"""The `funcdl` command: run in-process through `main`, and once as `python -m funcdl`."""
import os
import pathlib
import subprocess
import sys

import pytest

import funcdl
from funcdl import cli
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


@pytest.mark.parametrize("argv", [[], ["nonsense"], ["gradcheck", "no_such_case"]])
def test_usage_errors_exit_with_code_2(argv, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code == 2
    assert "usage: funcdl" in capsys.readouterr().err


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
    assert applied == set(PRIMITIVES)  # every op of fdl.ops and every operator
    out = capsys.readouterr().out
    header, rule, *rows, blank, summary = out.splitlines()
    assert header.startswith("| leaf") and set(rule) <= {"|", "-"}
    assert len(rows) > len(cli.gradcheck_cases()) and all(row.endswith("| ok |") for row in rows)
    assert "| mlp_softmax_cross_entropy: argument 0['w1'] " in out
    assert summary.startswith(f"{len(cli.gradcheck_cases())} functions, {len(rows)} leaves: all passed")


def test_gradcheck_fails_with_exit_code_1_on_a_wrong_rule(monkeypatch, capsys):
    wrong = PRIMITIVES["tanh"]._replace(vjps=(lambda g, ans, x: g * (1 - ans),))
    monkeypatch.setitem(PRIMITIVES, "tanh", wrong)
    assert cli.main(["gradcheck", "tanh", "exp"]) == 1
    out = capsys.readouterr().out
    assert "| tanh: argument 0 " in out and "FAIL |" in out and "| exp: argument 0 " in out
    assert out.splitlines()[-1].startswith("2 functions, 2 leaves: FAILED: tanh (")
