"""CA-LDM sampling as a MONAI ``Inferer`` (paper Sec. 2.2): a list of stages run in order.

MONAI's ``LatentDiffusionInferer`` samples one latent and decodes it whole; the cascade needs a
second, slice-wise diffusion conditioned on the super-resolved 3D latent and a decoder that streams
B-scans. Which stages run (CA-LDM, an ablation, a baseline) is the config's choice
(``bundle.inferers.stages``); this class only runs them, one seed per volume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer

from ..data.labels import LABEL_KEYS
from .stages import SamplingContext, output_size


class LabelConditioner:
    """A label set -> the conditions of label-guided CA-LDM's stages: {"latent": (1, 15, D/f, H/f, W/f) for
    Diff_3D, "slices": (D, 15, H/f, W/f) for the refiner} (``bundle.data.labels``, f = the latent's
    downsampling factor, 8)."""

    def __init__(self, factor: int = 8):
        if int(factor) < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor = int(factor)

    def __call__(self, label, artery, vein) -> dict:
        from ..data.labels import label_fractions, slice_label_fractions

        return {"latent": label_fractions(label, artery, vein, self.factor)[None],
                "slices": slice_label_fractions(label, artery, vein, self.factor)}


class CascadedLatentDiffusionInferer(Inferer):
    """Sample volumes with a list of sampling stages, called like every MONAI inferer.

    ``inferer(inputs, network, seeds=None)``: ``inputs`` (B, C, D, H, W) is the request's reference
    image (its spatial size must be the size the stages produce; its affine / meta data is copied to
    the output), ``network`` the composed model the stages take their parts from, ``seeds`` one seed
    per batch item (default: ``seed``, seed + 1, ...). Returns (B, 1, D, H, W), a ``MetaTensor`` carrying the
    reference's meta data: float in [-1, 1], or uint8 0..255 when the last stage quantises (``configs/inference.json``
    decodes with ``bundle.inferers.Quantize``: the volume exactly as written).

    Label-guided synthesis: with a ``conditioner`` (``LabelConditioner``), ``labels`` is a dict of batched
    label tensors ({"label": (B, 1, D, H, W), "artery" / "vein": (B, 1, D, W)}) that the conditioner turns
    into each volume's stage conditions; a conditional inferer refuses to sample without labels and an
    unconditional one refuses labels.

    Args:
        stages: callables ``stage(x, network, ctx) -> x`` (``bundle.inferers.stages``).
        seed: seed of the first volume when the caller gives none (MONAI Label).
        conditioner: callable(label, artery, vein) -> conditions dict (``SamplingContext.conditions``).
    """

    def __init__(self, stages: Sequence, seed: int = 0, conditioner: Callable | None = None):
        super().__init__()
        if not stages:
            raise ValueError("stages must list at least one sampling stage")
        self.stages, self.seed, self.conditioner = list(stages), int(seed), conditioner

    @property
    def output_size(self) -> tuple[int, int, int]:
        """(D, H, W) of the volumes this inferer produces."""
        return output_size(self.stages)

    @torch.no_grad()
    def sample(self, network: torch.nn.Module, seed: int = 0, conditions: dict | None = None) -> torch.Tensor:
        """One volume (1, D, H, W) in [-1, 1]; the same seed gives the same volume."""
        ctx = SamplingContext(int(seed), conditions=dict(conditions or {}))
        x = None
        for stage in self.stages:
            x = stage(x, network, ctx)
        return x

    def _conditions(self, labels: dict | None, batch: int) -> list[dict]:
        if self.conditioner is None:
            if labels:
                raise ValueError("this inferer is unconditional but got labels; use configs/inference_conditional.json "
                                 "for label-guided synthesis")
            return [{}] * batch
        if not labels or any(k not in labels for k in LABEL_KEYS):
            raise ValueError(f"this label-guided inferer needs {LABEL_KEYS} for every volume, got "
                             f"{sorted(labels or {})}")
        return [self.conditioner(*(labels[k][i] for k in LABEL_KEYS)) for i in range(batch)]

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any,
                 seeds: Sequence[int] | torch.Tensor | None = None, labels: dict | None = None,
                 **kwargs: Any) -> torch.Tensor:
        if inputs.ndim != 5:
            raise ValueError(f"inputs must be a reference image batch (B, C, D, H, W), got shape {tuple(inputs.shape)}")
        batch = inputs.shape[0]
        if seeds is None:
            seeds = [self.seed + i for i in range(batch)]
        seeds = [int(s) for s in (seeds.tolist() if torch.is_tensor(seeds) else seeds)]
        if len(seeds) != batch:
            raise ValueError(f"got {len(seeds)} seeds for a batch of {batch} requests")
        expected = self.output_size
        if tuple(inputs.shape[2:]) != expected:
            raise ValueError(f"the reference image has spatial size {tuple(inputs.shape[2:])}, "
                             f"but the model synthesizes {expected} volumes")
        conditions = self._conditions(labels, batch)
        vols = [self.sample(network, s, c)[None] for s, c in zip(seeds, conditions)]
        out = vols[0] if batch == 1 else torch.cat(vols)
        out = MetaTensor(out)
        if isinstance(inputs, MetaTensor):
            out.copy_meta_from(inputs, copy_attr=False)
        return out
