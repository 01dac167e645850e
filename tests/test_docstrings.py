"""Every public function and class has a docstring that says what it takes and what it gives.

funcdl's docstrings are prose in the manner of PyTorch's and optax's, not a fixed template: a
line ``x: `(N, C)` -> `(N, C_out)```, an ``Args:`` block, or a sentence naming the argument
all count. The checks, per public name of the subpackages below (their ``__all__``):

- it has a docstring of its own (not the ``Name(field, ...)`` line NamedTuple writes);
- a function names each of its parameters, in its own docstring, in the docstring of a public
  name it refers to in backticks (``arguments as `Conv2d```) or of the module it points to
  ("see the module"), or, for a parameter that every function of the subpackage shares (a
  loss's ``reduction``), in the subpackage's docstring;
- a function says what it gives: an arrow ``->`` (shapes in, shapes out), "return(s)", an
  update rule ``<-``, "elementwise" / "same shape" (a layer that keeps the shape), or a
  first line that names the result (``"`(fan_in, fan_out)` of a weight"``, "The state ...",
  "True when ..."). A constructor of the module's own kind (an initializer, an optimizer, a
  metric: the module's docstring says what that is) is exempt from this one.
"""
import importlib
import inspect
import re

import pytest

MODULES = ["funcdl.train", "funcdl.nn", "funcdl.nn.init", "funcdl.losses", "funcdl.optim",
           "funcdl.metrics", "funcdl.checkpoint", "funcdl.autodiff", "funcdl.gradcheck"]

# The parameters a module's docstring describes once for all of its functions.
SHARED = {"funcdl.losses": {"reduction"}}

GIVES = re.compile(r"->|\breturns?\b|<-|\belementwise\b|\bsame shape\b|^(`|The |An? |True )",
                   re.IGNORECASE)
# What a constructor of the module's own kind returns is described once, in the module's
# docstring (an initializer, an optimizer, a metric); its docstring gives the math instead.
KINDS = {"funcdl.nn.init": "Initializer", "funcdl.optim": "Optimizer", "funcdl.metrics": "Metric"}


def documented():
    """(module name, public name, object) for each public function and class."""
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj) and not inspect.ismodule(obj) and not _is_type_alias(obj):
                yield module_name, name, obj


def _is_type_alias(obj):
    return type(obj).__module__ == "typing" or getattr(obj, "__origin__", None) is not None


def own_doc(obj):
    doc = obj.__doc__ or ""
    generated = inspect.isclass(obj) and re.fullmatch(rf"{obj.__name__}\(.*\)", doc.strip())
    return "" if generated else inspect.cleandoc(doc)


def names(parameter, text):
    return re.search(rf"(?<![\w.]){re.escape(parameter)}(?!\w)", text) is not None


def referred_docs(obj, doc, module):
    """The docstrings `doc` defers to: those of the module's other public functions and
    classes that it names in backticks (``as `Conv2d```), and that of the module `obj` is
    written in when it says "the module" ("see the module", "in the module docstring")."""
    found = []
    for name in set(re.findall(r"`{1,2}(?:fdl\.\w+\.)?(\w+)[(`]", doc)):
        other = getattr(module, name, None) if name in module.__all__ else None
        if other is not None and other is not obj and not inspect.ismodule(other):
            found.append(own_doc(other))
    if re.search(r"\bthe module\b|\bmodule('s)? docstring\b", doc):
        found.append(inspect.getmodule(obj).__doc__ or "")
    return found


CASES = list(documented())


@pytest.mark.parametrize("module_name, name, obj", CASES,
                         ids=[f"{m.removeprefix('funcdl.')}.{n}" for m, n, _ in CASES])
def test_every_public_name_says_what_it_takes_and_gives(module_name, name, obj):
    module = importlib.import_module(module_name)
    doc = own_doc(obj)
    assert doc, f"{module_name}.{name} has no docstring"
    if inspect.isclass(obj):
        return  # a class's fields are described in its docstring or beside each field
    elsewhere = referred_docs(obj, doc, module)
    shared = SHARED.get(module_name, set())
    unnamed = []
    for parameter in inspect.signature(obj).parameters.values():
        if names(parameter.name, doc) or any(names(parameter.name, d) for d in elsewhere):
            continue
        if parameter.name in shared and names(parameter.name, module.__doc__ or ""):
            continue
        unnamed.append(parameter.name)
    assert unnamed == [], f"{module_name}.{name}: the docstring does not name {unnamed}"
    kind = KINDS.get(module_name)
    if kind is not None and inspect.signature(obj).return_annotation is getattr(module, kind):
        return
    assert GIVES.search(doc) or any(GIVES.search(d) for d in elsewhere), (
        f"{module_name}.{name}: the docstring does not say what it returns")


def test_the_checks_find_a_missing_parameter_and_a_missing_result():
    """The rules above can fail: a docstring that skips an argument, one that says nothing of
    the result, and a module docstring that does not describe the shared argument."""
    assert not names("beta", "Smooth L1 with betas")
    assert names("beta", "beta >= 0") and names("w_init", "``w_init``: an initializer")
    assert not GIVES.search("Uniform on [a, b).") and not GIVES.search("Like `jax.grad`.")
    assert GIVES.search("x: `(N, C)` -> `(N, C_out)`") and GIVES.search("Returns `(y, state)`")
    assert not names("reduction", "Losses with PyTorch's semantics.")
