"""Export the NHAE weights at the end of a training stage, with latent scale factors computed."""

from __future__ import annotations

import os

import torch
from ignite.engine import Events

from ..networks.io import save_weights
from ..networks.nhae import NonHolisticAutoencoder


@torch.no_grad()
def latent_scale_factors(network: NonHolisticAutoencoder, data_loader, image_key: str = "image", max_batches: int = 8,
                         device=None) -> tuple[float, float]:
    """1 / std of the 3D latents E_3D(x) and of the 2D latents Enc2D(x_i) over a few training volumes."""
    network.eval()
    device = device or next(network.parameters()).device
    z3, z2 = [], []
    for i, batch in enumerate(data_loader):
        if i >= max_batches:
            break
        x = batch[image_key].to(device)
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        z3.append(network.encode_volume(x)[0].flatten())
        z2.append(network.encode_slices(x).flatten())
    if not z3:
        raise ValueError("cannot compute latent scale factors: the data loader is empty")
    return 1.0 / torch.cat(z3).std().item(), 1.0 / torch.cat(z2).std().item()


class ExportWeights:
    """On trainer completion, atomically save ``network``'s state dict to ``path``
    (into the ``prefix.*`` part of a composed model's file when ``prefix`` is given; see ``save_weights``)."""

    def __init__(self, path: str | os.PathLike, network: torch.nn.Module, prefix: str | None = None):
        self.path, self.network, self.prefix = path, network, prefix

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine=None) -> None:
        save_weights(self.network, self.path, self.prefix)
        if engine is not None:
            engine.logger.info(f"saved {self.path}" + (f" ({self.prefix}.*)" if self.prefix else ""))


class ExportNHAE(ExportWeights):
    """On trainer completion: set ``scale_factor`` / ``slice_scale_factor`` from ``data_loader``
    (volumes, no augmentation) when ``update_scale`` is True, then atomically save the state dict."""

    def __init__(self, path: str | os.PathLike, network: NonHolisticAutoencoder, data_loader=None,
                 update_scale: bool = True, image_key: str = "image", max_batches: int = 8, prefix: str | None = None):
        if update_scale and data_loader is None:
            raise ValueError("update_scale needs a data_loader of training volumes")
        super().__init__(path, network, prefix)
        self.loader, self.update_scale, self.image_key, self.max_batches = (data_loader, update_scale, image_key,
                                                                            max_batches)

    def __call__(self, engine=None) -> None:
        if self.update_scale:
            s3, s2 = latent_scale_factors(self.network, self.loader, self.image_key, self.max_batches)
            self.network.scale_factor.fill_(s3)
            self.network.slice_scale_factor.fill_(s2)
        super().__call__(engine)
        if engine is not None:
            engine.logger.info(f"scale_factor={self.network.scale_factor.item():.4f}, "
                               f"slice_scale_factor={self.network.slice_scale_factor.item():.4f}")
