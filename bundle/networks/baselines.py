"""Pieces of the paper's two 3D baselines (Table 1) that MONAI core does not provide.

"LDM3D": a 2D autoencoder per B-scan (the NHAE's Enc2D/Dec2D, a MONAI ``AutoencoderKL``) and a 3D
diffusion model over the stacked slice latents (c, D, H/8, W/8). "Medical Diffusion": a holistic
3D ``AutoencoderKL`` and a 3D diffusion model over its latent (c, D/8, H/8, W/8). Both diffusion
models are MONAI ``DiffusionModelUNet``s with the widths of CA-LDM's Diff_3D; this wrapper stores
the latent scale factor (1 / std of the training latents) with the weights, so one file is enough
to sample.
"""

from __future__ import annotations

import torch
from torch import nn


class ScaledDiffusionUNet(nn.Module):
    """A diffusion UNet plus the ``scale_factor`` of the latents it was trained on.

    ``forward`` is the UNet's, so MONAI's ``DiffusionInferer`` and the bundle's trainers use it
    unchanged; samplers divide their result by ``scale_factor`` before decoding.
    """

    def __init__(self, unet: nn.Module, scale_factor: float | torch.Tensor = 1.0):
        super().__init__()
        scale = float(scale_factor)
        if not scale > 0 or scale != scale or scale == float("inf"):
            raise ValueError(f"scale_factor must be a positive finite number, got {scale_factor!r}")
        self.unet = unet
        self.register_buffer("scale_factor", torch.tensor(scale))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor:
        return self.unet(x, timesteps=timesteps, context=context, **kwargs)
