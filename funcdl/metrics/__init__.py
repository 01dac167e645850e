"""Metrics as pure functions over mergeable states: exact over any batching and any mesh.

    m = fdl.metrics.r2_score()
    value = fdl.metrics.compute(m, pred, target)
"""
from funcdl.metrics.base import Metric, compute

__all__ = ["Metric", "compute"]
