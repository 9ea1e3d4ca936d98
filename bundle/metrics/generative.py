"""Set-level quality metrics for generated images: Fréchet distance, sliced Wasserstein distance, diversity.

A Fréchet distance needs a feature network. Inception weights cannot be fetched at run time here,
so the default features come from :class:`bundle.networks.FundusFeatureNet`, trained in this
bundle on its own training data; results say which features were used and are never called "FID"
without that qualifier. MONAI's ``FIDMetric`` computes the distance between the feature sets.

Sliced Wasserstein distance (SWD), the convention of Karras et al. (progressive GAN) as used by
DR-GAN, implemented here:

- Laplacian pyramid with the 5 x 5 binomial kernel ([1, 4, 6, 4, 1] / 16, separable, reflect
  padding), levels from full resolution down to ``min_size`` (16); the coarsest level is the
  low-pass image itself;
- per level, ``patches_per_image`` (128) random 7 x 7 x C neighbourhoods per image;
- descriptors normalised per channel by the mean and std over the whole set, separately for the
  two sets;
- ``dir_repeats`` x ``dirs_per_repeat`` (4 x 128) random unit directions; project, sort, mean
  absolute difference between the sorted projections, averaged over directions;
- reported x 1e3 per level (finest first) and averaged over levels. Both sets must hold the same
  number of images (the larger one is subsampled, seeded).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import FIDMetric

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = _BINOMIAL.to(x)
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).repeat(c, 1, 1, 1), groups=c)


def laplacian_pyramid(images: torch.Tensor, min_size: int = 16) -> list[torch.Tensor]:
    """(N, C, H, W) -> band-pass levels from full resolution down to ``min_size`` (the last is low-pass)."""
    levels, x = [], images.float()
    while x.shape[-1] > min_size and x.shape[-2] > min_size:
        down = _blur(x)[..., ::2, ::2]
        up = F.interpolate(down, size=x.shape[-2:], mode="bilinear", align_corners=False)
        levels.append(x - _blur(up))
        x = down
    levels.append(x)
    return levels


def _descriptors(level: torch.Tensor, per_image: int, size: int, gen: torch.Generator) -> torch.Tensor:
    n, c, h, w = level.shape
    if h < size or w < size:
        raise ValueError(f"pyramid level {h} x {w} is smaller than the {size} x {size} neighbourhood")
    ys = torch.randint(0, h - size + 1, (n, per_image), generator=gen)
    xs = torch.randint(0, w - size + 1, (n, per_image), generator=gen)
    off = torch.arange(size)
    rows = (ys[..., None] + off)[..., :, None].expand(n, per_image, size, size)
    cols = (xs[..., None] + off)[..., None, :].expand(n, per_image, size, size)
    idx_n = torch.arange(n)[:, None, None, None].expand_as(rows)
    patches = level.permute(0, 2, 3, 1)[idx_n, rows, cols]  # (n, per_image, size, size, c)
    return patches.permute(0, 1, 4, 2, 3).reshape(n * per_image, c, size, size)


def _normalise(desc: torch.Tensor) -> torch.Tensor:
    mean = desc.mean(dim=(0, 2, 3), keepdim=True)
    std = desc.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return ((desc - mean) / std).flatten(1)


def sliced_wasserstein_distance(a: torch.Tensor, b: torch.Tensor, directions: torch.Tensor) -> float:
    """Mean over ``directions`` (dim, K; unit columns) of the mean |sorted(a @ d) - sorted(b @ d)|.

    ``a`` and ``b`` are (N, dim) descriptor sets of equal size N."""
    if a.shape != b.shape:
        raise ValueError(f"descriptor sets must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    pa, _ = torch.sort(a @ directions, dim=0)
    pb, _ = torch.sort(b @ directions, dim=0)
    return float((pa - pb).abs().mean())


@torch.no_grad()
def swd(real: torch.Tensor, fake: torch.Tensor, min_size: int = 16, patches_per_image: int = 128, patch_size: int = 7,
        dir_repeats: int = 4, dirs_per_repeat: int = 128, seed: int = 0) -> dict:
    """Sliced Wasserstein distance between two image sets (N, C, H, W) (any intensity range; the
    per-channel normalisation removes it). Returns ``{"levels": [x1e3 per level], "mean": x1e3}``."""
    if real.ndim != 4 or fake.ndim != 4 or real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"SWD needs two (N, C, H, W) sets of the same image shape, got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    gen = torch.Generator().manual_seed(int(seed))
    n = min(len(real), len(fake))
    if n < 2:
        raise ValueError(f"SWD needs at least 2 images per set, got {len(real)} and {len(fake)}")
    real = real[torch.randperm(len(real), generator=gen)[:n]].cpu().float()
    fake = fake[torch.randperm(len(fake), generator=gen)[:n]].cpu().float()
    out = []
    for lr, lf in zip(laplacian_pyramid(real, min_size), laplacian_pyramid(fake, min_size)):
        da = _normalise(_descriptors(lr, patches_per_image, patch_size, gen))
        db = _normalise(_descriptors(lf, patches_per_image, patch_size, gen))
        dists = []
        for _ in range(dir_repeats):
            d = torch.randn(da.shape[1], dirs_per_repeat, generator=gen)
            dists.append(sliced_wasserstein_distance(da, db, d / d.norm(dim=0, keepdim=True)))
        out.append(1e3 * float(np.mean(dists)))
    return {"levels": out, "mean": float(np.mean(out))}


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between two feature sets (N, F) (MONAI ``FIDMetric``)."""
    if features_a.ndim != 2 or features_b.ndim != 2 or features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"feature sets must be (N, F) with the same F, got {tuple(features_a.shape)} "
                         f"and {tuple(features_b.shape)}")
    if min(len(features_a), len(features_b)) < 2:
        raise ValueError("the Fréchet distance needs at least 2 samples per set")
    return float(FIDMetric()(features_a.double(), features_b.double()))


@torch.no_grad()
def batched_features(feature_net: torch.nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``feature_net.features`` of (N, C, H, W) images in batches, on the net's device, returned on the CPU."""
    dev = next(feature_net.parameters()).device
    return torch.cat([feature_net.features(images[i : i + batch_size].to(dev)).cpu()
                      for i in range(0, len(images), batch_size)])


def mean_pairwise_distance(images: torch.Tensor, max_images: int = 256) -> float:
    """Diversity of a set: mean L2 distance between distinct pairs of images (RMS per pixel).

    A mode-collapsed generator drives it towards 0; compare it with the real set's value."""
    x = images[:max_images].flatten(1).double()
    if len(x) < 2:
        raise ValueError("diversity needs at least 2 images")
    d = torch.cdist(x, x) / np.sqrt(x.shape[1])
    n = len(x)
    return float(d.sum() / (n * (n - 1)))
