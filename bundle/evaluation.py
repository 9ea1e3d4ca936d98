"""Set-level evaluation of synthetic fundus images against real ones (``scripts/evaluate.py fundus``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data.datalist import load_checked_datalist
from .data.prepare_fundus import read_rgb
from .metrics.generative import frechet_distance, mean_pairwise_distance, swd


def list_images(path: str | os.PathLike, split: str = "test") -> list[str]:
    """Image files of a set: a datalist JSON (its ``split`` list) or a folder of PNGs (grids excluded)."""
    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        return [i["image"] for i in load_checked_datalist(p, split)]
    if p.is_dir():
        files = sorted(str(f) for f in p.glob("*.png") if not f.name.endswith("_grid.png"))
        if not files:
            raise ValueError(f"{p} holds no PNG images")
        return files
    raise ValueError(f"{p} is neither a datalist JSON nor a folder of PNG images")


def load_images(files: list[str], size: int) -> torch.Tensor:
    """(N, 3, size, size) float tensor in [-1, 1]; square images of other sizes are resized (area)."""
    out = []
    for f in files:
        img = read_rgb(f)
        if img.shape[0] != img.shape[1]:
            raise ValueError(f"{f}: image is not square ({img.shape[1]} x {img.shape[0]})")
        t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()[None] / 127.5 - 1.0
        if t.shape[-1] != size:
            t = F.interpolate(t, size=(size, size), mode="area" if t.shape[-1] > size else "bilinear", align_corners=None)
        out.append(t[0])
    return torch.stack(out)


@torch.no_grad()
def evaluate_fundus(real: torch.Tensor, fake: torch.Tensor, feature_net: torch.nn.Module, batch_size: int = 64) -> dict:
    """Fréchet distance on the bundle's domain features, SWD (x1e3, per level and mean) and diversity."""
    feature_net.eval()
    feats = lambda x: torch.cat([feature_net.features(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])  # noqa: E731
    s = swd(real, fake)
    return {"n_real": len(real), "n_fake": len(fake), "fd_domain": frechet_distance(feats(fake), feats(real)),
            "swd": s["mean"], "swd_levels": s["levels"], "diversity": mean_pairwise_distance(fake),
            "diversity_real": mean_pairwise_distance(real),
            "features": "bundle FundusFeatureNet (domain features, not Inception)"}
