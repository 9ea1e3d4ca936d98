"""Ignite iteration functions and loss callables MONAI lacks; they plug into MONAI's ``SupervisedTrainer`` / \
``GanTrainer``."""

from .nhae import NHAEIteration, STAGES

__all__ = ["NHAEIteration", "STAGES"]
from .gan import DCGANLoss, VAELoss, prepare_autoencoder_batch, prepare_reals  # noqa: E402

__all__ += ["DCGANLoss", "VAELoss", "prepare_autoencoder_batch", "prepare_reals"]
from .synthesis import prepare_synthesis_batch, run_requests  # noqa: E402

__all__ += ["prepare_synthesis_batch", "run_requests"]
from .finetune import CascadeDiffusionIteration  # noqa: E402

__all__ += ["CascadeDiffusionIteration"]
from .drgan import DRGANIteration, focal_loss, grade_loss, prepare_mask_batch  # noqa: E402
__all__ += ["DRGANIteration", "focal_loss", "grade_loss", "prepare_mask_batch"]
