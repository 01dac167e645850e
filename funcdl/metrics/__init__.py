"""Metrics as pure functions over mergeable states: exact over any batching and any mesh.

    m = fdl.metrics.r2_score()
    value = fdl.metrics.compute(m, pred, target)

Files: `base.py` (the protocol: `Metric`, `compute`, `initial_state`), `regression.py`
(mean_squared_error, root_mean_squared_error, mean_absolute_error, r2_score, max_error),
`classification.py` (accuracy, top_k_accuracy), `confusion.py` (confusion_matrix, precision,
recall, f1_score), `checks.py` (argument and shape checks). Definitions are scikit-learn's.
"""
from funcdl.metrics.base import Metric, compute, initial_state
from funcdl.metrics.classification import accuracy, top_k_accuracy
from funcdl.metrics.confusion import confusion_matrix, f1_score, precision, recall
from funcdl.metrics.regression import (
    max_error,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    root_mean_squared_error,
)

__all__ = ["Metric", "compute", "initial_state",
           "mean_squared_error", "root_mean_squared_error", "mean_absolute_error", "r2_score",
           "max_error", "accuracy", "top_k_accuracy", "precision", "recall", "f1_score",
           "confusion_matrix"]
