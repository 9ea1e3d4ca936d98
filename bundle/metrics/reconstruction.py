"""Reconstruction quality of the NHAE on held-out volumes (issue: NHAE acceptance).

``slice_jitter`` is the mean over i of |mean(x_i) - mean(x_{i+1})| over B-scans: slice-wise
decoders that ignore their neighbours make it larger than the real volumes' value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric


def slice_jitter(volume: torch.Tensor | np.ndarray) -> float:
    """Mean absolute difference of consecutive B-scan means of a (D, H, W) or (1, D, H, W) volume."""
    v = torch.as_tensor(np.asarray(volume) if not isinstance(volume, torch.Tensor) else volume).float()
    v = v.reshape(-1, *v.shape[-2:]) if v.ndim == 4 else v
    if v.ndim != 3 or v.shape[0] < 2:
        raise ValueError(f"slice_jitter needs a (D, H, W) volume with D >= 2, got shape {tuple(v.shape)}")
    m = v.mean(dim=(1, 2))
    return float((m[1:] - m[:-1]).abs().mean())


@torch.no_grad()
def evaluate_reconstruction(reconstruct: dict[str, Callable[[torch.Tensor], torch.Tensor]],
                            volumes: Sequence[torch.Tensor]) -> dict:
    """PSNR / SSIM (data range 2, images in [-1, 1]) and slice jitter per method, mean +- std over volumes.

    Args:
        reconstruct: method name -> function mapping a (1, 1, D, H, W) volume to its reconstruction.
        volumes: held-out volumes, each (1, 1, D, H, W) in [-1, 1].
    """
    psnr, ssim = PSNRMetric(max_val=2.0), SSIMMetric(spatial_dims=3, data_range=2.0)
    rows = {"real": {"jitter": [slice_jitter(v[0, 0]) for v in volumes]}}
    for name, fn in reconstruct.items():
        r = {"psnr": [], "ssim": [], "jitter": []}
        for v in volumes:
            rec = fn(v).to(v.device, v.dtype).clamp(-1, 1).reshape(v.shape)
            r["psnr"].append(float(psnr(rec, v).mean()))
            r["ssim"].append(float(ssim(rec, v).mean()))
            r["jitter"].append(slice_jitter(rec[0, 0]))
        rows[name] = r
    return {m: {k: [float(np.mean(x)), float(np.std(x))] for k, x in r.items()} for m, r in rows.items()}
