"""Every public callable's signature is annotated and reads in `help()`.

The names come from each subpackage's `__all__` (and `fdl.nn.init`'s); a default that is an
initializer shows the call that built it, never `<function ... at 0x...>`.
"""
import importlib
import inspect
import math
import pydoc
import re
import typing

import jax
import jax.numpy as jnp
import pytest

import funcdl as fdl
from funcdl import nn
from funcdl.construction import constructed_by
from funcdl.nn import init

SUBPACKAGES = [name for name in fdl.__all__ if inspect.ismodule(getattr(fdl, name))]
MODULES = [f"funcdl.{name}" for name in SUBPACKAGES] + ["funcdl.nn.init"]

# Parameters left without an annotation, each with its reason.
UNANNOTATED = {}


def public_callables():
    """(dotted name, object) of each public function and class, once per object."""
    seen = set()
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if (inspect.ismodule(obj) or not callable(obj) or typing.get_origin(obj) is not None
                    or id(obj) in seen):
                continue  # a submodule, a constant, a type alias (`Initializer`), an alias
            seen.add(id(obj))
            yield f"{module_name}.{name}", obj


def test_the_walk_finds_the_public_api():
    names = dict(public_callables())
    for expected in ("funcdl.train.fit", "funcdl.train.evaluate", "funcdl.train.predict",
                     "funcdl.train.make_train_step", "funcdl.gradcheck.check_grads",
                     "funcdl.losses.cross_entropy", "funcdl.nn.Linear", "funcdl.nn.LSTM",
                     "funcdl.ops.sum", "funcdl.nn.init.kaiming_uniform", "funcdl.optim.adam"):
        assert expected in names
    assert len(names) > 200


@pytest.mark.parametrize("name, obj", list(public_callables()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_public_parameter_and_result_is_annotated(name, obj):
    signature = inspect.signature(obj)
    missing = [p.name for p in signature.parameters.values()
               if p.annotation is inspect.Parameter.empty
               and p.name not in UNANNOTATED.get(name, ())]
    assert missing == [], f"{name}{signature}: no annotation on {missing}"
    if not inspect.isclass(obj):
        assert signature.return_annotation is not inspect.Signature.empty, f"{name}: no return type"
    assert " at 0x" not in str(signature), f"{name}{signature}"


def test_initializers_read_as_the_call_that_built_them():
    assert repr(init.normal(0.01)) == "normal(std=0.01)"
    assert repr(init.normal()) == "normal()"  # every argument at its default
    assert repr(init.normal(0.5, mean=-1.0)) == "normal(std=0.5, mean=-1.0)"
    assert repr(init.kaiming_uniform(a=math.sqrt(5))) == "kaiming_uniform(a=2.23606797749979)"
    assert repr(init.kaiming_normal(mode="fan_out")) == "kaiming_normal(mode='fan_out')"
    assert repr(init.he_normal()) == "kaiming_normal()"  # the alias is the same function
    assert repr(init.bias_uniform(16)) == "bias_uniform(fan_in=16)"  # not the uniform it makes
    assert repr(init.constant(2.0)) == "constant(value=2.0)"
    # the record's text: a *args constructor lists its arguments positionally
    record = constructed_by(nn.Sequential(nn.Linear(3), nn.Tanh()))
    assert record.call_text() == "Sequential(Linear(3), Tanh())"
    assert constructed_by(nn.Linear(3, bias=False)).call_text() == "Linear(out_features=3, bias=False)"
    # still initializers: called as layers call them, with or without the fans
    w = init.normal(0.01)(jax.random.key(0), (3, 2), jnp.float32, fan_in=3, fan_out=2)
    assert w.shape == (3, 2) and init.accepts_fans(init.normal(0.01))
    assert nn.Linear(4, w_init=init.normal(0.01)) == nn.Linear(4, w_init=init.normal(0.01))
    assert nn.Linear(4, w_init=init.normal(0.01)) != nn.Linear(4, w_init=init.normal(0.02))


@pytest.mark.parametrize("layer", [nn.Linear, nn.Conv2d, nn.Conv1d, nn.LSTM, nn.GRU, nn.RNN,
                                   nn.MultiheadAttention, nn.BatchNorm2d, nn.Embedding,
                                   nn.TransformerEncoderLayer, nn.LayerNorm])
def test_help_of_a_layer_shows_its_defaults_readably(layer):
    text = pydoc.render_doc(layer, renderer=pydoc.plaintext)
    assert " at 0x" not in text and "<locals>" not in text, text[:400]
    assert layer.__name__ + "(" in text


def test_help_of_linear_shows_its_default_initializer():
    signature = str(inspect.signature(nn.Linear))
    assert re.search(r"w_init: Callable\[\.\.\., [\w.]*Array\] = kaiming_uniform\(a=2\.236067977", signature)
    assert re.search(r"w_init: Callable\[.*\] = normal\(\)", str(inspect.signature(nn.Embedding)))


LAYERS = {
    "Linear": lambda: nn.Linear(4), "Conv2d": lambda: nn.Conv2d(4, 3),
    "LSTM": lambda: nn.LSTM(4), "MultiheadAttention": lambda: nn.MultiheadAttention(8, 2),
    "BatchNorm2d": lambda: nn.BatchNorm2d(), "TransformerEncoderLayer":
        lambda: nn.TransformerEncoderLayer(8, 2), "Sequential": lambda: nn.Sequential(
            nn.Linear(3), nn.ReLU()), "Dropout": lambda: nn.Dropout(0.1),
    "Embedding": lambda: nn.Embedding(10, 4), "TransformerEncoder": lambda: nn.TransformerEncoder(
        nn.TransformerEncoderLayer(8, 2), 2),
}


@pytest.mark.parametrize("name", LAYERS)
def test_a_layers_init_and_apply_are_annotated(name):
    """`help(layer.apply)`: the arguments every layer shares get their types from
    `named_model`; the extra keywords (masks) are annotated where they are written."""
    layer = LAYERS[name]()
    for function in (layer.init, layer.apply):
        signature = inspect.signature(function)
        missing = [p.name for p in signature.parameters.values()
                   if p.annotation is inspect.Parameter.empty]
        assert missing == [] and signature.return_annotation is not inspect.Signature.empty, (
            name, function.__qualname__, str(signature))
    parameters = inspect.signature(layer.apply).parameters
    assert parameters["train"].annotation is bool
    assert parameters["key"].annotation == (jax.Array | None)


def test_named_model_fills_only_what_a_layer_of_your_own_leaves_out():
    def apply(params, x, *, key=None, train=False, scale: float = 2.0):
        return x * scale

    model = nn.named_model("Scale()", lambda key, x: {}, apply)
    parameters = inspect.signature(model.apply).parameters
    assert parameters["scale"].annotation is float and parameters["x"].annotation is jax.Array
    assert model.apply({}, jnp.ones(2), train=True).tolist() == [2.0, 2.0]
