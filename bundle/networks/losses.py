"""Loss terms shared by several training stages."""

from __future__ import annotations

import torch


def kl_loss(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) of a diagonal Gaussian posterior, summed over the latent elements
    and averaged over the batch (dim 0); ``mu`` and ``sigma`` have the same shape (B, ...).

    The KL term of the NHAE stages (``bundle.engines.NHAEIteration``, sigma from the encoders) and of
    the fundus VAE (``bundle.engines.VAELoss``, sigma = exp(logvar / 2) from MONAI's ``VarAutoEncoder``)."""
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-12) - 1)
    return kl.flatten(1).sum(1).mean()
