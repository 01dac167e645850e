"""Tests for `funcdl/optim/hyperparams.py`: an optimizer rebuilt inside a compiled program from
its numbers passed as arguments follows PyTorch's trajectories (the golden cases of
tests/golden/optim.json, float64 to 1e-10) and today's Python-float optimizer (float32), and
other numbers reuse the one compiled program."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import optim
from funcdl.construction import split_numbers
from funcdl.optim import hyperparams

from test_optim import CASES, PARAM_NAMES, make_optimizer, train_seed_network


def data_runs(names, dtype):
    """Each case's trajectory with its optimizer built from traced numbers: ONE program."""
    split = [hyperparams.as_data(make_optimizer(CASES[name])) for name in names]
    skeletons = [s for s, _ in split]

    @jax.jit
    def run(numbers):
        return [train_seed_network(hyperparams.build(skeleton, n), dtype)
                for skeleton, n in zip(skeletons, numbers)]

    return dict(zip(names, jax.tree_util.tree_map(np.asarray, run([n for _, n in split]))))


@pytest.mark.slow  # ~10 s: the slow tier (`make test-slow`, run by CI)
def test_float64_trajectories_from_traced_numbers_match_torch(x64):
    runs = data_runs(tuple(CASES), "float64")
    for name, (losses, recorded) in runs.items():
        golden = CASES[name]["float64"]
        np.testing.assert_allclose(losses, golden["loss"], rtol=1e-10, atol=1e-12, err_msg=name)
        for param in PARAM_NAMES:
            np.testing.assert_allclose(recorded[param], golden["params"][param], rtol=1e-10,
                                       atol=1e-12, err_msg=f"{name}: {param}")


@pytest.mark.slow  # ~15 s: the slow tier (`make test-slow`, run by CI)
def test_float32_trajectories_from_traced_numbers_equal_the_python_float_ones():
    names = tuple(CASES)
    runs = data_runs(names, "float32")
    static = jax.jit(lambda: [train_seed_network(make_optimizer(CASES[n]), "float32")
                              for n in names])()
    bitwise = 0
    for name, (losses, recorded) in zip(names, static):
        data_losses, data_recorded = runs[name]
        same = all(np.array_equal(np.asarray(recorded[p]), data_recorded[p]) for p in PARAM_NAMES)
        bitwise += same
        for param in PARAM_NAMES:  # within float32 rounding of the trajectory
            np.testing.assert_allclose(data_recorded[param], np.asarray(recorded[param]),
                                       rtol=2e-6, atol=1e-7, err_msg=f"{name}: {param}")
    # 1 - beta and log(beta) come from the host in double: most trajectories are bitwise
    print(f"{bitwise} of {len(names)} float32 trajectories bitwise")
    assert bitwise >= len(names) // 2, f"only {bitwise} of {len(names)} bitwise"


def test_other_numbers_reuse_the_compiled_program():
    traces = []

    def step(skeleton, numbers, grads, state, params):
        traces.append(skeleton)
        return hyperparams.build(skeleton, numbers).update(grads, state, params)

    compiled = jax.jit(step, static_argnums=0)
    params = {"w": jnp.ones(3)}
    results = []
    for lr, betas, wd in [(1e-3, (0.9, 0.999), 1e-2), (3e-4, (0.8, 0.99), 0.1),
                          (1e-1, (0.5, 0.9), 1e-4)]:
        opt = optim.adamw(lr, betas=betas, weight_decay=wd)
        skeleton, numbers = hyperparams.as_data(opt)
        state = opt.init(params)
        results.append((compiled(skeleton, numbers, params, state, params)[0]["w"],
                        opt.update(params, state, params)[0]["w"]))
    assert len(traces) == 1
    for data, direct in results:
        np.testing.assert_allclose(data, direct, rtol=1e-6)
    # a schedule's numbers are data too
    s1 = hyperparams.as_data(optim.sgd(optim.schedules.cosine_decay(0.1, 100)))[0]
    s2 = hyperparams.as_data(optim.sgd(optim.schedules.cosine_decay(0.5, 100)))[0]
    assert s1 == s2 and hash(s1) == hash(s2)


def test_zeros_ints_and_flags_stay_in_the_skeleton():
    skeleton = lambda opt: split_numbers(opt)[0]
    assert skeleton(optim.adam(1e-3)) != skeleton(optim.adam(1e-3, weight_decay=0.1))
    assert skeleton(optim.adam(1e-3)) != skeleton(optim.adam(1e-3, amsgrad=True))
    assert skeleton(optim.sgd(0.1)) != skeleton(optim.sgd(0.1, momentum=0.9))
    assert (skeleton(optim.sgd(optim.schedules.step_decay(0.1, 10)))
            != skeleton(optim.sgd(optim.schedules.step_decay(0.1, 20))))
    assert split_numbers(optim.Optimizer(lambda p: (), lambda g, s, p=None: (g, s))) is None


def test_build_checks_the_number_of_values():
    skeleton, numbers = hyperparams.as_data(optim.sgd(0.1, momentum=0.9))
    with pytest.raises(ValueError, match=r"`numbers` must hold 2 values \(shape \(2,\)\)"):
        hyperparams.build(skeleton, hyperparams.numbers_of([0.1]))
