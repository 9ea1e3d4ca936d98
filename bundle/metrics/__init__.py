"""Metrics MONAI lacks (slice jitter) and reconstruction evaluation helpers."""

from .reconstruction import evaluate_reconstruction, slice_jitter

__all__ = ["evaluate_reconstruction", "slice_jitter"]
