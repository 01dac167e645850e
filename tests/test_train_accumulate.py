"""`fit(accumulate=k)`: gradient accumulation over k micro-batches of `batch_size` rows.

The reference is a hand-written loop (`accumulated_reference`) that visits the micro-batches
of funcdl's documented shuffle order, groups them k by k (the last group holding what is left
over), averages each group's gradients weighted by rows and applies one optimizer update per
group. For a mean loss that is also one batch k times as large (the rows of group g are the
rows of big batch g, the leftover group included), so `fit(batch_size=k*b)` is a second
reference."""
import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import checkpoint, losses, metrics, nn, optim, train
from funcdl.optim import schedules
from funcdl.train.lr_history import first_count
from train_reference import (ADAM, MODEL, PARAMS, SGD, X, Y, assert_trees_close,
                             counting_compilations)

KEY = jax.random.key(3)
MICRO = 8  # 50 rows: 6 micro-batches of 8 and one of 2 per epoch


def _sum_loss(pred, target):
    return jnp.sum((pred - target) ** 2)


def _add_rows(summed, grads, rows):
    """`summed + rows * grads`, leaf by leaf."""
    return jax.tree_util.tree_map(lambda s, g: s + rows * g, summed, grads)


def _divide(summed, rows):
    return jax.tree_util.tree_map(lambda s: s / rows, summed)


def _order(epoch, shuffle):
    if not shuffle:
        return np.arange(len(X))
    shuffle_key, _ = jax.random.split(jax.random.fold_in(KEY, epoch))
    return np.asarray(jax.random.permutation(shuffle_key, len(X)))


@functools.lru_cache(maxsize=None)
def _value_and_grad(loss):
    return jax.jit(jax.value_and_grad(lambda p, xb, yb: loss(MODEL.apply(p, xb), yb)))


def accumulated_reference(opt, epochs, k, loss=losses.mse_loss, shuffle=True, max_updates=None):
    """`(params, opt_state, history, updates)` of the hand-written accumulation loop."""
    value_and_grad = _value_and_grad(loss)
    params, state, history, updates = PARAMS, opt.init(PARAMS), [], 0
    for epoch in range(epochs):
        order = _order(epoch, shuffle)
        batches = [order[s:s + MICRO] for s in range(0, len(X), MICRO)]
        total = 0.0
        for first in range(0, len(batches), k):
            if updates == max_updates:
                return params, state, history, updates
            summed = jax.tree_util.tree_map(np.zeros_like, params)
            rows = 0
            for batch in batches[first:first + k]:
                value, grads = value_and_grad(params, X[batch], Y[batch])
                summed = _add_rows(summed, grads, len(batch))
                rows += len(batch)
                total += len(batch) * float(value)
            step, state = opt.update(_divide(summed, rows), state, params)
            params = optim.apply_updates(params, step)
            updates += 1
        history.append(total / len(X))
    return params, state, history, updates


def _fit(opt, loss=losses.mse_loss, **options):
    options = {"epochs": 3, "batch_size": MICRO, "key": KEY, "progress": False, **options}
    return train.fit(MODEL, PARAMS, loss, opt, X, Y, **options)


@pytest.mark.parametrize("opt, k", [(SGD, 4), (ADAM, 3)], ids=["sgd", "adam"])
def test_accumulate_equals_the_hand_loop_and_one_batch_k_times_as_large(opt, k):
    # k = 4: groups of 4 and 3 micro-batches (the partial one last); k = 3: of 3, 3 and 1
    params, state, history = _fit(opt, accumulate=k, validation=(X[:20], Y[:20]))
    ref_params, ref_state, ref_history, _ = accumulated_reference(opt, 3, k)
    assert_trees_close(params, ref_params)
    np.testing.assert_allclose(history["loss"], ref_history, rtol=2e-5)
    big = _fit(opt, batch_size=k * MICRO, validation=(X[:20], Y[:20]))
    assert_trees_close(params, big[0])
    np.testing.assert_allclose(history["loss"], big[2]["loss"], rtol=2e-5)
    np.testing.assert_allclose(history["val_loss"], big[2]["val_loss"], rtol=2e-5)


def test_the_step_count_and_the_learning_rate_history_count_updates():
    k, updates_per_epoch = 3, 3  # 7 micro-batches: groups of 3, 3 and 1
    schedule = schedules.cosine_decay(1e-2, 10, eta_min=1e-3)
    opt = optim.adam(schedule)
    params, state, history = _fit(opt, accumulate=k)
    assert int(first_count(state)) == 3 * updates_per_epoch
    np.testing.assert_allclose(history["lr"], [float(schedule(3 * (e + 1) - 1))
                                               for e in range(3)], rtol=1e-6)
    ref_params, ref_state, _, updates = accumulated_reference(opt, 3, k)
    assert updates == 3 * updates_per_epoch
    assert_trees_close(params, ref_params)


