"""The composed CA-LDM network: ``network_def`` of ``configs/inference.json`` and ``models/model.pt``.

MONAI's bundle tooling (``ConfigWorkflow``, MONAI Label's ``BundleInferTask``) expects one network
whose state dict is ``models/model.pt``. CA-LDM has four trained parts; this module only holds
them, under the names the sampling stages look them up by (``bundle.inferers.stages``).
"""

from __future__ import annotations

from torch import nn

from .nhae import NonHolisticAutoencoder
from .speckle import SpeckleModel


class CascadedLDM(nn.Module):
    """Container of the CA-LDM parts (no forward: the cascade inferer runs them stage by stage).

    Args:
        nhae: the non-holistic autoencoder (Enc2D/Dec2D, thumbnail encoder E_3D, f_sr, Dec_M adaptors).
        diffusion3d: Diff_3D, a 3D ``DiffusionModelUNet`` over the thumbnail latent (c, D/8, H/8, W/8).
        refiner: Diff_slice, a 2D ``DiffusionModelUNet`` over one B-scan latent conditioned on f_sr(z)_i.
        speckle: the fitted ``SpeckleModel`` (a bundle addition; unused when the stage list omits it).
    """

    def __init__(self, nhae: NonHolisticAutoencoder, diffusion3d: nn.Module, refiner: nn.Module,
                 speckle: SpeckleModel | None = None):
        super().__init__()
        self.nhae, self.diffusion3d, self.refiner = nhae, diffusion3d, refiner
        self.speckle = speckle if speckle is not None else SpeckleModel()


class LatentDiffusionModel(nn.Module):
    """Container of a 3D latent diffusion baseline: ``autoencoder`` (the NHAE for LDM3D, a MONAI 3D
    ``AutoencoderKL`` for Medical Diffusion) and ``diffusion`` (a ``ScaledDiffusionUNet``)."""

    def __init__(self, autoencoder: nn.Module, diffusion: nn.Module):
        super().__init__()
        self.autoencoder, self.diffusion = autoencoder, diffusion
