"""2D slice sets of OCT volumes for the domain feature extractor (Intra/Inter-slice Fréchet distances).

Each training volume contributes ``per_volume`` B-scans (intra-slice images, H x W) and as many
planes spanning the B-scan axis (inter-slice images, D x H, resized to H x W). The label of every
slice is [pathology category index, plane type (0 intra, 1 inter), relative slice position in
[0, 1], layer profile]: the network that predicts them must see pathology, the difference between
the two directions (seams, speckle along D), where in the macula a slice lies, and the shape of
the retina in it. The layer profile is the relative depth (0 top, 1 bottom) of three boundaries
(ILM, the top of the ONL, Bruch's membrane) averaged over ``PROFILE_BINS`` bins across the slice,
read from the phantom's layer label map (the foveal pit, the thinning inner retina, tilt and
curvature); volumes without a layer map get -1 there, which the loss ignores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .oct_phantom import CATEGORIES

PROFILE_BINS = 8
PROFILE_LAYERS = (1, 6, 11)  # first layer label at or below: ILM (RNFL), OPL-ONL (ONL), BM (choroid)
NUM_BINARY = 2 + len(PROFILE_LAYERS) * PROFILE_BINS  # plane, position, profile


def layer_profile(labels: torch.Tensor, depth_axis: int) -> torch.Tensor:
    """(len(PROFILE_LAYERS) * PROFILE_BINS,) relative depths of the profile boundaries in a 2D layer label slice."""
    lab = labels if depth_axis == 0 else labels.T  # (depth, across)
    h, w = lab.shape
    out = []
    for k in PROFILE_LAYERS:
        below = lab >= k
        depth = torch.where(below.any(0), below.float().argmax(0), torch.full((w,), h - 1)).float() / max(h - 1, 1)
        out.append(torch.stack([b.mean() for b in torch.tensor_split(depth, PROFILE_BINS)]))
    return torch.cat(out)


def volume_slices(volume: torch.Tensor, per_volume: int, rng: np.random.Generator,
                  layers: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(2 * per_volume, 1, H, W) slices of a (D, H, W) volume and their (plane, position, profile) labels.

    ``layers``: the (D, H, W) layer label map of the volume, or None (profile targets -1)."""
    d, h, w = volume.shape
    ii = np.sort(rng.choice(d, size=min(per_volume, d), replace=False))
    jj = np.sort(rng.choice(w, size=min(per_volume, w), replace=False))
    intra = volume[ii][:, None]
    inter = volume.permute(2, 0, 1)[jj][:, None]
    if inter.shape[-2:] != (h, w):
        inter = F.interpolate(inter, size=(h, w), mode="bilinear", align_corners=False)
    n_prof = NUM_BINARY - 2
    if layers is None:
        prof_intra = prof_inter = [torch.full((n_prof,), -1.0)] * len(ii)
    else:
        prof_intra = [layer_profile(layers[i], 0) for i in ii]
        prof_inter = [layer_profile(layers[:, :, j], 1) for j in jj]  # (D, H): depth is axis 1
    labels = [torch.cat([torch.tensor([0.0, i / max(d - 1, 1)]), p]) for i, p in zip(ii, prof_intra)]
    labels += [torch.cat([torch.tensor([1.0, j / max(w - 1, 1)]), p]) for j, p in zip(jj, prof_inter)]
    return torch.cat([intra, inter]), torch.stack(labels).float()


def _layer_map(item: dict, shape) -> torch.Tensor | None:
    """The item's layer label map (``label`` key, a NIfTI path) at the image's (D, H, W) size, or None."""
    path = item.get("label")
    if not path:
        return None
    from ..io import load_nifti

    arr, _ = load_nifti(path)
    lab = torch.from_numpy(np.asarray(arr, np.int64).squeeze())
    if lab.ndim != 3:
        raise ValueError(f"{path}: layer label map must be 3D (D, H, W), got shape {tuple(lab.shape)}")
    if tuple(lab.shape) != tuple(shape):
        lab = F.interpolate(lab[None, None].float(), size=tuple(shape), mode="nearest")[0, 0].long()
    return lab


def slice_training_set(items: Sequence[dict], load: Callable[[dict], dict], per_volume: int = 32, seed: int = 0,
                       image_key: str = "image") -> list[dict]:
    """Items {"image": (1, H, W), "label": [category, plane, position, profile...]} from datalist ``items``
    (each with a ``category`` and, optionally, a layer map ``label``), loaded with ``load`` (a
    transform giving (1, D, H, W) in [-1, 1]; no spatial augmentation, the labels must stay aligned)."""
    rng = np.random.default_rng(int(seed))
    out = []
    for item in items:
        cat = item.get("category")
        if cat not in CATEGORIES:
            raise ValueError(f"{item.get(image_key)}: category {cat!r} is not one of {CATEGORIES}")
        vol = load(dict(item))[image_key]
        vol = (vol.as_tensor() if hasattr(vol, "as_tensor") else torch.as_tensor(vol)).float()[0]
        slices, labels = volume_slices(vol, per_volume, rng, _layer_map(item, vol.shape))
        c = float(CATEGORIES.index(cat))
        out += [{"image": s, "label": torch.cat([torch.tensor([c]), lab])} for s, lab in zip(slices, labels)]
    return out
