"""DR-GAN measurements (``scripts/drgan_experiments.py``): grade control, per-grade FD / SWD, mask
fidelity and the grading-augmentation statistics (accuracy, quadratic weighted kappa, per-grade TPR)."""

from __future__ import annotations

import os

import numpy as np
import torch

from .data.datalist import load_checked_datalist
from .evaluation import load_images
from .metrics.generative import batched_features, frechet_distance, swd
from .networks.drgan import MASK_CHANNELS, NUM_GRADES
from .transforms.drgan import REQUIRED, read_mask_map

SEGMENTED = MASK_CHANNELS[:-1]
"""Channels the fidelity segmenter predicts (every mask channel but the FOV)."""


def load_pairs(datalist: str | os.PathLike, split: str = "test", size: int | None = None,
               max_items: int | None = None) -> tuple[list[str], torch.Tensor, list[int]]:
    """Image files, mask maps (N, 9, S, S) and grades of a datalist's ``split`` (phantoms or DR-GAN output)."""
    items = load_checked_datalist(datalist, split, keys=("image",) + REQUIRED)[:max_items]
    files, maps, grades = [], [], []
    for it in items:
        fov = str(it["fov"])
        m = torch.from_numpy(read_mask_map(fov[: -len("_fov.png")]))
        if size is not None and m.shape[-1] != size:
            m = torch.nn.functional.interpolate(m[None], size=(size, size), mode="nearest")[0]
        files.append(str(it["image"]))
        maps.append(m)
        grades.append(int(it["grade"]))
    return files, torch.stack(maps), grades


@torch.no_grad()
def predict_grades(grader: torch.nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    grader.eval()
    device = next(grader.parameters()).device
    return torch.cat([grader(images[i : i + batch_size].to(device)).argmax(1).cpu()
                      for i in range(0, len(images), batch_size)])


def confusion_matrix(true, pred, n: int = NUM_GRADES) -> np.ndarray:
    m = np.zeros((n, n), np.int64)
    for t, p in zip(np.asarray(true).ravel(), np.asarray(pred).ravel()):
        m[int(t), int(p)] += 1
    return m


def grading_scores(true, pred, n: int = NUM_GRADES) -> dict:
    """Accuracy, quadratic weighted kappa and per-grade true-positive rate (recall)."""
    m = confusion_matrix(true, pred, n).astype(np.float64)
    total = m.sum()
    w = np.array([[(i - j) ** 2 for j in range(n)] for i in range(n)], np.float64) / (n - 1) ** 2
    expected = np.outer(m.sum(1), m.sum(0)) / max(total, 1)
    denom = (w * expected).sum()
    kappa = 1.0 - (w * m).sum() / denom if denom > 0 else 0.0
    rows = m.sum(1)
    tpr = [float(m[i, i] / rows[i]) if rows[i] else float("nan") for i in range(n)]
    return {"accuracy": float(np.trace(m) / max(total, 1)), "kappa": float(kappa), "tpr": tpr,
            "confusion": m.astype(int).tolist()}


@torch.no_grad()
def quality_by_grade(real: torch.Tensor, real_grades, fake: torch.Tensor, fake_grades, feature_net: torch.nn.Module,
                     seed: int = 0) -> dict:
    """FD on domain features and SWD (x1e3) per grade and over all images; grades with fewer than 2
    images on either side are skipped. ``fake_grades`` None (an unconditional model): every fake image
    is compared with each grade's real images."""
    feature_net.eval()
    rg = torch.as_tensor(real_grades)
    fg = torch.full((len(fake),), -1) if fake_grades is None else torch.as_tensor(fake_grades)
    fr, ff = batched_features(feature_net, real), batched_features(feature_net, fake)
    out = {}
    for g in list(range(NUM_GRADES)) + ["all"]:
        ri = torch.ones_like(rg, dtype=torch.bool) if g == "all" else rg == g
        fi = torch.ones_like(fg, dtype=torch.bool) if g == "all" or fake_grades is None else fg == g
        if ri.sum() < 2 or fi.sum() < 2:
            continue
        out[str(g)] = {"n_real": int(ri.sum()), "n_fake": int(fi.sum()), "fd": frechet_distance(ff[fi], fr[ri]),
                       "swd": swd(real[ri], fake[fi], seed=seed)["mean"]}
    return out


@torch.no_grad()
def mask_dice(seg_net: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 16) -> dict:
    """Dice per channel between the segmenter's thresholded output on ``images`` and ``masks``, pooled
    over all images (2 sum|A and B| / (sum|A| + sum|B|); NaN where both are empty)."""
    seg_net.eval()
    device = next(seg_net.parameters()).device
    inter = torch.zeros(len(SEGMENTED), dtype=torch.float64)
    total = torch.zeros(len(SEGMENTED), dtype=torch.float64)
    for i in range(0, len(images), batch_size):
        pred = (seg_net(images[i : i + batch_size].to(device)) > 0).cpu()
        tgt = masks[i : i + batch_size, : len(SEGMENTED)] > 0.5
        inter += (pred & tgt).sum(dim=(0, 2, 3)).double()
        total += (pred.sum(dim=(0, 2, 3)) + tgt.sum(dim=(0, 2, 3))).double()
    return {c: (float(2 * inter[k] / total[k]) if total[k] > 0 else float("nan")) for k, c in enumerate(SEGMENTED)}


def load_set(datalist, split: str, size: int, max_items: int | None = None):
    """(images (N, 3, size, size) in [-1, 1], mask maps at ``size``, grades) of a datalist split."""
    files, maps, grades = load_pairs(datalist, split, size, max_items)
    return load_images(files, size), maps, grades
