"""Registered sample-quality metrics and the evaluation that runs them with their protocol recorded."""

from __future__ import annotations

from . import inception  # noqa: F401  (registers fid, kid, is, pr_inception)
from .core import (
    METRICS,
    OFFLINE_DEFAULT,
    EvalContext,
    ImageSet,
    best_checkpoints,
    evaluate,
    evaluate_checkpoints,
    evaluate_run,
    metric_names,
)

__all__ = ["METRICS", "OFFLINE_DEFAULT", "EvalContext", "ImageSet", "best_checkpoints", "evaluate",
           "evaluate_checkpoints", "evaluate_run", "metric_names"]
