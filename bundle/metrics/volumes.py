"""Slice-wise quality metrics of OCT volumes (CA-LDM Table 1): intra / inter-slice image sets, total
variation per axis and the kernel distance (KID) between feature sets.

Volumes are (D, H, W) = (B-scan, depth, lateral). *Intra-slice* images are the B-scans x[i]
(H x W); *inter-slice* images are the planes that span the B-scan axis, x[:, :, j] (D x H), one per
lateral position: a model that decodes B-scans independently shows its seams there.
"""

from __future__ import annotations

import numpy as np
import torch


def _as_volume(volume) -> torch.Tensor:
    v = torch.as_tensor(np.asarray(volume) if not isinstance(volume, torch.Tensor) else volume).float()
    while v.ndim > 3 and v.shape[0] == 1:
        v = v[0]
    if v.ndim != 3:
        raise ValueError(f"expected a (D, H, W) volume, got shape {tuple(v.shape)}")
    return v


def intra_slices(volume) -> torch.Tensor:
    """B-scans of a (D, H, W) volume as (D, 1, H, W)."""
    return _as_volume(volume)[:, None]


def inter_slices(volume) -> torch.Tensor:
    """Planes spanning the B-scan axis of a (D, H, W) volume as (W, 1, D, H)."""
    return _as_volume(volume).permute(2, 0, 1)[:, None]


def total_variation(volume) -> dict:
    """Mean absolute difference of neighbouring voxels along each axis (D, H, W) and their sum.

    Per-voxel means, so volumes of different sizes compare; on [0, 1] intensities. A constant
    volume has 0; blur lowers it, speckle raises it, so compare with the real volumes' value."""
    v = _as_volume(volume)
    per_axis = {name: float(v.diff(dim=i).abs().mean()) if v.shape[i] > 1 else 0.0 for i, name in enumerate("DHW")}
    return dict(per_axis, total=sum(per_axis.values()))


def kernel_distance(features_a: torch.Tensor, features_b: torch.Tensor, subsets: int = 50, subset_size: int = 100,
                    seed: int = 0) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, mean and std
    over ``subsets`` random subsets of ``subset_size`` (capped at the smaller set size)."""
    a, b = features_a.double(), features_b.double()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, F) with the same F, got {tuple(a.shape)} and {tuple(b.shape)}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least 2 samples per set")
    d = a.shape[1]
    gen = torch.Generator().manual_seed(int(seed))
    vals = []
    for _ in range(int(subsets)):
        x = a[torch.randperm(len(a), generator=gen)[:m]]
        y = b[torch.randperm(len(b), generator=gen)[:m]]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        off = 1 - torch.eye(m, dtype=a.dtype)
        vals.append(float((kxx * off).sum() / (m * (m - 1)) + (kyy * off).sum() / (m * (m - 1)) - 2 * kxy.mean()))
    return float(np.mean(vals)), float(np.std(vals))


def vessel_shadow_correlation(volume, artery, vein, sigma: float = 4.0) -> float:
    """How visibly a volume's en-face view shows a given vessel tree: the Pearson correlation between the
    darkening of the en-face mean projection (mean over depth; vessels shadow every layer below them) and the
    union of the artery / vein (D, W) masks, both high-passed (minus a Gaussian blur of ``sigma`` voxels) so
    that slow brightness changes do not count. 0: no trace of the tree; the phantoms themselves reach
    about 0.3 at 128^3 (the vessel walls above the shadow brighten the same columns)."""
    from scipy.ndimage import gaussian_filter

    enface = _as_volume(volume).mean(dim=1).numpy().astype(np.float64)
    mask = np.asarray(artery, dtype=np.float64).squeeze() + np.asarray(vein, dtype=np.float64).squeeze()
    if mask.shape != enface.shape:
        raise ValueError(f"vessel masks of shape {mask.shape} do not match the en-face view {enface.shape} (D, W)")
    a = -(enface - gaussian_filter(enface, sigma))
    b = mask - gaussian_filter(mask, sigma)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
