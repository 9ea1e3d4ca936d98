"""Training data of label-guided CA-LDM: the latents of ``latents.py`` plus each volume's label fractions.

For each training volume (and its flips along D and W, applied to the labels alike) the file stores what
``precompute_latents`` stores and ``labels3d`` (N, 15, D/8, H/8, W/8), Diff_3D's condition, and, unless
``volume_only``, ``labels2d`` (N, D, 15, H/8, W/8), the refiner's per-B-scan condition (float16: fractions
of 8-voxel cells need no more).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch

from ..io import as_bool, load_nifti
from .labels import LABEL_KEYS, check_label_set, label_fractions, slice_label_fractions
from .latents import (encode_latents, load_latent_files, load_latents, neighbour_condition, prepare_encoder,
                      save_latents)

FLIPS = [(), (0,), (2,), (0, 2)]
"""Flips of a (D, H, W) volume: none, along D, along W, both (the 2D en-face masks flip along 0 and 1)."""


def _load_labels(item: dict, size: Sequence[int]) -> dict[str, torch.Tensor]:
    missing = [k for k in LABEL_KEYS if k not in item]
    if missing:
        raise ValueError(f"datalist item {item.get('image', item)} has no {missing} file(s): label-guided training "
                         "needs the layer map and the artery / vein masks "
                         "(scripts/prepare_data.py phantoms writes them)")
    arrays = {k: torch.from_numpy(load_nifti(item[k])[0].astype("int64")) for k in LABEL_KEYS}
    check_label_set(arrays["label"], arrays["artery"], arrays["vein"], size, names=item)
    return arrays


@torch.no_grad()
def precompute_label_latents(network, datalist: Sequence[dict], transform: Callable, path: str | os.PathLike,
                             flips: bool = True, image_key: str = "image", volume_only: bool = False) -> dict:
    """Encode every volume of ``datalist`` with the NHAE and store latents plus label fractions in ``path``."""
    from tqdm import tqdm

    flips, volume_only = as_bool(flips, "use_flips"), as_bool(volume_only, "volume_only")
    device = prepare_encoder(network, datalist)
    keys = ["z", "labels3d"] + ([] if volume_only else ["cond", "target", "labels2d"])
    out: dict[str, list] = {k: [] for k in keys}
    for item in tqdm(datalist, desc="label latents", unit="vol", disable=os.environ.get("RETINA_NO_PROGRESS") == "1"):
        x = transform(dict(item))[image_key]
        x = (x.as_tensor() if hasattr(x, "as_tensor") else x).to(device)  # (1, D, H, W)
        labels = _load_labels(item, x.shape[1:])
        for dims in FLIPS if flips else FLIPS[:1]:
            xv = torch.flip(x, [d + 1 for d in dims])[None] if dims else x[None]
            lab = torch.flip(labels["label"], dims) if dims else labels["label"]
            masks = [torch.flip(labels[k], [d // 2 for d in dims]) if dims else labels[k] for k in ("artery", "vein")]
            for k, v in encode_latents(network, xv, volume_only).items():
                out[k].append(v)
            out["labels3d"].append(label_fractions(lab, *masks)[None].half())
            if not volume_only:
                out["labels2d"].append(slice_label_fractions(lab, *masks)[None].half())
    return save_latents(out, network, path)


def _with_labels(path) -> dict:
    lat = load_latents(path)
    if "labels3d" not in lat:
        raise ValueError(f"latent file {path} holds no label fractions; make it with "
                         "configs/stages/conditional_latents.json (label-guided training data)")
    return lat


def conditional_volume_items(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[dict]:
    """Conditional Diff_3D items: [{"image": z (c, D', H', W'), "cond": label fractions (15, D', H', W')}, ...]."""
    return [{"image": z, "cond": c.float()} for lat in load_latent_files(paths, _with_labels)
            for z, c in zip(lat["z"], lat["labels3d"])]


def conditional_slice_items(path: str | os.PathLike, neighbours: int = 0) -> list[dict]:
    """Conditional refiner items, one per B-scan: {"image": z_hr,i, "cond": [f_sr(z)_{i-n..i+n}, fractions_i]}."""
    lat = _with_labels(path)
    if "labels2d" not in lat:
        raise ValueError(f"latent file {path} was made with volume_only: it has no B-scan latents for the refiner")
    items = []
    for v in range(lat["cond"].shape[0]):
        c = neighbour_condition(lat["cond"][v], neighbours)
        lab = lat["labels2d"][v].float()
        items += [{"image": lat["target"][v, :, i], "cond": torch.cat([c[i], lab[i]])} for i in range(c.shape[0])]
    return items
