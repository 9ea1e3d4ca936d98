"""Sampling for the Table-1 baselines: noise -> 3D diffusion (DDIM, the same sampler as CA-LDM) -> decode.

"LDM3D" decodes its (c, D, H/8, W/8) latent one B-scan at a time with the NHAE's plain Dec2D;
"Medical Diffusion" decodes its (c, D/8, H/8, W/8) latent in one piece with a MONAI 3D
``AutoencoderKL``. MONAI's ``LatentDiffusionInferer`` would cover the second, but using one DDIM
loop (eta, seeds, progress, AMP) for every model keeps the comparison to CA-LDM like for like.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.schedulers import DDIMScheduler

from .cascade import _ddim, check_sampler_args
from .sliding_slice import SlidingSliceDecoder

DECODERS = ("slices", "volume")


class LatentDiffusion3DInferer:
    """Sample one volume from a 3D latent diffusion baseline.

    Args:
        scheduler: DDIM scheduler.
        latent_shape: (c, D', H', W') of the diffusion model's latent.
        decode: "slices" (LDM3D: latent (c, D, H/8, W/8), Dec2D per B-scan) or "volume" (Medical
            Diffusion: latent (c, D/8, H/8, W/8), ``autoencoder.decode`` on the whole latent).
        num_inference_steps, eta, progress, amp: as in ``CascadedLatentDiffusionInferer``.
        chunk_size: B-scans decoded together in "slices" mode.
    """

    def __init__(self, scheduler: DDIMScheduler, latent_shape: Sequence[int], decode: str = "volume",
                 num_inference_steps: int = 200, eta: float = 0.0, chunk_size: int = 16, progress: bool = True, amp: bool = False):
        if decode not in DECODERS:
            raise ValueError(f"decode must be one of {DECODERS}, got {decode!r}")
        self.latent_shape = check_sampler_args(scheduler, latent_shape, num_inference_steps)
        self.scheduler, self.decode = scheduler, decode
        self.steps, self.eta, self.progress, self.amp = int(num_inference_steps), float(eta), progress, amp
        self.slice_decoder = SlidingSliceDecoder("slice2d", chunk_size=chunk_size)

    @property
    def output_size(self) -> tuple[int, int, int]:
        """(D, H, W) of the volumes this inferer writes."""
        _, d, h, w = self.latent_shape
        return (d, h * 8, w * 8) if self.decode == "slices" else (d * 8, h * 8, w * 8)

    @torch.no_grad()
    def sample(self, autoencoder: torch.nn.Module, diffusion: torch.nn.Module, refiner: None = None, seed: int = 0) -> torch.Tensor:
        """One volume (1, D, H, W) in [-1, 1]. ``autoencoder``: the NHAE ("slices") or an ``AutoencoderKL``
        ("volume"); ``diffusion``: a ``ScaledDiffusionUNet``. ``refiner`` is accepted for call
        compatibility with the cascade and must be None."""
        if refiner is not None:
            raise ValueError("the 3D latent diffusion baselines have no refiner")
        device = next(diffusion.parameters()).device
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        noise = torch.randn((1, *self.latent_shape), generator=gen).to(device)
        z = _ddim(diffusion, self.scheduler, noise, self.steps, self.eta, None, gen, "diffusion 3D", self.progress, self.amp)
        z = z.float() / diffusion.scale_factor
        if self.decode == "slices":
            out = self.slice_decoder(z[0], autoencoder.dec_m)
        else:
            with torch.autocast("cuda", enabled=self.amp and z.is_cuda):
                out = autoencoder.decode(z)[0].float()
        return out.clamp(-1, 1)
