"""Write an evaluator's metrics, with per-class values, to one JSON file."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from ignite.engine import Events

from ..io import save_json


def per_class(details: torch.Tensor, names: Sequence[str], classes: Sequence[int] | None = None) -> dict:
    """Mean over images of each column of an (N, C) metric buffer, NaN-aware (a class absent from an image
    does not count), keyed by ``names``; ``classes`` picks the columns (default: all, in order)."""
    details = torch.as_tensor(details, dtype=torch.float64).reshape(len(details), -1)
    cols = list(range(details.shape[1])) if classes is None else [int(c) for c in classes]
    if len(cols) != len(names):
        raise ValueError(f"{len(names)} names for {len(cols)} metric columns")
    out = {}
    for name, c in zip(names, cols):
        v = details[:, c]
        v = v[~torch.isnan(v)]
        out[str(name)] = float(v.mean()) if len(v) else None
    return out


class MetricsReport:
    """At evaluator completion, atomically write ``path`` (JSON): ``info``, the number of cases, every
    metric of ``engine.state.metrics`` and, for metrics listed in ``class_names`` (name -> column names,
    or name -> {"names": [...], "columns": [...]}), their per-class means from ``engine.state.metric_details``
    (MONAI metric handlers save them with ``save_details=True``).

    MONAI's ``MetricsSaver`` writes CSV files in place; this writes one JSON file atomically.
    """

    def __init__(self, path: str | os.PathLike, class_names: dict | None = None, info: dict | None = None):
        self.path, self.class_names, self.info = path, dict(class_names or {}), dict(info or {})
        self.written: dict | None = None

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine) -> None:
        details = getattr(engine.state, "metric_details", {}) or {}
        report = {**self.info, "num_cases": len(engine.data_loader.dataset),
                  "metrics": {k: float(v) for k, v in engine.state.metrics.items()}, "per_class": {}}
        for name, spec in self.class_names.items():
            if name in details:
                names, cols = (spec["names"], spec.get("columns")) if isinstance(spec, dict) else (spec, None)
                report["per_class"][name] = per_class(details[name], names, cols)
        save_json(report, self.path)
        self.written = report
        engine.logger.info(f"metrics written to {self.path}: {report['metrics']}")
