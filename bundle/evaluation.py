"""Set-level evaluation of synthetic images against real ones (``scripts/evaluate.py fundus|oct``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data.datalist import load_checked_datalist
from .data.prepare_fundus import read_rgb
from .metrics.generative import batched_features, frechet_distance, mean_pairwise_distance, swd
from .metrics.reconstruction import slice_jitter
from .metrics.volumes import inter_slices, intra_slices, kernel_distance, total_variation


def _list_set(path: str | os.PathLike, split: str, wanted, what: str) -> list[str]:
    """Files of a set: a datalist JSON (its ``split`` list) or the files of a folder whose name passes ``wanted``."""
    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        return [i["image"] for i in load_checked_datalist(p, split)]
    if p.is_dir():
        files = sorted(str(f) for f in p.iterdir() if wanted(f.name))
        if not files:
            raise ValueError(f"{p} holds no {what}")
        return files
    raise ValueError(f"{p} is neither a datalist JSON nor a folder of {what}")


def list_images(path: str | os.PathLike, split: str = "test") -> list[str]:
    """Image files of a set: a datalist JSON (its ``split`` list) or a folder of PNGs (grids excluded)."""
    return _list_set(path, split, lambda n: n.endswith(".png") and not n.endswith("_grid.png"), "PNG images")


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
    feats = lambda x: batched_features(feature_net, x, batch_size)  # noqa: E731
    s = swd(real, fake)
    return {"n_real": len(real), "n_fake": len(fake), "fd_domain": frechet_distance(feats(fake), feats(real)),
            "swd": s["mean"], "swd_levels": s["levels"], "diversity": mean_pairwise_distance(fake),
            "diversity_real": mean_pairwise_distance(real),
            "features": "bundle FundusFeatureNet (domain features, not Inception)"}


def list_volumes(path: str | os.PathLike, split: str = "test") -> list[str]:
    """NIfTI volumes of a set: a datalist JSON (its ``split`` list) or a folder of ``*.nii.gz`` / ``*.nii``."""
    return _list_set(path, split, lambda n: n.endswith((".nii.gz", ".nii")), "NIfTI volumes")


def load_volume(path: str, intensity_max: float = 255.0) -> torch.Tensor:
    """(D, H, W) float tensor in [-1, 1] from a NIfTI file holding 0..``intensity_max``."""
    from .io import load_nifti

    arr, _ = load_nifti(path)
    arr = np.squeeze(np.asarray(arr, np.float32))
    if arr.ndim != 3:
        raise ValueError(f"{path}: expected a 3D (D, H, W) volume, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: volume contains non-finite values")
    return torch.from_numpy(arr / intensity_max * 2.0 - 1.0).clamp(-1, 1)


def _slice_set(volumes: list[torch.Tensor], per_volume: int, inter: bool, size: tuple[int, int], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for v in volumes:
        s = inter_slices(v) if inter else intra_slices(v)
        s = s[torch.randperm(len(s), generator=gen)[:per_volume]]
        if s.shape[-2:] != size:
            s = F.interpolate(s, size=size, mode="area" if s.shape[-1] >= size[1] else "bilinear")
        out.append(s)
    return torch.cat(out)


@torch.no_grad()
def evaluate_oct(real: list[torch.Tensor], fake: list[torch.Tensor], feature_net: torch.nn.Module, per_volume: int = 32,
                 features: str = "domain", seed: int = 0, batch_size: int = 64) -> dict:
    """Intra / Inter-slice Fréchet distance and KID (feature net), SWD (x1e3), total variation per
    axis (on [0, 1], mean +- std over volumes) and slice jitter, each with the real set's own value.

    ``per_volume`` random B-scans (intra) and as many planes spanning D (inter) per volume; inter
    planes are resized to the B-scan size (H x W) so one feature net serves both directions."""
    if not real or not fake:
        raise ValueError("both sets need at least one volume")
    feature_net.eval()
    size = tuple(real[0].shape[1:])
    feats = lambda x: batched_features(feature_net, x, batch_size)  # noqa: E731
    res: dict = {"n_real": len(real), "n_fake": len(fake), "slices_per_volume": per_volume, "features": features}
    for name, inter in (("intra", False), ("inter", True)):
        r, f = _slice_set(real, per_volume, inter, size, seed), _slice_set(fake, per_volume, inter, size, seed + 1)
        fr, ff = feats(r), feats(f)
        res[f"{name}_fd"] = frechet_distance(ff, fr)
        res[f"{name}_kid"] = kernel_distance(ff, fr)[0]
        res[f"{name}_swd"] = swd(r, f, seed=seed)["mean"]
    for tag, vols in (("real", real), ("fake", fake)):
        tvs = [total_variation((v + 1) / 2) for v in vols]
        for axis in ("D", "H", "W", "total"):
            vals = [t[axis] for t in tvs]
            res[f"tv_{axis}_{tag}"] = [float(np.mean(vals)), float(np.std(vals))]
        res[f"jitter_{tag}"] = float(np.mean([slice_jitter(v) for v in vols]))
    return res
