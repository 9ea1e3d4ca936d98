"""Ignite handlers MONAI lacks: resume from the latest checkpoint, preview images, weight export,
sample grids, loss curves and generative metrics."""

from .checkpoint import LatestCheckpointLoader, latest_checkpoint
from .export import ExportNHAE, ExportWeights
from .preview import VolumePreviewSaver

__all__ = ["ExportNHAE", "ExportWeights", "LatestCheckpointLoader", "VolumePreviewSaver", "latest_checkpoint"]
from .generative import (GenerativeMetrics, LossCurveSaver, RecalibrateBatchNorm, RecalibrateBatchNormOnData,  # noqa: E402
                         SampleGridSaver, generate_images)

__all__ += ["GenerativeMetrics", "LossCurveSaver", "RecalibrateBatchNorm", "RecalibrateBatchNormOnData", "SampleGridSaver",
            "generate_images"]
