"""Training-time inferers."""

from __future__ import annotations

from monai.inferers import DiffusionInferer


class ConcatDiffusionInferer:
    """Training-time forward of a condition-concatenated diffusion UNet: MONAI's ``DiffusionInferer``
    with ``mode="concat"`` fixed, since ``SupervisedTrainer`` passes only the prepare_batch kwargs."""

    def __init__(self, scheduler):
        self.inner = DiffusionInferer(scheduler)

    def __call__(self, inputs, network, noise, timesteps, condition=None):
        if condition is None:
            return self.inner(inputs, network, noise=noise, timesteps=timesteps)
        return self.inner(inputs, network, noise=noise, timesteps=timesteps, condition=condition, mode="concat")
