"""Label guidance for Diff_3D and Diff_slice (paper Sec. 3, "Benefits for downstream tasks").

The paper fine-tunes both diffusion models with condition encoders whose encoded labels are
concatenated to the noisy latents; its public code has no such variant, and MONAI's
``DiffusionModelUNet`` takes a concatenated condition but has no encoder for it. ``LabelConditionedUNet``
adds one: the label fractions of ``bundle.data.labels`` (at the latent's resolution) go through a small
conv encoder, and the UNet's first convolution gets the encoded channels as extra inputs whose weights
start at zero, so the conditioned model starts as exactly the unconditional one and fine-tuning only
has to learn what the labels add.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class LabelEncoder(nn.Sequential):
    """Label fractions (B, label_channels, *spatial) -> features (B, embed_channels, *spatial) at the
    same resolution: conv 3 -> GroupNorm -> SiLU -> conv 3 -> SiLU -> conv 1."""

    def __init__(self, spatial_dims: int, label_channels: int, embed_channels: int = 8, hidden_channels: int = 32):
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if min(label_channels, embed_channels, hidden_channels) < 1:
            raise ValueError("label_channels, embed_channels and hidden_channels must be >= 1, got "
                             f"{label_channels}, {embed_channels}, {hidden_channels}")
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        groups = 8 if hidden_channels % 8 == 0 else 1
        super().__init__(conv(label_channels, hidden_channels, 3, padding=1), nn.GroupNorm(groups, hidden_channels),
                         nn.SiLU(), conv(hidden_channels, hidden_channels, 3, padding=1), nn.SiLU(),
                         conv(hidden_channels, embed_channels, 1))


class LabelConditionedUNet(nn.Module):
    """A MONAI ``DiffusionModelUNet`` conditioned on label fractions by channel concatenation.

    ``forward(x, timesteps, ...)``: ``x`` (B, C + label_channels, *spatial) is what the unconditional
    model took (noisy latent plus any concatenated condition, C channels) followed by the label fractions;
    the fractions are encoded to ``embed_channels`` and concatenated back before the UNet. The signature
    is the UNet's, so MONAI's ``DiffusionInferer`` (mode "concat") and the bundle's DDIM loop call it as
    they call the unconditional UNet.

    Args:
        unet: the unconditional UNet (copied, not modified); its ``conv_in`` is widened by
            ``embed_channels`` zero-initialised input channels.
        label_channels: channels of the label fractions (``bundle.data.labels.label_channels()``).
        embed_channels, hidden_channels: width of the ``LabelEncoder``.
    """

    def __init__(self, unet: nn.Module, label_channels: int, embed_channels: int = 8, hidden_channels: int = 32):
        super().__init__()
        unet = copy.deepcopy(unet)
        conv = getattr(getattr(unet, "conv_in", None), "conv", None)
        if not isinstance(conv, (nn.Conv2d, nn.Conv3d)):
            raise ValueError(f"{type(unet).__name__} has no conv_in.conv convolution to widen; "
                             "LabelConditionedUNet wraps a MONAI DiffusionModelUNet")
        wide = type(conv)(conv.in_channels + embed_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          conv.padding)
        with torch.no_grad():
            wide.weight.zero_()
            wide.weight[:, : conv.in_channels] = conv.weight
            wide.bias.copy_(conv.bias)
        unet.conv_in.conv = wide
        self.base_channels = conv.in_channels
        self.label_channels = int(label_channels)
        self.unet = unet
        self.encoder = LabelEncoder(conv.weight.ndim - 2, self.label_channels, embed_channels, hidden_channels)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, **kwargs) -> torch.Tensor:
        expected = self.base_channels + self.label_channels
        if x.shape[1] != expected:
            raise ValueError(f"LabelConditionedUNet expects {self.base_channels} latent/condition channels followed "
                             f"by {self.label_channels} label channels ({expected}), got {x.shape[1]}")
        base, labels = x[:, : self.base_channels], x[:, self.base_channels:]
        return self.unet(torch.cat([base, self.encoder(labels.to(base.dtype))], dim=1), timesteps, **kwargs)

    def load_unconditional(self, state: dict) -> LabelConditionedUNet:
        """Initialise the UNet from an unconditional UNet's state dict (``conv_in`` widened with zeros)."""
        state = dict(state)
        key = "conv_in.conv.weight"
        if key not in state:
            raise ValueError(f"the unconditional state dict has no {key!r}: not a DiffusionModelUNet")
        w = state[key]
        if w.shape[1] != self.base_channels:
            raise ValueError(f"the unconditional UNet takes {w.shape[1]} input channels, "
                             f"this model {self.base_channels}")
        wide = torch.zeros_like(self.unet.conv_in.conv.weight)
        wide[:, : self.base_channels] = w
        state[key] = wide
        self.unet.load_state_dict(state)
        return self


def init_label_conditioned(model: LabelConditionedUNet, path, part: str, hint: str = "") -> LabelConditionedUNet:
    """Start label-guided fine-tuning from the unconditional ``part`` ("diffusion3d", "refiner") of ``path``
    (``models/model.pt``): the UNet gets its weights, the label encoder keeps its fresh initialisation."""
    from .io import load_weights

    unconditional = copy.deepcopy(model.unet)
    conv = unconditional.conv_in.conv
    narrow = type(conv)(model.base_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
    unconditional.conv_in.conv = narrow
    load_weights(unconditional, path, hint, prefix=part)
    return model.load_unconditional(unconditional.state_dict())
