"""One DR-GAN optimisation step (discriminators, then generator) as an ``iteration_update`` for
MONAI's ``SupervisedTrainer`` (whose ``network`` is the generator and ``optimizer`` G's optimizer).

MONAI's ``GanTrainer`` is unconditional (latent in, image out); DR-GAN's generator takes a mask
map, a grading code and noise, its discriminators see (masks, image) pairs at three scales and
classify the grade, and the generator's loss has four terms (paper Sec. III-D, ``specs/fundus.md``):

- D: least-squares adversarial loss (real -> 1, fake -> 0) averaged over scales, + focal grade
  classification of the real images (weight ``cls_weight``).
- G: least-squares adversarial loss (fake -> 1) + ``fm_weight`` x feature matching (L1 between D's
  features of fake and detached real, every layer and scale) + ``perceptual_weight`` x perceptual
  loss (L1 between the layer activations of a frozen network: local VGG-19 weights when given,
  else the DR grader's) + ``cls_weight`` x focal classification of the fakes as the requested
  grade by D + ``grade_head_weight`` x cross-entropy of G's mask-to-grade head.

The grading code comes from the grader's per-grade Gaussian of the real grade (adaptive grading
manipulation, ``code="agm"``) or is the one-hot grade (``code="onehot"``, the paper's ablation).
``use_lesions=False`` blanks the six lesion channels everywhere (the ablation without lesion
masks). In the ``global`` stage the generator makes half-resolution images and the reals are
downsampled to match.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..networks.drgan import MASK_CHANNELS, onehot_code

LESION_CHANNELS = [MASK_CHANNELS.index(c) for c in ("ma", "he", "ex", "se", "laser", "nv")]
CODES = ("agm", "onehot")


def _plain(t) -> torch.Tensor:
    """A batch entry as a plain tensor (MetaTensors lose their metadata)."""
    return torch.as_tensor(t.as_tensor() if hasattr(t, "as_tensor") else t)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Multi-class focal loss (Lin et al.): mean of (1 - p_t)^gamma x cross-entropy."""
    logp = F.log_softmax(logits, dim=1).gather(1, target.long().view(-1, 1)).squeeze(1)
    return (-(1 - logp.exp()) ** gamma * logp).mean()


