"""Transforms of the segmentation workflow (``configs/segmentation/``) that MONAI does not have.

Volumes are (C, D, H, W) = (channel, B-scan, depth, lateral); the en-face maps of the artery/vein
task are (C, D, W), the volume seen from above.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelWriter
from monai.transforms import MapTransform, Resize

from ..io import atomic_path

ARTERY, VEIN = 1, 2
"""Classes of the en-face artery/vein target; 0 is background."""


class EnFaceProjectiond(MapTransform):
    """Mean of each (C, D, H, W) image over the depth axis H: the (C, D, W) en-face projection.

    The affine keeps the D and W columns (now spatial axes 0 and 1) and moves the depth axis last, so
    a saved projection lies on the same grid as the (D, W) artery / vein masks.
    """

    def __init__(self, keys: KeysCollection, depth_axis: int = 1, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if depth_axis not in (0, 1, 2):
            raise ValueError(f"depth_axis is a spatial axis of a (C, D, H, W) volume: 0, 1 or 2, got {depth_axis}")
        self.depth_axis = depth_axis

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.ndim != 4:
                raise ValueError(f"{key}: expected a (C, D, H, W) volume, got shape {tuple(img.shape)}")
            proj = torch.as_tensor(img).float().mean(dim=self.depth_axis + 1)
            if isinstance(img, MetaTensor):
                order = [a for a in range(3) if a != self.depth_axis] + [self.depth_axis, 3]
                affine = torch.as_tensor(img.affine)[order][:, order]
                proj = MetaTensor(proj.as_tensor() if isinstance(proj, MetaTensor) else proj, affine=affine,
                                  meta={k: v for k, v in img.meta.items() if k not in ("affine", "spatial_shape")})
            d[key] = proj
        return d


class ArteryVeinTargetd(MapTransform):
    """Build the en-face target from two (C, D, W) masks: 0 background, 1 artery, 2 vein (``ARTERY``, ``VEIN``).

    Where both masks are set (a crossing drawn in both), the pixel is artery. The result goes to
    ``label_key`` with the artery mask's type and metadata; the masks themselves are left in place.
    """

    def __init__(self, artery_key: str = "artery", vein_key: str = "vein", label_key: str = "label"):
        super().__init__([artery_key, vein_key])
        self.artery_key, self.vein_key, self.label_key = artery_key, vein_key, label_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        artery, vein = d[self.artery_key], d[self.vein_key]
        if artery.shape != vein.shape:
            raise ValueError(f"artery mask {tuple(artery.shape)} and vein mask {tuple(vein.shape)} differ in shape")
        target = torch.zeros_like(torch.as_tensor(artery), dtype=torch.float32)
        target[torch.as_tensor(vein) > 0] = VEIN
        target[torch.as_tensor(artery) > 0] = ARTERY
        d[self.label_key] = MetaTensor(target, meta=artery.meta) if isinstance(artery, MetaTensor) else target
        return d


class LowResolutiond(MapTransform):
    """Fixed loss of resolution (the paper's "Real-128" rows in miniature): every spatial axis is
    downsampled by ``factor`` with area averaging (a box filter, so without aliasing) and resized back
    linearly to its original size. Put it on images only; labels keep full resolution.

    MONAI's ``RandSimulateLowResolutiond`` is random and downsamples by nearest neighbour (aliased);
    this one is deterministic and anti-aliased.
    """

    def __init__(self, keys: KeysCollection, factor: int = 2, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if int(factor) != factor or factor < 2:
            raise ValueError(f"factor must be an integer >= 2, got {factor}")
        self.factor = int(factor)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            size = list(img.shape[1:])
            if not 1 <= len(size) <= 3:
                raise ValueError(f"{key}: expected (C, spatial...) with 1 to 3 spatial axes, got {tuple(img.shape)}")
            small = [max(1, int(np.ceil(s / self.factor))) for s in size]
            up = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
            out = Resize(small, mode="area")(img)
            d[key] = Resize(size, mode=up, align_corners=False)(out).to(torch.as_tensor(img).dtype)
        return d


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing to a temporary file renamed into place (``bundle.io.atomic_path``), so
    ``SaveImaged(writer=...)`` never leaves a half-written prediction that looks complete."""

    def write(self, filename, verbose: bool = False, **obj_kwargs):
        with atomic_path(filename) as tmp:
            super().write(str(tmp), verbose=verbose, **obj_kwargs)
