"""Loading fundus photographs for the fundus configs, with documented conversions and clear errors."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from ..data.prepare_fundus import read_rgb


class LoadFundusd(MapTransform):
    """Read the image files at ``keys`` as channel-first RGB ``MetaTensor`` (3, H, W), float32 in 0..255.

    MONAI's ``LoadImaged`` returns grayscale, RGB and RGBA files with different channel counts and
    (with PIL) transposed axes; this loader always gives (3, rows, columns). Conversions:
    grayscale is replicated to three channels, RGBA / palette images are composited on black.
    Images of other sizes are accepted (the chain resizes them); non-square images raise
    ``ValueError`` naming the file, because resizing would distort the round field of view
    (``scripts/prepare_data.py aptos`` crops and pads photographs to squares).
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            img = read_rgb(path)
            if img.shape[0] != img.shape[1]:
                raise ValueError(f"{path}: image is {img.shape[1]} x {img.shape[0]} pixels; fundus images must be square "
                                 f"(crop / pad it, e.g. with scripts/prepare_data.py aptos)")
            t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()
            d[key] = MetaTensor(t, meta={"filename_or_obj": path, "spatial_shape": img.shape[:2]})
        return d
