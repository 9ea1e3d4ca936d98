"""Ignite handlers MONAI lacks: resume from the latest checkpoint, preview images, weight export."""

from .checkpoint import LatestCheckpointLoader, latest_checkpoint
from .export import ExportNHAE, ExportWeights
from .preview import VolumePreviewSaver

__all__ = ["ExportNHAE", "ExportWeights", "LatestCheckpointLoader", "VolumePreviewSaver", "latest_checkpoint"]
