"""A Gaussian-mixture prior over a VAE's latent space, fitted to the training images' posterior means.

A VAE trained with a weak KL term leaves the standard normal prior partly off the region its decoder
learnt: about half of the shipped fundus VAE's N(0, I) samples are square, FOV-less images. Sampling
from a mixture fitted to where the training images actually encode (the aggregate posterior, a
standard remedy) keeps samples on the data manifold. MONAI has no such prior; this module is small
enough to store beside the VAE weights (``models/fundus/vae_prior.pt``).
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn


class GaussianMixturePrior(nn.Module):
    """Diagonal Gaussian mixture with ``num_components`` components over ``latent_size`` dimensions.

    ``fit(z)`` runs EM on latents (N, latent_size); ``sample(n, generator)`` draws (n, latent_size) on
    the CPU from the caller's generator (a seed gives the same latents on any device)."""

    def __init__(self, num_components: int = 16, latent_size: int = 512, min_var: float = 1e-4):
        super().__init__()
        if int(num_components) < 1 or int(latent_size) < 1:
            raise ValueError(f"num_components and latent_size must be >= 1, got {num_components}, {latent_size}")
        self.min_var = float(min_var)
        self.register_buffer("log_weights", torch.full((int(num_components),), -math.log(int(num_components))))
        self.register_buffer("means", torch.zeros(int(num_components), int(latent_size)))
        self.register_buffer("variances", torch.ones(int(num_components), int(latent_size)))
        self.register_buffer("fitted", torch.tensor(False))

    def _log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """(N, K) log w_k + log N(z | m_k, diag v_k)."""
        d = z[:, None, :] - self.means[None]
        ll = -0.5 * ((d**2 / self.variances[None]).sum(-1) + self.variances.log().sum(-1)[None]
                     + z.shape[1] * math.log(2 * math.pi))
        return ll + self.log_weights[None]

    @torch.no_grad()
    def fit(self, z: torch.Tensor, iterations: int = 100, seed: int = 0) -> GaussianMixturePrior:
        """EM on latents ``z`` (N, latent_size), initialised at ``num_components`` distinct data points."""
        z = z.detach().float().cpu()
        k = self.means.shape[0]
        if z.ndim != 2 or z.shape[1] != self.means.shape[1]:
            raise ValueError(f"latents must be (N, {self.means.shape[1]}), got {tuple(z.shape)}")
        if z.shape[0] < k:
            raise ValueError(f"cannot fit {k} components to {z.shape[0]} latents")
        gen = torch.Generator().manual_seed(int(seed))
        self.means.copy_(z[torch.randperm(z.shape[0], generator=gen)[:k]])
        self.variances.copy_(z.var(0, unbiased=False).clamp_min(self.min_var).expand_as(self.variances))
        self.log_weights.fill_(-math.log(k))
        for _ in range(int(iterations)):
            resp = torch.softmax(self._log_prob(z), dim=1)  # (N, K)
            nk = resp.sum(0).clamp_min(1e-8)
            self.log_weights.copy_((nk / nk.sum()).log())
            self.means.copy_(resp.T @ z / nk[:, None])
            self.variances.copy_((resp.T @ z**2 / nk[:, None] - self.means**2).clamp_min(self.min_var))
        self.fitted.fill_(True)
        return self

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if not bool(self.fitted):
            raise RuntimeError("the latent prior is not fitted: fit it (docs/README.md) or sample with prior 'normal'")
        k = torch.multinomial(self.log_weights.exp().cpu(), int(n), replacement=True, generator=generator)
        eps = torch.randn(int(n), self.means.shape[1], generator=generator)
        return self.means.cpu()[k] + self.variances.cpu()[k].sqrt() * eps


@torch.no_grad()
def fit_vae_prior(vae: nn.Module, images: torch.Tensor, path: str | os.PathLike, num_components: int = 16,
                  batch_size: int = 64, seed: int = 0) -> GaussianMixturePrior:
    """Fit a ``GaussianMixturePrior`` to the posterior means of ``images`` (N, 3, H, W) in [-1, 1] under
    ``vae`` (MONAI ``VarAutoEncoder``: ``encode_forward`` returns mu, logvar) and save it to ``path``."""
    from .io import save_weights

    vae.eval()
    device = next(vae.parameters()).device
    mus = [vae.encode_forward(images[a : a + batch_size].to(device))[0].cpu()
           for a in range(0, len(images), batch_size)]
    prior = GaussianMixturePrior(num_components, mus[0].shape[1]).fit(torch.cat(mus), seed=seed)
    save_weights(prior, path)
    return prior