def test_a_sum_reduced_loss_gets_the_row_weighted_mean_of_its_micro_batch_gradients():
    # the hand loop with the partial last micro-batch, and, for equal micro-batches
    # (48 of the rows, not shuffled), the big batch's gradient divided by k: SGD at lr / k
    opt = optim.sgd(1e-3, momentum=0.9)
    params, _, history = _fit(opt, loss=_sum_loss, accumulate=4, shuffle=False)
    ref_params, _, ref_history, _ = accumulated_reference(opt, 3, 4, loss=_sum_loss,
                                                          shuffle=False)
    assert_trees_close(params, ref_params)
    np.testing.assert_allclose(history["loss"], ref_history, rtol=2e-5)
    x, y = X[:48], Y[:48]
    micro = train.fit(MODEL, PARAMS, _sum_loss, opt, x, y, epochs=3, batch_size=MICRO,
                      accumulate=3, shuffle=False, progress=False)
    big = train.fit(MODEL, PARAMS, _sum_loss, optim.sgd(1e-3 / 3, momentum=0.9), x, y,
                    epochs=3, batch_size=3 * MICRO, shuffle=False, progress=False)
    assert_trees_close(micro[0], big[0])


@pytest.mark.slow  # ~5 s: the slow tier (`make test-slow`, run by CI)
def test_accumulate_one_is_the_same_program_and_one_group_per_epoch_is_one_update():
    _fit(ADAM, epochs=1)
    with counting_compilations() as compiled:
        _fit(ADAM, epochs=1, accumulate=1)
    assert compiled == []  # accumulate=1 is the program without accumulation
    every = _fit(ADAM, accumulate=7)  # all 7 micro-batches in one group
    more = _fit(ADAM, accumulate=100)  # as many groups as there are micro-batches: one
    assert int(first_count(every[1])) == int(first_count(more[1])) == 3
    jax.tree_util.tree_map(np.testing.assert_array_equal, every[0], more[0])
    full = train.fit(MODEL, PARAMS, losses.mse_loss, ADAM, X, Y, epochs=3, progress=False)
    full_k = train.fit(MODEL, PARAMS, losses.mse_loss, ADAM, X, Y, epochs=3, accumulate=5,
                       progress=False)  # full batch: one micro-batch per epoch
    jax.tree_util.tree_map(np.testing.assert_array_equal, full[0], full_k[0])


@pytest.mark.slow  # ~7 s: the slow tier (`make test-slow`, run by CI)
def test_exact_metrics_and_the_funcdl_backend_with_accumulation():
    own = _fit(ADAM, epochs=2, accumulate=3, grad_backend="funcdl",
               metrics={"r2": metrics.r2_score()})
    big = _fit(ADAM, epochs=2, batch_size=3 * MICRO, metrics={"r2": metrics.r2_score()})
    assert_trees_close(own[0], big[0])
    np.testing.assert_allclose(own[2]["r2"], big[2]["r2"], rtol=1e-4)


@pytest.mark.slow  # ~6 s: the slow tier (`make test-slow`, run by CI)
def test_float16_with_loss_scaling_and_accumulation_follows_the_big_batch():
    micro = _fit(ADAM, epochs=2, accumulate=3, compute_dtype=jnp.float16)
    big = _fit(ADAM, epochs=2, batch_size=3 * MICRO, compute_dtype=jnp.float16)
    np.testing.assert_allclose(micro[2]["loss"], big[2]["loss"], rtol=2e-2)
    # one update per group (2 epochs of 3), applied or skipped by the scaler (each skip halves
    # the scale from its start, 2**16, and adds nothing to the count)
    skipped = round(np.log2(2.0 ** 16 / float(micro[1].scale)))
    assert int(first_count(micro[1])) + skipped == 2 * 3


