"""Set-level evaluation of synthetic images against real ones (``scripts/evaluate.py fundus|oct``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import ScaleIntensityRange

from .data.datalist import load_checked_datalist
from .data.prepare_fundus import read_rgb
from .metrics.generative import batched_features, frechet_distance, mean_pairwise_distance, swd
from .metrics.reconstruction import slice_jitter
from .metrics.volumes import inter_slices, intra_slices, kernel_distance, total_variation


OCT_FEATURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "evaluation",
                            "oct_features.pt")
"""The shipped OCT domain feature net, the default features of ``evaluate_oct_sets`` (``scripts/evaluate.py oct``)."""


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
        t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()[None]
        t = _plain(ScaleIntensityRange(a_min=0.0, a_max=255.0, b_min=-1.0, b_max=1.0)(t))
        if t.shape[-1] != size:
            t = F.interpolate(t, size=(size, size), mode="area" if t.shape[-1] > size else "bilinear",
                              align_corners=None)
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

    return volume_from_array(load_nifti(path)[0], path, intensity_max)


def volume_from_array(arr, path: str, intensity_max: float = 255.0) -> torch.Tensor:
    """``load_volume`` for an array already read from ``path`` (named in errors)."""
    arr = np.squeeze(np.asarray(arr, np.float32))
    if arr.ndim != 3:
        raise ValueError(f"{path}: expected a 3D (D, H, W) volume, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: volume contains non-finite values")
    scale = ScaleIntensityRange(a_min=0.0, a_max=float(intensity_max), b_min=-1.0, b_max=1.0, clip=True)
    return _plain(scale(torch.from_numpy(arr)))


def _plain(t) -> torch.Tensor:
    """A MONAI transform's output as a plain tensor (no MetaTensor meta data)."""
    return t.as_tensor() if hasattr(t, "as_tensor") else torch.as_tensor(t)


def _slice_set(volumes: list[torch.Tensor], per_volume: int, inter: bool, size: tuple[int, int],
               seed: int) -> torch.Tensor:
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


def evaluate_oct_sets(real, fakes, real_split: str = "test", fake_split: str = "test", features: str = "domain",
                      feature_weights: str | None = None, inception_weights: str | None = None, per_volume: int = 32,
                      max_volumes: int = 100, seed: int = 0) -> list[dict]:
    """``evaluate_oct`` of each fake set against ``real``; every set is a datalist JSON (its split) or a
    folder of NIfTI volumes. The feature net and the real volumes are loaded once for all fake sets."""
    from .networks import oct_feature_extractor

    weights = feature_weights or OCT_FEATURES
    net = oct_feature_extractor(features, weights, inception_weights)
    r = [load_volume(v) for v in list_volumes(real, real_split)[: int(max_volumes)]]
    results = []
    for fake in fakes:
        f = [load_volume(v) for v in list_volumes(fake, fake_split)[: int(max_volumes)]]
        torch.manual_seed(seed)
        res = evaluate_oct(r, f, net, int(per_volume), features=features, seed=seed)
        res.update(real=str(real), fake=str(fake),
                   feature_weights=str(weights) if features == "domain" else str(inception_weights))
        results.append(res)
    return results


def oct_markdown(results: list[dict], names: list[str] | None = None) -> str:
    """A Markdown table of ``evaluate_oct`` results (one row per result, plus the first real set's own TV and \
jitter)."""
    names = names or [str(r["fake"]) for r in results]
    tv = lambda v: f"{v[0]:.4f} +- {v[1]:.4f}"  # noqa: E731
    lines = [f"features: {results[0]['features']}; {results[0]['slices_per_volume']} slices per volume and direction",
             ("| set | n | Intra-FD | Inter-FD | Intra-KID | Inter-KID | Intra-SWD x1e3 | Inter-SWD x1e3 "
              "| TV (D+H+W) | TV D | jitter |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in zip(names, results):
        lines.append(f"| {name} | {r['n_fake']} | {r['intra_fd']:.3f} | {r['inter_fd']:.3f} | {r['intra_kid']:.4f} | "
                     f"{r['inter_kid']:.4f} | {r['intra_swd']:.2f} | {r['inter_swd']:.2f} | {tv(r['tv_total_fake'])} | "
                     f"{tv(r['tv_D_fake'])} | {r['jitter_fake']:.4f} |")
    r = results[0]
    lines.append(f"| real ({r['real']}) | {r['n_real']} | - | - | - | - | - | - | {tv(r['tv_total_real'])} | "
                 f"{tv(r['tv_D_real'])} | {r['jitter_real']:.4f} |")
    return "\n".join(lines)


def run_oct_evaluation(real, fakes, output_file: str | os.PathLike | None = None, names=None, **kwargs) -> list[dict]:
    """Evaluate one or several fake sets against ``real``; print the Markdown table and, when
    ``output_file`` is given, write ``output_file`` (JSON) and the table beside it (``.md``), atomically."""
    from .io import atomic_path, save_json

    fakes = [fakes] if isinstance(fakes, (str, os.PathLike)) else list(fakes)
    if not fakes:
        raise ValueError("no fake set to evaluate")
    results = evaluate_oct_sets(real, fakes, **kwargs)
    table = oct_markdown(results, names)
    print(table)
    if output_file:
        save_json(results, output_file)
        with atomic_path(os.path.splitext(str(output_file))[0] + ".md") as tmp:
            Path(tmp).write_text(table + "\n")
    return results


def vessel_visibility(datalist: str | os.PathLike, split: str = "training", max_volumes: int = 1000) -> dict:
    """How visibly the volumes of a datalist show their own vessel trees: ``vessel_shadow_correlation`` of each
    item's image with its ``artery`` / ``vein`` masks (mean, sample std, values), and, as the chance level, with
    the masks of the item half the list away (a different tree, also when consecutive pairs share a label set).
    Works on the Decathlon folders of label-guided synthesis and on the phantoms' datalist alike."""
    from .io import load_nifti
    from .metrics.volumes import vessel_shadow_correlation

    items = load_checked_datalist(datalist, split, keys=("image", "artery", "vein"))[: int(max_volumes)]
    if len(items) < 2:
        raise ValueError(f"{datalist} ('{split}') needs at least two items with image, artery and vein")
    vols = [load_nifti(it["image"])[0] for it in items]
    masks = [(load_nifti(it["artery"])[0], load_nifti(it["vein"])[0]) for it in items]
    own = [vessel_shadow_correlation(v, *m) for v, m in zip(vols, masks)]
    shift = len(items) // 2  # half the list away: never the same label set when pairs share one (samples_per_label 2)
    other = [vessel_shadow_correlation(v, *masks[(i + shift) % len(items)]) for i, v in enumerate(vols)]

    def stats(x):
        return {"mean": float(np.mean(x)), "std": float(np.std(x, ddof=1)), "values": [round(float(v), 4) for v in x]}

    return {"datalist": str(datalist), "split": split, "volumes": len(items), "own_masks": stats(own),
            "other_masks": stats(other)}
