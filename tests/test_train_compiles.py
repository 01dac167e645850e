"""A second `fdl.train.fit` with an equal model and an equal optimizer compiles nothing.

fit's compiled programs are cached by `jax.jit` on a static spec that holds the Model and the
Optimizer; both compare by the call that built them (`funcdl.construction`), so rebuilding
`Sequential(Linear(16), Tanh(), Linear(1))` and `adam(1e-3)` for a second run finds the
programs of the first. Compiles are counted by `jax.monitoring`'s compile events
(`counting_compilations` of tests/train_reference.py).

Not tested here: a second fit with another learning rate compiles again today (the lr is part
of the optimizer's construction, hence of the static key); "hyperparameters are data" (a later
issue) makes numeric hyperparameters traced inputs instead.
"""
import jax
import numpy as np

from funcdl import losses, nn, optim, train
from funcdl.optim import schedules
from train_reference import counting_compilations

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 4)).astype(np.float32)
Y = (X @ RNG.normal(size=(4, 1))).astype(np.float32)


def fit(model, optimizer, **options):
    params = model.init(KEY, X)
    return train.fit(model, params, losses.mse_loss, optimizer, X, Y, epochs=2, batch_size=16,
                     progress=False, **options)


def test_a_rebuilt_model_and_a_new_adam_compile_nothing():
    def build():
        return nn.Sequential(nn.Linear(16), nn.Tanh(), nn.Linear(1)), optim.adam(1e-3)

    with counting_compilations() as first:
        first_params = fit(*build())[0]
    assert first  # the counter sees compiles
    model, optimizer = build()
    with counting_compilations() as second:
        params = fit(model, optimizer)[0]
    assert second == []
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, first_params)


def test_rebuilt_chains_with_schedules_and_validation_compile_nothing():
    def build():
        model = nn.Sequential(nn.Linear(8, w_init=nn.init.xavier_uniform()), nn.Dropout(0.1),
                              nn.ReLU(), nn.Linear(1))
        optimizer = optim.chain(optim.clip_by_global_norm(1.0),
                                optim.adamw(schedules.warmup_cosine(1e-2, 2, 10), weight_decay=0.05))
        return model, optimizer

    options = dict(validation=(X[:8], Y[:8]))
    fit(*build(), **options)
    with counting_compilations() as compiled:
        fit(*build(), **options)
    assert compiled == []
