"""Ignite handlers MONAI lacks: resume from the latest checkpoint, preview images, weight export,
sample grids, loss curves and generative metrics."""

from .checkpoint import EngineCheckpointSaver, LatestCheckpointLoader, latest_checkpoint
from .export import ExportNHAE, ExportWeights
from .preview import VolumePreviewSaver

__all__ = ["EngineCheckpointSaver", "ExportNHAE", "ExportWeights", "LatestCheckpointLoader", "VolumePreviewSaver",
           "latest_checkpoint"]
from .generative import (GenerativeMetrics, InstanceNoiseSchedule, LossCurveSaver, RecalibrateBatchNorm,  # noqa: E402
                         RecalibrateBatchNormOnData, SampleGridSaver, generate_images)

__all__ += ["GenerativeMetrics", "InstanceNoiseSchedule", "LossCurveSaver", "RecalibrateBatchNorm",
            "RecalibrateBatchNormOnData", "SampleGridSaver", "generate_images"]
from .synthesis import SynthesisLogger  # noqa: E402

__all__ += ["SynthesisLogger"]
from .drgan import DRGANSampleGrid, DRGANStageSchedule, FitGradeGaussians  # noqa: E402
__all__ += ["DRGANSampleGrid", "DRGANStageSchedule", "FitGradeGaussians"]
