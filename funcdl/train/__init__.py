"""Training: a jitted step, `fit` with whole epochs in one compiled `lax.scan`, `evaluate` and
`predict`.

    params, opt_state, history = fdl.train.fit(model, params, fdl.losses.mse_loss,
                                               fdl.optim.adam(1e-3), x, y, epochs=10,
                                               batch_size=128)

Files: `step.py` (the step, `make_train_step`), `epochs.py` (the compiled multi-epoch program,
NaN guard), `batches.py` (row batching inside a program), `fit.py`, `progress.py` (the tqdm bar
moved from compiled code), `evaluate.py`, `sharding.py` (the mesh), `resume.py` (checkpoints),
`checks.py` (argument checks; `x` and `y` may be pytrees of arrays), `param_checks.py`
(floating-point params, no array at two paths), `donation.py` (`make_train_step`'s donated
arguments), `broadcast.py` (the warning for a loss that broadcasts its pred and target).
"""
from funcdl.train.evaluate import evaluate, predict
from funcdl.train.fit import fit
from funcdl.train.step import make_train_step

__all__ = ["make_train_step", "fit", "evaluate", "predict"]
