"""Segmentation workflow (``configs/segmentation/``) that trains on real and / or synthetic (image, label) pairs.

Two tasks: ``layers``, 3D 13-class segmentation of the OCT layer map, and ``av``, 2D artery / vein
segmentation of the en-face projection. Import it in a config with ``$import bundle.segmentation``.
"""

from .metrics import (AV_CLASSES, LAYER_CLASSES, RETINAL_LAYERS, ClassSubsetDiceMetric, SurfaceMADMetric,
                      boundary_surfaces, label_map)
from ..data.datalist import find_datalist
from .mixing import mix_dataset, mix_synthetic, read_split, synthetic_items
from .report import MetricsReport, per_class
from .transforms import ARTERY, VEIN, ArteryVeinTargetd, AtomicNibabelWriter, EnFaceProjectiond, LowResolutiond

__all__ = ["ARTERY", "AV_CLASSES", "LAYER_CLASSES", "RETINAL_LAYERS", "VEIN", "ArteryVeinTargetd",
           "AtomicNibabelWriter", "ClassSubsetDiceMetric", "EnFaceProjectiond", "LowResolutiond", "MetricsReport",
           "SurfaceMADMetric", "boundary_surfaces", "find_datalist", "label_map", "mix_dataset", "mix_synthetic",
           "per_class", "read_split", "synthetic_items"]
