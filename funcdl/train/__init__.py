"""Training: a jitted step, `fit` with whole epochs in one compiled `lax.scan`, `evaluate` and
`predict`.

    params, opt_state, history = fdl.train.fit(model, params, fdl.losses.mse_loss,
                                               fdl.optim.adam(1e-3), x, y, epochs=10,
                                               batch_size=128)

Files: `step.py` (the step, `make_train_step`), `epochs.py` (the compiled multi-epoch program,
NaN guard), `batches.py` (row batching inside a program), `fit.py`, `progress.py` (the tqdm bar
moved from compiled code), `evaluate.py`, `sharding.py` (the mesh), `resume.py` (checkpoints),
`checks.py` (argument checks; `x` and `y` may be pytrees of arrays), `loop.py` (the calls of a
fit, Ctrl-C), `stops.py` (the NaN stop's error and `Interrupted`), `accumulate.py` (loss and
metric totals), `feed.py` (data to the devices), `loss_scale.py` (float16's dynamic loss
scaling), `param_checks.py` (floating-point params, no array at two paths), `donation.py`
(`make_train_step`'s donated arguments), `broadcast.py` (the warning for a loss that
broadcasts its pred and target), `callbacks.py` (EarlyStopping, BestCheckpoint, CSVLogger,
TensorBoard), `hooks.py` (the callbacks between `fit`'s calls), `lr_history.py`
(`history["lr"]`), `hyperdata.py` (the optimizer's numbers as arguments of the
compiled programs), `sweep.py` and `sweep_configs.py` (k hyperparameter configurations trained
at once, vmapped), `micro_batches.py` (gradient accumulation, `fit(accumulate=k)`),
`weights.py` (`sample_weight` and `class_weight`, Keras's weighted loss), `stream.py`,
`chunks.py`, `prefetch.py` and `stream_run.py` (streamed data: loaders and memory maps, chunk
by chunk, put on the device ahead by a thread).
"""
from funcdl.train.evaluate import evaluate, predict
from funcdl.train.fit import fit
from funcdl.train.loss_scale import LossScaleState
from funcdl.train.step import make_train_step
from funcdl.train.sweep import sweep
from funcdl.train.stops import Interrupted

__all__ = ["make_train_step", "fit", "sweep", "evaluate", "predict", "Interrupted", "LossScaleState"]
