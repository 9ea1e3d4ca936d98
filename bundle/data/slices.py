"""2D slice sets of OCT volumes for the domain feature extractor (Intra/Inter-slice Fréchet distances).

Each training volume contributes ``per_volume`` B-scans (intra-slice images, H x W) and as many
planes spanning the B-scan axis (inter-slice images, D x H, resized to H x W). The label of every
slice is [pathology category index, plane type (0 intra, 1 inter), relative slice position in
[0, 1]]: the network that predicts them must see pathology, the difference between the two
directions (seams, speckle along D) and where in the macula a slice lies (foveal pit, vessels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .oct_phantom import CATEGORIES


def volume_slices(volume: torch.Tensor, per_volume: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(2 * per_volume, 1, H, W) slices of a (D, H, W) volume and their (plane, position) labels."""
    d, h, w = volume.shape
    ii = np.sort(rng.choice(d, size=min(per_volume, d), replace=False))
    jj = np.sort(rng.choice(w, size=min(per_volume, w), replace=False))
    intra = volume[ii][:, None]
    inter = volume.permute(2, 0, 1)[jj][:, None]
    if inter.shape[-2:] != (h, w):
        inter = F.interpolate(inter, size=(h, w), mode="bilinear", align_corners=False)
    labels = [[0.0, i / max(d - 1, 1)] for i in ii] + [[1.0, j / max(w - 1, 1)] for j in jj]
    return torch.cat([intra, inter]), torch.tensor(labels, dtype=torch.float32)


def slice_training_set(items: Sequence[dict], load: Callable[[dict], dict], per_volume: int = 32, seed: int = 0,
                       image_key: str = "image") -> list[dict]:
    """Items {"image": (1, H, W), "label": [category, plane, position]} from datalist ``items``
    (each with a ``category``), loaded with ``load`` (a transform giving (1, D, H, W) in [-1, 1])."""
    rng = np.random.default_rng(int(seed))
    out = []
    for item in items:
        cat = item.get("category")
        if cat not in CATEGORIES:
            raise ValueError(f"{item.get(image_key)}: category {cat!r} is not one of {CATEGORIES}")
        vol = load(dict(item))[image_key]
        vol = (vol.as_tensor() if hasattr(vol, "as_tensor") else torch.as_tensor(vol)).float()[0]
        slices, labels = volume_slices(vol, per_volume, rng)
        c = float(CATEGORIES.index(cat))
        out += [{"image": s, "label": torch.cat([torch.tensor([c]), lab])} for s, lab in zip(slices, labels)]
    return out
