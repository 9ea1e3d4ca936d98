"""Loss callables for MONAI's ``GanTrainer`` (DCGAN) and ``SupervisedTrainer`` (VAE).

``GanTrainer`` calls ``d_loss_function(fakes, reals)`` and ``g_loss_function(fakes)`` and knows
nothing of the discriminator, so :class:`DCGANLoss` holds it. The D loss detaches the fakes (MONAI
does not), and both record the mean probabilities D(x) and D(G(z)) of the last step in ``last``
(the DCGAN paper's filter keeps samples with D(G(z)) >= 0.76).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..networks.losses import kl_loss


def prepare_reals(batchdata, device=None, non_blocking: bool = False, **kwargs) -> torch.Tensor:
    """``d_prepare_batch`` for ``GanTrainer``: the real images of a dict batch (MONAI's default returns a tuple)."""
    x = batchdata["image"] if isinstance(batchdata, dict) else batchdata
    x = x.as_tensor() if hasattr(x, "as_tensor") else x
    return x.to(device=device, non_blocking=non_blocking, **kwargs)


def prepare_autoencoder_batch(batchdata, device=None, non_blocking: bool = False,
                              **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """``prepare_batch`` for ``SupervisedTrainer`` training an autoencoder: (image, image)."""
    x = prepare_reals(batchdata, device, non_blocking, **kwargs)
    return x, x


class DCGANLoss:
    """Non-saturating binary cross-entropy GAN losses around ``discriminator`` (logits out).

    ``d_loss(fakes, reals)`` = BCE(D(x), 1) + BCE(D(G(z)), 0), reported as the sum like the DCGAN
    reference; ``g_loss(fakes)`` = BCE(D(G(z)), 1).

    ``instance_noise`` > 0 adds Gaussian noise of that std to every image D sees (real and fake),
    decaying linearly to 0 at iteration ``anneal_iterations`` (Sønderby et al. 2016). Fundus images
    have a black surround that D separates from a fresh generator's grey output at once; without
    the noise D saturates (D(G(z)) ~ 1e-3) and a CPU-sized run of a 128 x 128 DCGAN never leaves the
    grey start. ``iteration`` (0-based) drives the decay; ``bundle.handlers.InstanceNoiseSchedule`` in
    the trainer's handlers keeps it at ``engine.state.iteration``, also after a resume.
    """

    def __init__(self, discriminator: nn.Module, instance_noise: float = 0.0, anneal_iterations: int | None = None):
        if instance_noise < 0:
            raise ValueError(f"instance_noise must be >= 0, got {instance_noise}")
        self.discriminator = discriminator
        self.instance_noise, self.anneal_iterations = float(instance_noise), anneal_iterations
        self.iteration = 0
        self.last: dict[str, float] = {}

    @property
    def noise_std(self) -> float:
        if not self.instance_noise or not self.anneal_iterations:
            return self.instance_noise
        return self.instance_noise * max(0.0, 1.0 - self.iteration / float(self.anneal_iterations))

    def _d(self, x: torch.Tensor) -> torch.Tensor:
        std = self.noise_std
        return self.discriminator(x + std * torch.randn_like(x) if std > 0 else x)

    def d_loss(self, fakes: torch.Tensor, reals: torch.Tensor) -> torch.Tensor:
        real_logits = self._d(reals)
        fake_logits = self._d(fakes.detach())
        self.last["d_real"] = float(torch.sigmoid(real_logits).mean())
        self.last["d_fake"] = float(torch.sigmoid(fake_logits).mean())
        return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))

    def g_loss(self, fakes: torch.Tensor) -> torch.Tensor:
        logits = self._d(fakes)
        self.last["d_fake_g"] = float(torch.sigmoid(logits).mean())
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


class VAELoss(nn.Module):
    """Loss of MONAI's ``VarAutoEncoder`` output (recon, mu, logvar, z) against the input image:
    mean squared error + ``kl_weight`` x KL(q(z|x) || N(0, I)) (summed over the latent, batch mean)."""

    def __init__(self, kl_weight: float = 1e-4):
        super().__init__()
        self.kl_weight = float(kl_weight)

    def forward(self, output, target: torch.Tensor) -> torch.Tensor:
        recon, mu, logvar = output[0], output[1], output[2]
        return F.mse_loss(recon, target) + self.kl_weight * kl_loss(mu, torch.exp(0.5 * logvar))
