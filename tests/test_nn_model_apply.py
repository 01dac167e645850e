"""`call_apply`: a hand-built `Model(init, apply)` is called with only the keywords it takes."""
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import nn
from funcdl.nn import model as model_module
from funcdl.nn.model import call_apply

KEY = jax.random.key(0)
W = np.arange(6.0, dtype=np.float32).reshape(3, 2) / 4
X = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(4, 3)


def init(key, x):
    return {"w": jnp.asarray(W)}


def recording(log):
    """apply functions of every signature style, each logging the keywords it received."""
    def plain(params, x):
        log.append({})
        return x @ params["w"]

    def key_only(params, x, *, key=None):
        log.append({"key": key})
        return x @ params["w"]

    def train_positional(params, x, train=False):
        log.append({"train": train})
        return x @ params["w"]

    def anything(params, x, **kwargs):
        log.append(kwargs)
        return x @ params["w"]

    return plain, key_only, train_positional, anything


def test_only_the_accepted_keywords_are_passed():
    log = []
    plain, key_only, train_positional, anything = recording(log)
    key = jax.random.key(3)
    for apply in (plain, key_only, train_positional, anything):
        out = call_apply(nn.Model(init, apply), {"w": W}, X, key=key, train=True)
        np.testing.assert_allclose(out, X @ W, rtol=1e-6)
    assert log == [{}, {"key": key}, {"train": True}, {"key": key, "train": True}]


def test_defaults_are_none_and_false():
    log = []
    anything = recording(log)[3]
    call_apply(nn.Model(init, anything), {"w": W}, X)
    assert log == [{"key": None, "train": False}]


def test_an_apply_whose_signature_cannot_be_read_gets_both():
    log = []
    anything = recording(log)[3]

    @functools.wraps(anything)
    def opaque(*args, **kwargs):
        return anything(*args, **kwargs)

    opaque.__signature__ = "unreadable"  # inspect.signature raises TypeError on it
    with pytest.raises(TypeError):
        inspect.signature(opaque)
    call_apply(nn.Model(init, opaque), {"w": W}, X, train=True)
    assert log == [{"key": None, "train": True}]


def test_funcdl_layers_still_get_key_and_train():
    x = jnp.ones((1000,))
    out = call_apply(nn.Dropout(0.5), {}, x, key=jax.random.key(1), train=True)
    assert set(np.unique(np.asarray(out))) == {0.0, 2.0}  # dropped, or scaled by 1/(1-p)
    np.testing.assert_array_equal(call_apply(nn.Dropout(0.5), {}, x), x)  # eval: identity


def test_the_signature_is_read_once_per_function(monkeypatch):
    calls = []
    original = inspect.signature
    monkeypatch.setattr(model_module.inspect, "signature",
                        lambda f, **kw: calls.append(f) or original(f, **kw))

    def apply(params, x):
        return x @ params["w"]

    model = nn.Model(init, apply)
    for _ in range(3):
        call_apply(model, {"w": W}, X, key=KEY, train=True)
    assert calls == [apply]


def test_a_model_without_key_or_train_works_inside_sequential():
    log = []
    plain = recording(log)[0]

    def noisy(params, x, *, key=None):  # takes a key, not train
        log.append({"key": key})
        return x if key is None else x + jax.random.uniform(key, x.shape)

    model = nn.Sequential(nn.Model(init, plain), nn.Tanh(), nn.Model(lambda k, x: {}, noisy))
    params = model.init(KEY, X)
    log.clear()
    key = jax.random.key(7)
    out = model.apply(params, X, key=key, train=True)
    noise = jax.random.uniform(jax.random.split(key, 3)[2], (4, 2))  # the third layer's key
    np.testing.assert_allclose(out, np.tanh(X @ W) + np.asarray(noise), rtol=1e-6)
    assert log[0] == {} and list(log[1]) == ["key"]