class VGG19Features(nn.Module):
    """VGG-19 convolutional trunk with torchvision's layout (``features.N`` keys), loaded from a local
    state dict; returns the activations after relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 for
    images in [-1, 1] (ImageNet normalisation inside)."""

    CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)
    TAPS = (1, 6, 11, 20, 29)

    def __init__(self, weights: str | None = None):
        super().__init__()
        layers, c = [], 3
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
                c = v
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        if weights is not None:
            sd = torch.load(weights, map_location="cpu", weights_only=True)
            sd = {k: v for k, v in sd.items() if k.startswith("features.")}
            missing = self.load_state_dict(sd, strict=False).missing_keys
            missing = [k for k in missing if k.startswith("features.")]
            if missing:
                raise ValueError(f"{weights} is not a torchvision VGG-19 state dict: missing {missing[:3]} ...")

    def intermediate(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.TAPS:
                outs.append(x)
            if i >= self.TAPS[-1]:
                break
        return outs


def perceptual_network(grader: nn.Module, vgg19_weights: str | None = None) -> nn.Module:
    """The frozen network of the perceptual term: VGG-19 from a local file when given, else the grader."""
    log = logging.getLogger("bundle.drgan")
    if vgg19_weights:
        log.info("perceptual loss: VGG-19 features from %s", vgg19_weights)
        net = VGG19Features(vgg19_weights)
    else:
        log.info("perceptual loss: the DR grader's features (no --vgg19_weights given)")
        net = grader
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


class DRGANIteration:
    """Callable ``(engine, batchdata) -> output dict`` for ``SupervisedTrainer(iteration_update=...)``.

    Batches are dicts with ``image`` (B, 3, S, S) in [-1, 1], ``mask`` (B, 9, S, S) and ``grade`` (B,).
    """

    def __init__(self, discriminator: nn.Module, d_optimizer, grader: nn.Module, perceptual: nn.Module | None = None,
                 fm_weight: float = 10.0, perceptual_weight: float = 10.0, cls_weight: float = 1.0,
                 grade_head_weight: float = 1.0, code: str = "agm", use_lesions: bool = True,
                 d_classify: bool = True, focal_gamma: float = 2.0, seed: int = 0):
        if code not in CODES:
            raise ValueError(f"code must be one of {CODES}, got {code!r}")
        self.disc, self.d_opt, self.grader = discriminator, d_optimizer, grader.eval()
        for p in self.grader.parameters():
            p.requires_grad_(False)
        self.perceptual = perceptual if perceptual is not None else self.grader
        self.fm_weight, self.perceptual_weight = float(fm_weight), float(perceptual_weight)
        self.cls_weight, self.grade_head_weight = float(cls_weight), float(grade_head_weight)
        self.code, self.use_lesions, self.d_classify = code, bool(use_lesions), bool(d_classify)
        self.gamma = float(focal_gamma)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.last: dict[str, float] = {}

    def grading_code(self, grades: torch.Tensor, code_size: int) -> torch.Tensor:
        if self.code == "agm":
            return self.grader.sample_code(grades, self.gen)
        return onehot_code(grades, code_size).to(grades.device)

    def prepare(self, batch: dict, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        img = _plain(batch["image"]).to(device).float()
        masks = _plain(batch["mask"]).to(device).float()
        grades = _plain(batch["grade"]).to(device).long().flatten()
        if not self.use_lesions:
            masks = masks.clone()
            masks[:, LESION_CHANNELS] = 0
        return img, masks, grades

    def _adv(self, outs: list, target: float) -> torch.Tensor:
        return sum(F.mse_loss(o[1], torch.full_like(o[1], target)) for o in outs) / len(outs)

    def __call__(self, engine, batchdata: dict) -> dict:
        g_net, g_opt = engine.network, engine.optimizer
        g_net.train()
        real, masks, grades = self.prepare(batchdata, engine.state.device)
        if g_net.stage == "global":
            real = F.avg_pool2d(real, 2)
        code = self.grading_code(grades, g_net.code_size)
        fake, grade_logits = g_net(masks, code, return_grade=True)

        # --- discriminators
        self.disc.train()
        self.d_opt.zero_grad(set_to_none=True)
        d_real = self.disc(masks, real)
        d_fake = self.disc(masks, fake.detach())
        d_loss = self._adv(d_real, 1.0) + self._adv(d_fake, 0.0)
        d_cls = sum(focal_loss(o[2], grades, self.gamma) for o in d_real) / len(d_real)
        if self.d_classify:
            d_loss = d_loss + self.cls_weight * d_cls
        d_loss.backward()
        self.d_opt.step()

        # --- generator
        g_opt.zero_grad(set_to_none=True)
        d_fake = self.disc(masks, fake)
        adv = self._adv(d_fake, 1.0)
        # feature matching against the real features of the D step (detached)
        fm = sum(F.l1_loss(f, r.detach()) for of, orr in zip(d_fake, d_real) for f, r in zip(of[0], orr[0]))
        fm = fm / (len(d_fake) * len(d_fake[0][0]))
        perc = fake.new_zeros(())
        if self.perceptual_weight > 0:
            with torch.no_grad():
                pr = self.perceptual.intermediate(real)
            pf = self.perceptual.intermediate(fake)
            weights = [2.0 ** (i - len(pf) + 1) for i in range(len(pf))]  # ..., 1/4, 1/2, 1 (deeper counts more)
            perc = sum(w * F.l1_loss(a, b) for w, a, b in zip(weights, pf, pr)) / sum(weights)
        g_cls = sum(focal_loss(o[2], grades, self.gamma) for o in d_fake) / len(d_fake)
        head = F.cross_entropy(grade_logits, grades)
        g_loss = adv + self.fm_weight * fm + self.perceptual_weight * perc + self.grade_head_weight * head
        if self.d_classify:
            g_loss = g_loss + self.cls_weight * g_cls
        g_loss.backward()
        g_opt.step()
        terms = {"g_loss": g_loss, "d_loss": d_loss, "g_adv": adv, "g_fm": fm, "g_perceptual": perc, "g_cls": g_cls,
                 "d_cls": d_cls, "grade_head": head}
        self.last = {k: float(v.detach()) for k, v in terms.items()}
        return dict(self.last, loss=self.last["g_loss"])


def grade_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of grade logits against the datalist ``label`` whose first entry is the grade."""
    return F.cross_entropy(logits, label.reshape(len(logits), -1)[:, 0].long())


def prepare_mask_batch(batchdata: dict, device=None, non_blocking: bool = False, **kwargs):
    """``prepare_batch`` for segmentation of fundus pairs: (image, the mask map's first 8 channels: every
    channel but the FOV)."""
    img, masks = _plain(batchdata["image"]), _plain(batchdata["mask"])
    return (img.to(device=device, non_blocking=non_blocking),
            masks[:, : len(MASK_CHANNELS) - 1].to(device=device, non_blocking=non_blocking))
