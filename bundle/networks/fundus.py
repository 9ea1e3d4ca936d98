"""Fundus-photograph synthesizers of Kishore & Devi (IJCRAS 2023): a DCGAN and a VAE.

Both expose ``generate(z) -> images in [-1, 1]`` so samplers and handlers treat them alike.

- :class:`DCGANGenerator` / :class:`DCGANDiscriminator` follow Radford et al. as the paper does:
  transposed convolutions k4/s2/p1 from a 4 x 4 seed, batch norm in both networks, ReLU in G,
  LeakyReLU 0.2 in D, tanh output, no fully connected hidden layers, N(0, 0.02) initialisation.
  MONAI has no DCGAN; the layers are MONAI ``Convolution`` blocks (MONAI's ``Generator`` /
  ``Discriminator`` use a dense projection and residual units, not the DCGAN recipe).
- :class:`FundusVAE` is MONAI's convolutional ``VarAutoEncoder`` with a 512-d latent and a linear
  output on [-1, 1] (the paper describes a one-hidden-layer fully connected VAE at 1008 x 1008; a
  convolutional VAE at 128 x 128 is the documented deviation).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import VarAutoEncoder
from torch import nn


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02); batch-norm scales N(1, 0.02), shifts 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """G: latent (B, latent_size) -> image (B, out_channels, S, S) in [-1, 1], S = 4 * 2**len(channels).

    Args:
        latent_size: length of z (paper: 100).
        channels: widths from the 4 x 4 seed upwards; one entry per resolution 4, 8, ..., S/2.
        out_channels: 3 for RGB.
    """

    def __init__(self, latent_size: int = 100, channels: Sequence[int] = (256, 128, 64, 32, 16), out_channels: int = 3):
        super().__init__()
        if latent_size < 1 or not channels:
            raise ValueError(f"need latent_size >= 1 and at least one channel entry, got {latent_size}, {channels}")
        self.latent_size, self.image_size = int(latent_size), 4 * 2 ** len(channels)
        up = {"spatial_dims": 2, "kernel_size": 4, "is_transposed": True, "act": "RELU", "norm": "BATCH", "bias": False,
              "output_padding": 0}
        layers = [Convolution(in_channels=latent_size, out_channels=channels[0], strides=1, padding=0, **up)]
        layers += [Convolution(in_channels=a, out_channels=b, strides=2, padding=1, **up)
                   for a, b in itertools.pairwise(channels)]
        layers += [Convolution(2, channels[-1], out_channels, strides=2, kernel_size=4, padding=1, output_padding=0,
                               is_transposed=True, conv_only=True), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim == 4:
            z = z.flatten(1)
        if z.ndim != 2 or z.shape[1] != self.latent_size:
            raise ValueError(f"latents must be (B, {self.latent_size}), got shape {tuple(z.shape)}")
        return self.net(z[:, :, None, None])

    generate = forward


def strided_discriminator_layers(in_channels: int, channels: Sequence[int], norm: str) -> list[Convolution]:
    """k4 / s2 / p1 convolutions with LeakyReLU 0.2, ``norm`` on all but the first (the DCGAN and DR-GAN
    discriminators' trunk)."""
    act = ("LEAKYRELU", {"negative_slope": 0.2})
    layers, c_in = [], in_channels
    for i, c in enumerate(channels):
        layers.append(Convolution(2, c_in, c, strides=2, kernel_size=4, padding=1, act=act,
                                  norm=None if i == 0 else norm, bias=i == 0))
        c_in = c
    return layers


class DCGANDiscriminator(nn.Module):
    """D: image (B, in_channels, S, S) -> real/fake logit (B,), S = 4 * 2**len(channels).

    Strided k4/s2/p1 convolutions with LeakyReLU 0.2 (batch norm on all but the first), then a k4
    convolution of the 4 x 4 map to one logit. ``features(x)`` returns the last 4 x 4 map.
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (16, 32, 64, 128, 256)):
        super().__init__()
        if not channels:
            raise ValueError("channels must not be empty")
        self.image_size = 4 * 2 ** len(channels)
        self.body = nn.Sequential(*strided_discriminator_layers(in_channels, channels, "BATCH"))
        self.head = nn.Conv2d(channels[-1], 1, kernel_size=4)
        dcgan_init(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"discriminator expects (B, C, {self.image_size}, {self.image_size}), "
                             f"got {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).flatten()


class FundusVAE(VarAutoEncoder):
    """Convolutional VAE on (B, 3, S, S) images in [-1, 1] with a ``latent_size`` Gaussian latent.

    ``forward`` returns MONAI's (reconstruction, mu, logvar, z); ``generate(z)`` decodes latents
    (B, latent_size) to images clamped to [-1, 1].
    """

    def __init__(self, image_size: int = 128, in_channels: int = 3, latent_size: int = 512,
                 channels: Sequence[int] = (16, 32, 64, 128), strides: Sequence[int] | None = None,
                 num_res_units: int = 0):
        strides = tuple(strides) if strides is not None else (2,) * len(channels)
        if image_size % 2 ** sum(s == 2 for s in strides):
            raise ValueError(f"image_size {image_size} must be divisible by the total stride of {strides}")
        super().__init__(spatial_dims=2, in_shape=(in_channels, image_size, image_size), out_channels=in_channels,
                         latent_size=latent_size, channels=tuple(channels), strides=strides,
                         num_res_units=num_res_units, act="LEAKYRELU", norm="BATCH", use_sigmoid=False)
        self.latent_size, self.image_size = int(latent_size), int(image_size)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_size:
            raise ValueError(f"latents must be (B, {self.latent_size}), got shape {tuple(z.shape)}")
        return self.decode_forward(z, use_sigmoid=False).clamp(-1.0, 1.0)
