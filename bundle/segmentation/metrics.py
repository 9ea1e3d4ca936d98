"""Metrics of the segmentation workflow: layer Dice over chosen classes and the boundary-surface distance.

Class maps follow ``bundle.data.oct_phantom``: 0 vitreous, 1..11 the retinal layers ``LAYER_NAMES``
(RNFL..Choroid), 12 sclera; boundary surface s (``SURFACE_NAMES[s]``) is the top of layer s + 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.metrics import CumulativeIterationMetric, DiceMetric
from monai.metrics.utils import do_metric_reduction

from ..data.oct_phantom import LAYER_NAMES, OCTA500_SURFACES

LAYER_CLASSES = ("vitreous",) + LAYER_NAMES + ("sclera",)
"""Name of each class of the layer map (index = label value)."""
RETINAL_LAYERS = tuple(range(1, len(LAYER_NAMES) + 1))
"""Classes 1..11, RNFL..Choroid: the classes the mean layer Dice averages."""
AV_CLASSES = ("artery", "vein")
"""Foreground classes 1 and 2 of the en-face artery/vein target."""


def label_map(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, *spatial) class indices or (B, C, *spatial) one-hot / scores -> (B, *spatial) long class indices."""
    x = torch.as_tensor(x)
    if x.ndim < 3:
        raise ValueError(f"expected (B, C, *spatial), got shape {tuple(x.shape)}")
    return (x.argmax(dim=1) if x.shape[1] > 1 else x[:, 0]).round().long()


def boundary_surfaces(labels: torch.Tensor, surfaces: Sequence[int], depth_axis: int = 1) -> torch.Tensor:
    """Depth of boundary surfaces in a layer map, per A-scan.

    Args:
        labels: (B, D, H, W) class indices (``label_map``).
        surfaces: surface indices s; surface s lies below the column's voxels with ``labels <= s``: its
            depth is their count. In a layered map (labels not decreasing with depth) that is the first depth
            index where ``labels >= s + 1``; unlike that first crossing, a stray voxel (e.g. dark vitreous
            labelled as sclera) moves the count by one voxel instead of moving the surface to the top.
        depth_axis: spatial axis of the depth (A-scan) direction, 1 for (D, H, W).

    Returns:
        (B, S, D, W) float depths in voxels. Where a column has no voxel with ``labels >= s + 1`` the
        surface is absent and its depth is H (one past the last voxel): an absent surface then costs
        H minus the other map's depth, and a surface absent from both maps costs nothing.
    """
    if labels.ndim != 4:
        raise ValueError(f"labels must be (B, D, H, W), got shape {tuple(labels.shape)}")
    lab = labels.movedim(depth_axis + 1, -1)  # (B, D, W, H)
    return torch.stack([(lab <= int(s)).sum(dim=-1).float() for s in surfaces], dim=1)


class SurfaceMADMetric(CumulativeIterationMetric):
    """Mean absolute distance, in voxels along depth, between predicted and true boundary surfaces
    (``boundary_surfaces``; absent surfaces as documented there), averaged over all A-scans (d, w).

    MONAI has surface-distance metrics for 3D objects (``SurfaceDistanceMetric``, Hausdorff) but none for
    layered boundaries measured per A-scan, the standard error of OCT layer segmentation.

    Inputs ``y_pred`` and ``y``: (B, C, D, H, W), one-hot / scores (C > 1) or class indices (C = 1).
    The buffer holds (B, S) distances per image and surface; ``aggregate`` reduces it with ``reduction``
    (default the mean over images and surfaces).

    Args:
        surfaces: surface indices, default OCTA-500's six (ILM, IPL, OPL, ISOS, RPE, BM).
        depth_axis: spatial axis of depth, 1 for (D, H, W) volumes.
        reduction: MONAI metric reduction of the (N, S) buffer.
    """

    def __init__(self, surfaces: Sequence[int] = tuple(OCTA500_SURFACES.values()), depth_axis: int = 1,
                 reduction: str = "mean"):
        super().__init__()
        self.surfaces, self.depth_axis, self.reduction = [int(s) for s in surfaces], int(depth_axis), reduction
        if not self.surfaces:
            raise ValueError("surfaces must name at least one surface index")

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            raise ValueError("SurfaceMADMetric needs the true labels y")
        pred, true = label_map(y_pred), label_map(y)
        if pred.shape != true.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(true.shape)} differ in shape")
        dist = (boundary_surfaces(pred, self.surfaces, self.depth_axis)
                - boundary_surfaces(true, self.surfaces, self.depth_axis)).abs()
        return dist.flatten(2).mean(dim=-1)

    def aggregate(self, reduction: str | None = None) -> torch.Tensor:
        f, _ = do_metric_reduction(self.get_buffer(), reduction or self.reduction)
        return f


class ClassSubsetDiceMetric(DiceMetric):
    """MONAI ``DiceMetric`` over every class (background included, so the buffer and the saved details
    are (N, C) with column = class index) whose aggregate averages ``classes`` only, e.g. the retinal
    layers 1..11 without the vitreous and the sclera (``RETINAL_LAYERS``). Same inputs as ``DiceMetric``
    (one-hot prediction and label)."""

    def __init__(self, classes: Sequence[int] = RETINAL_LAYERS, **kwargs):
        kwargs.update(include_background=True, reduction="none")
        super().__init__(**kwargs)
        self.classes = [int(c) for c in classes]
        if not self.classes:
            raise ValueError("classes must name at least one class")

    def aggregate(self, reduction: str | None = None) -> torch.Tensor:
        f, _ = do_metric_reduction(self.get_buffer()[:, self.classes], reduction or "mean")
        return f
