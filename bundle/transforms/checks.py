"""Input validation that names the offending file, for the start of every OCT transform chain."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform


class CheckVolumed(MapTransform):
    """Check that loaded volumes are channel-first 3D, finite, and (optionally) of a size the
    networks can take; raise ``ValueError`` naming the source file otherwise.

    MONAI's loaders accept any array, so a truncated 2D file or a NaN-filled scan would only fail
    deep inside a network. Input: dict with ``keys`` holding (C, D, H, W) arrays / tensors.

    Args:
        keys: keys to check.
        channels: required channel count (None: any).
        multiple_of: each spatial size must be a multiple of this (1: no constraint).
    """

    def __init__(self, keys: KeysCollection, channels: int | None = 1, multiple_of: int = 1,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if multiple_of < 1:
            raise ValueError(f"multiple_of must be >= 1, got {multiple_of}")
        self.channels = channels
        self.multiple_of = multiple_of

    @staticmethod
    def _source(data: Mapping, key: Hashable) -> str:
        value = data[key]
        meta = getattr(value, "meta", None) or data.get(f"{key}_meta_dict", {})
        return str(meta.get("filename_or_obj", key)) if isinstance(meta, Mapping) else str(key)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            shape: Sequence[int] = tuple(x.shape)
            src = self._source(d, key)
            if len(shape) != 4:
                raise ValueError(f"{src}: expected a channel-first 3D volume (C, D, H, W), got shape {shape}")
            if self.channels is not None and shape[0] != self.channels:
                raise ValueError(f"{src}: expected {self.channels} channel(s), got {shape[0]} (shape {shape})")
            if any(s % self.multiple_of for s in shape[1:]):
                raise ValueError(f"{src}: spatial size {shape[1:]} is not a multiple of {self.multiple_of}")
            finite = torch.isfinite(x).all() if isinstance(x, torch.Tensor) else np.isfinite(np.asarray(x)).all()
            if not bool(finite):
                raise ValueError(f"{src}: volume contains NaN or infinite values")
        return d
