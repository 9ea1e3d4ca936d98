"""One optimisation step of each NHAE training stage, as an ``iteration_update`` for MONAI's
``SupervisedTrainer``.

MONAI's ``AdversarialTrainer`` cannot express these stages: its generator is a single forward
pass with one reconstruction target, it has no KL or latent loss and no adversarial warm-up. The
stages (CA-LDM Sec. 2.1, ``specs/ca-ldm.md``):

- ``autoencoder2d`` (stage 1): batch (B, 1, H, W) B-scans; Enc2D/Dec2D with L1 + KL.
- ``nhae`` (stage 2, Dec2D frozen): batch (B, 1, D, H, W) volumes; E_3D -> z -> f_sr; L1 between
  f_sr(z) and Enc2D of the B-scans (latent loss; a random subset of ``latent_slices`` B-scans per
  step, an unbiased estimate of the all-slice loss at a fraction of the encoder cost), L1 between
  Dec2D of a few random slices of f_sr(z) and the true B-scans, KL on z.
- ``adaptors`` (stage 3, everything but the adaptors frozen): batch (B, 1, k, H, W) stacks of
  consecutive B-scans; Dec_M on their Enc2D latents without end padding, L1 on the k - 2R slices
  whose receptive field lies inside the stack. ``adaptor_latents="mixed"`` decodes, with
  probability ``thumbnail_probability``, the thumbnail-path latents f_sr(E_3D(stack)) instead
  (k a multiple of 8), so the adaptors also learn the NHAE's own reconstruction path.
- ``autoencoderkl3d`` (baseline, not part of CA-LDM): a holistic MONAI ``AutoencoderKL`` 3D on
  volume crops (B, 1, D, H, W) with L1 + KL, the comparison the NHAE acceptance asks for and the
  autoencoder of the "Medical Diffusion" baseline; its adversarial loss sees random B-scans of the
  reconstruction, like the NHAE stages.

Every stage adds a least-squares patch adversarial loss (MONAI ``PatchDiscriminator`` on B-scans)
after ``adv_start_iteration`` when a discriminator is given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import AutoencoderKL

from ..networks.losses import kl_loss
from ..networks.nhae import NonHolisticAutoencoder

STAGES = ("autoencoder2d", "nhae", "adaptors", "autoencoderkl3d")


def _slices(x: torch.Tensor) -> torch.Tensor:
    """(B, C, k, H, W) -> (B * k, C, H, W)."""
    return x.transpose(1, 2).reshape(-1, x.shape[1], *x.shape[3:])


class NHAEIteration:
    """Callable ``(engine, batchdata) -> output dict`` for ``SupervisedTrainer(iteration_update=...)``.

    The trainer's ``network`` must be a :class:`NonHolisticAutoencoder` and its ``optimizer`` must
    hold the stage's parameters (``network.trainable_parameters(stage)``); for ``autoencoderkl3d``
    it is a 3D MONAI ``AutoencoderKL`` and the optimizer holds all its parameters.

    Args:
        stage: one of ``STAGES``.
        discriminator / d_optimizer: optional 2D PatchDiscriminator and its optimizer.
        adv_weight: weight of the generator's adversarial loss.
        adv_start_iteration: iteration from which the adversarial loss is used (warm-up before).
        kl_weight: weight of the KL terms.
        latent_weight: weight of the stage-2 latent loss.
        slices_per_volume: B-scans decoded per volume in stage 2.
        latent_slices: B-scans whose Enc2D latents enter the stage-2 latent loss per step (0: all).
        image_key: key of the images in the batch.
    """

    def __init__(self, stage: str, discriminator: torch.nn.Module | None = None, d_optimizer=None,
                 adv_weight: float = 0.01, adv_start_iteration: int = 0, kl_weight: float = 1e-6,
                 latent_weight: float = 1.0, slices_per_volume: int = 8, latent_slices: int = 32,
                 image_key: str = "image", adaptor_latents: str = "slices", thumbnail_probability: float = 0.5):
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if (discriminator is None) != (d_optimizer is None):
            raise ValueError("give both discriminator and d_optimizer, or neither")
        self.stage, self.disc, self.d_opt = stage, discriminator, d_optimizer
        self.adv_weight, self.adv_start = float(adv_weight), int(adv_start_iteration)
        self.kl_weight, self.latent_weight = float(kl_weight), float(latent_weight)
        self.slices_per_volume, self.latent_slices, self.image_key = (int(slices_per_volume), int(latent_slices),
                                                                      image_key)
        if adaptor_latents not in ("slices", "mixed"):
            raise ValueError(f"adaptor_latents must be 'slices' or 'mixed', got {adaptor_latents!r}")
        self.adaptor_latents, self.thumbnail_probability = adaptor_latents, float(thumbnail_probability)
        self.adv_loss = PatchAdversarialLoss(criterion="least_squares")

    def losses(self, net: NonHolisticAutoencoder | AutoencoderKL,
               x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(fake B-scans, real B-scans, weighted loss terms) for one batch."""
        if self.stage == "autoencoderkl3d":
            if x.ndim != 5:
                raise ValueError(f"stage autoencoderkl3d expects volume crops (B, 1, D, H, W), got {tuple(x.shape)}")
            recon, mu, sigma = net(x)
            idx = torch.randperm(x.shape[2], device=x.device)[: self.slices_per_volume]
            terms = {"l1": F.l1_loss(recon, x), "kl": self.kl_weight * kl_loss(mu, sigma)}
            return _slices(recon[:, :, idx]), _slices(x[:, :, idx]), terms
        if self.stage == "autoencoder2d":
            if x.ndim != 4:
                raise ValueError(f"stage autoencoder2d expects B-scans (B, 1, H, W), got {tuple(x.shape)}")
            recon, mu, sigma = net.slice_ae(x)
            return recon, x, {"l1": F.l1_loss(recon, x), "kl": self.kl_weight * kl_loss(mu, sigma)}
        if x.ndim != 5:
            raise ValueError(f"stage {self.stage} expects volumes or stacks (B, 1, D, H, W), got {tuple(x.shape)}")
        if self.stage == "nhae":
            d = x.shape[2]
            lat_idx = torch.randperm(d, device=x.device)[: self.latent_slices or d]
            with torch.no_grad():
                target = net.encode_slices(x[:, :, lat_idx])
            mu, sigma = net.encode_volume(x)
            z_sr = net.f_sr(mu + sigma * torch.randn_like(sigma))
            idx = torch.randperm(d, device=x.device)[: self.slices_per_volume]
            fake = net.slice_ae.decode(_slices(z_sr[:, :, idx]))
            real = _slices(x[:, :, idx])
            terms = {"l1": F.l1_loss(fake, real), "latent": self.latent_weight * F.l1_loss(z_sr[:, :, lat_idx], target),
                     "kl": self.kl_weight * kl_loss(mu, sigma)}
            return fake, real, terms
        r = net.dec_m.receptive_radius
        with torch.no_grad():
            use_thumbnail = self.adaptor_latents == "mixed" and torch.rand(()).item() < self.thumbnail_probability
            lat = net.f_sr(net.encode_volume(x)[0]) if use_thumbnail else net.encode_slices(x)
        fake = _slices(net.dec_m(lat, pad_front=False, pad_back=False))
        real = _slices(x[:, :, r : x.shape[2] - r])
        return fake, real, {"l1": F.l1_loss(fake, real)}

    def __call__(self, engine, batchdata: dict) -> dict:
        x = batchdata[self.image_key].to(engine.state.device, non_blocking=engine.non_blocking)
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        net = engine.network
        net.train()
        fake, real, terms = self.losses(net, x)
        use_adv = self.disc is not None and engine.state.iteration >= self.adv_start
        if use_adv:
            self.disc.eval()  # no BatchNorm statistics update from the generator pass
            terms["adv_g"] = self.adv_weight * self.adv_loss(self.disc(fake.contiguous())[-1], target_is_real=True,
                                                             for_discriminator=False)
        loss = sum(terms.values())
        engine.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        engine.optimizer.step()
        out = {"loss": loss.item(), **{f"loss_{k}": v.item() for k, v in terms.items()}}
        if use_adv:
            self.disc.train()
            self.d_opt.zero_grad(set_to_none=True)
            d_fake = self.adv_loss(self.disc(fake.detach().contiguous())[-1], target_is_real=False,
                                   for_discriminator=True)
            d_real = self.adv_loss(self.disc(real.contiguous())[-1], target_is_real=True, for_discriminator=True)
            d_loss = 0.5 * (d_fake + d_real)
            d_loss.backward()
            self.d_opt.step()
            out["loss_d"] = d_loss.item()
        return out