@pytest.mark.slow  # ~7 s: the slow tier (`make test-slow`, run by CI)
def test_a_nan_stop_is_at_a_groups_start_and_a_resume_equals_the_clean_run(tmp_path):
    path, k = tmp_path / "run.safetensors", 3
    bad = X.copy()
    row = int(_order(1, True)[4 * MICRO + 3])  # epoch 1, micro-batch 4: the second group
    bad[row, 0] = np.inf
    options = dict(batch_size=MICRO, key=KEY, progress=False, accumulate=k, checkpoint=path)
    clean = _fit(ADAM, accumulate=k)
    train.fit(MODEL, PARAMS, losses.mse_loss, ADAM, X, Y, epochs=1, **options)
    with pytest.raises(FloatingPointError) as stop:
        train.fit(MODEL, PARAMS, losses.mse_loss, ADAM, bad, Y, epochs=3, resume=True,
                  **options)
    assert (stop.value.epoch, stop.value.step) == (1, 3)  # the group of micro-batches 3, 4, 5
    assert checkpoint.metadata(path)["step"] == "3"
    assert int(first_count(stop.value.opt_state)) == 3 + 1  # epoch 0's updates and one more
    ref_params, _, _, _ = accumulated_reference(ADAM, 3, k, max_updates=4)
    assert_trees_close(stop.value.params, ref_params)
    resumed = train.fit(MODEL, PARAMS, losses.mse_loss, ADAM, X, Y, epochs=3, resume=True,
                        **options)
    jax.tree_util.tree_map(np.testing.assert_array_equal, resumed[:2], clean[:2])
    assert resumed[2] == clean[2]


@pytest.mark.parametrize("value, error, match", [
    (0, ValueError, r"`accumulate` must be >= 1, got 0"),
    (-2, ValueError, r"`accumulate` must be >= 1, got -2"),
    (2.0, TypeError, r"`accumulate` must be an int, got float 2.0"),
    (True, TypeError, r"`accumulate` must be an int, got bool True"),
    ("4", TypeError, r"`accumulate` must be an int, got str '4'"),
])
def test_bad_accumulate_is_refused_before_compiling(value, error, match):
    with counting_compilations() as compiled, pytest.raises(error, match=match):
        _fit(ADAM, accumulate=value)
    assert compiled == []


MESH_SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    from jax.sharding import Mesh
    from funcdl import losses, optim, train
    from train_reference import MODEL, PARAMS, X, Y, assert_trees_close
    assert len(jax.devices()) == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    kwargs = dict(epochs=2, batch_size=8, accumulate=3, key=jax.random.key(3), progress=False,
                  sample_weight=np.linspace(0, 2, 50))
    one = train.fit(MODEL, PARAMS, losses.mse_loss, optim.adam(1e-2), X, Y, **kwargs)
    four = train.fit(MODEL, PARAMS, losses.mse_loss, optim.adam(1e-2), X, Y, mesh=mesh,
                     **kwargs)
    assert_trees_close(four[:2], one[:2])
    np.testing.assert_allclose(four[2]["loss"], one[2]["loss"], 1e-5)
    print("MESH OK")
''')


@pytest.mark.slow  # a fresh jax process with 4 forced host devices
def test_accumulate_and_sample_weight_on_a_mesh_equal_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=os.pathsep.join([os.getcwd(), os.path.dirname(__file__)]))
    result = subprocess.run([sys.executable, "-c", MESH_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and "MESH OK" in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize("option", ["accumulate", "sample_weight", "class_weight"])
def test_sweep_refuses_fits_accumulation_and_weights_instead_of_ignoring_them(option):
    with pytest.raises(TypeError, match=rf"sweep does not take `{option}` yet"):
        train.sweep(MODEL, PARAMS, losses.mse_loss, optim.sgd, {"lr": np.array([0.1, 0.2])},
                    X, Y, epochs=1, **{option: 2})


@pytest.mark.slow  # ~4 s: the slow tier (`make test-slow`, run by CI)
def test_a_stateful_models_state_moves_with_every_micro_batch():
    from funcdl.nn import Variables
    model = nn.Sequential(nn.Linear(8), nn.BatchNorm1d(), nn.Tanh(), nn.Linear(2))
    variables = model.init(jax.random.key(1), X)
    opt, k = optim.sgd(0.1), 3

    @jax.jit
    def grads_at(p, state, xb, yb):
        def loss(q):
            pred, new_state = model.apply(Variables(q, state), xb, train=True)
            return losses.mse_loss(pred, yb), new_state
        return jax.value_and_grad(loss, has_aux=True)(p)

    params, state, opt_state = variables.params, variables.state, opt.init(variables.params)
    for epoch in range(2):
        order = _order(epoch, True)
        batches = [order[s:s + MICRO] for s in range(0, len(X), MICRO)]
        for first in range(0, len(batches), k):
            summed, rows = jax.tree_util.tree_map(np.zeros_like, params), 0
            for batch in batches[first:first + k]:
                (_, state), grads = grads_at(params, state, X[batch], Y[batch])
                summed = _add_rows(summed, grads, len(batch))
                rows += len(batch)
            step, opt_state = opt.update(_divide(summed, rows), opt_state, params)
            params = optim.apply_updates(params, step)
    fitted, _, _ = train.fit(model, variables, losses.mse_loss, opt, X, Y, epochs=2,
                             batch_size=MICRO, accumulate=k, key=KEY, progress=False)
    assert_trees_close(fitted.params, params)
    assert_trees_close(fitted.state, state)
