"""The README is a front door that tells the truth: short, every Python block runs as written,
its numbers are the code's, its links lead to files of the repository."""
import contextlib
import io
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fdl
from funcdl import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- skip: [^\n]*-->\n)?```python\n(.*?)```", re.S)


def run(code, where):
    """Execute `code` in a namespace of its own under jax's default promotion rules (a
    reader's, not the test suite's strict ones); return the namespace and what it printed."""
    namespace, printed = {"__name__": "__readme__"}, io.StringIO()
    with contextlib.redirect_stdout(printed), jax.numpy_rank_promotion("allow"), \
            jax.numpy_dtype_promotion("standard"):
        exec(compile(code, str(where), "exec"), namespace)
    return namespace, printed.getvalue()


def run_section(title):
    """Execute the first python block under `## title`; return its namespace and what it printed."""
    code = re.search(rf"## {re.escape(title)}\n.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    return run(code, README)


@pytest.mark.slow  # ~5 s: the slow tier (`make test-slow`, run by CI)
def test_quick_start_runs_and_learns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace, printed = run_section("Quick start")
    lines = printed.splitlines()
    assert lines[0] == "Sequential(Linear(16), Tanh(), Linear(1))"
    losses = [float(match) for match in re.findall(r"loss (\d+\.\d+)", printed)]
    assert len(losses) == 7  # steps 0, 50, ..., 300
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    initial = namespace["loss_fn"](namespace["model"].init(jax.random.key(0), namespace["x"]))
    final = namespace["loss_fn"](namespace["params"])
    # y = |x|^2 with x ~ N(0, I_3) has variance 6: a fit that learned nothing scores ~6 and up.
    assert float(final) < 0.1 * float(initial)
    assert float(final) < 1.0
    # the text after the block gives the printed range
    assert 17 < losses[0] < 19 and 0.5 < losses[-1] < 0.9


@pytest.mark.slow
def test_every_python_block_runs_alone(tmp_path, monkeypatch):
    """Each block in a fresh namespace (its own imports), in a scratch folder (the checkpoint
    block writes run.safetensors there)."""
    monkeypatch.chdir(tmp_path)
    blocks = BLOCK.findall(README.read_text())
    assert len(blocks) >= 3
    printed = []
    for skip, code in blocks:
        assert not skip, "the README's blocks need neither a GPU nor several processes"
        printed.append(run(code, README)[1])
    assert re.search(r"held-out accuracy 0\.[89]\d\d", printed[1]), printed[1]
    assert printed[2].strip() == "after warm-up"


def test_the_readme_is_a_short_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    for stale in ("find-links", "2-core", "load average", "../shared", "API.md", "VM"):
        assert stale not in text, stale
    # no pointers outside the repository, except the local docs server
    assert re.findall(r"https?://[^\s)>\"'`]+", text) == ["http://127.0.0.1:8000"]
    for heading in ("## The two commands", "## Quick start", "## Gallery", "## The documentation"):
        assert heading in text


def test_every_link_and_picture_of_the_readme_is_a_file_of_the_repository():
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#]+)\)", text) + re.findall(r'(?:href|src)="([^"#]+)"', text)
    assert len(targets) > 20
    for target in targets:
        if target.startswith("http"):
            continue
        assert (ROOT / target).is_file(), target


def test_the_gradcheck_count_is_the_commands():
    match = re.search(r"`funcdl gradcheck` checks\s+`fdl\.autodiff` against .*? on (\d+) functions",
                      README.read_text(), re.S)
    assert match and int(match.group(1)) == len(cli.gradcheck_cases())


def test_the_constants_paragraph_says_what_the_code_does():
    """Integer bounds and exponents are cast; an integer target of a loss is refused."""
    guide = ROOT / "docs" / "guides" / "verifying-gradients.md"
    paragraph = re.search(r"\*\*Constants stay constants\.\*\*(.*?)\n\n", guide.read_text(), re.S).group(1)
    assert "binary_cross_entropy(p, 0)" not in paragraph  # an integer target is not accepted
    assert "refuses an integer `y`" in paragraph
    x, p = jnp.array([-2.0, 0.5, 3.0]), jnp.array([0.25, 0.5, 0.75])
    np.testing.assert_array_equal(fdl.ops.clip(x, -1, 1), np.clip(np.asarray(x), -1.0, 1.0))
    np.testing.assert_array_equal(fdl.ops.power(x, 2), np.asarray(x) ** 2)
    with pytest.raises(TypeError, match=r"`target` must be a floating-point .* got dtype int32 "
                                        r"\(cast it to the dtype of `probs`\)"):
        fdl.losses.binary_cross_entropy(p, jnp.array([0, 1, 1]))
