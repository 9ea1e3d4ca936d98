"""Validation-time reconstruction of whole volumes by an NHAE training stage."""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer
from monai.networks.nets import AutoencoderKL

from ..networks.nhae import NonHolisticAutoencoder
from .sliding_slice import SlidingSliceDecoder


class NHAEReconstructionInferer(Inferer):
    """(B, 1, D, H, W) volumes -> their reconstructions, the way a given stage would produce them.

    - ``autoencoder2d``: Enc2D -> Dec2D for every B-scan (chunks of ``chunk_size``);
    - ``nhae``: E_3D -> f_sr -> plain Dec2D (``slice2d``);
    - ``adaptors``: E_3D -> f_sr -> Dec_M (``stack`` sliding-slice decoding);
    - ``autoencoderkl3d``: the holistic baseline, a 3D MONAI ``AutoencoderKL`` on the whole volume.
    """

    def __init__(self, stage: str = "adaptors", chunk_size: int = 16):
        super().__init__()
        modes = {"autoencoder2d": None, "nhae": "slice2d", "adaptors": "stack", "autoencoderkl3d": None}
        if stage not in modes:
            raise ValueError(f"stage must be one of {tuple(modes)}, got {stage!r}")
        self.stage, self.chunk_size = stage, int(chunk_size)
        self.decoder = SlidingSliceDecoder(modes[stage], chunk_size=chunk_size) if modes[stage] else None

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        x = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        if self.stage == "autoencoderkl3d":
            if not isinstance(network, AutoencoderKL):
                raise TypeError(f"stage autoencoderkl3d needs a monai AutoencoderKL, got {type(network).__name__}")
            return network.reconstruct(x)
        if not isinstance(network, NonHolisticAutoencoder):
            raise TypeError(f"network must be a NonHolisticAutoencoder, got {type(network).__name__}")
        outs = []
        for vol in x:
            if self.decoder is None:
                slices = vol.transpose(0, 1)  # (D, 1, H, W)
                rec = torch.cat([network.slice_ae.reconstruct(slices[i : i + self.chunk_size])
                                 for i in range(0, slices.shape[0], self.chunk_size)])
                outs.append(rec.transpose(0, 1))
            else:
                mu, _ = network.encode_volume(vol[None])
                outs.append(self.decoder(network.f_sr(mu)[0], network.dec_m).to(x.device, x.dtype))
        return torch.stack(outs)
