"""The README's examples run as written: the quick start trains and prints its loss going down,
and the "Writing a layer" example gives the gradients `jax.grad` gives."""
import contextlib
import io
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fdl

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def run_section(title):
    """Execute the first python block under `## title`; return its namespace and what it printed."""
    code = re.search(rf"## {re.escape(title)}\n.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace, printed = {}, io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), namespace)
    return namespace, printed.getvalue()


def test_quick_start_runs_and_learns():
    namespace, printed = run_section("Quick start")
    lines = printed.splitlines()
    assert lines[0] == "Sequential(Linear(16), Tanh(), Linear(1))"
    losses = [float(match) for match in re.findall(r"loss (\d+\.\d+)", printed)]
    assert len(losses) == 7  # steps 0, 50, ..., 300
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    initial = namespace["loss_fn"](namespace["model"].init(namespace["jax"].random.PRNGKey(0),
                                                           namespace["x"]))
    final = namespace["loss_fn"](namespace["params"])
    # y = |x|^2 with x ~ N(0, I_3) has variance 6: a fit that learned nothing scores ~6 and up.
    assert float(final) < 0.1 * float(initial)
    assert float(final) < 1.0


def test_writing_a_layer_example():
    namespace, printed = run_section("Writing a layer")
    assert printed.strip() == "Sequential(Linear(4), Scale(2.0))"
    model, params = namespace["model"], namespace["params"]
    expected = jax.grad(lambda p: model.apply(p, np.ones((8, 3), np.float32)).sum())(params)
    for got, want in zip(jax.tree_util.tree_leaves(namespace["grads"]), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_the_constants_paragraph_says_what_the_code_does():
    """Integer bounds and exponents are cast; an integer target of a loss is refused."""
    paragraph = re.search(r"\*\*Constants stay constants\.\*\*(.*?)\n- ", README.read_text(), re.S).group(1)
    assert "binary_cross_entropy(p, 0)" not in paragraph  # an integer target is not accepted
    assert "refuses an integer `y`" in paragraph
    x, p = jnp.array([-2.0, 0.5, 3.0]), jnp.array([0.25, 0.5, 0.75])
    np.testing.assert_array_equal(fdl.ops.clip(x, -1, 1), np.clip(np.asarray(x), -1.0, 1.0))
    np.testing.assert_array_equal(fdl.ops.power(x, 2), np.asarray(x) ** 2)
    with pytest.raises(TypeError, match=r"`target` must be a floating-point .* got dtype int32 "
                                        r"\(cast it to the dtype of `probs`\)"):
        fdl.losses.binary_cross_entropy(p, jnp.array([0, 1, 1]))
