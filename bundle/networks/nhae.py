"""Non-holistic autoencoder (NHAE) of CA-LDM (Huang et al., MICCAI 2024, Sec. 2.1).

Paper symbols -> classes here:

- Enc2D / Dec2D: a MONAI ``AutoencoderKL`` (2D, KL-regularised, x8 downsampling) trained on
  single B-scans; Enc2D also produces the refiner's targets z_hr,i.
- E_3D (thumbnail encoder): :class:`ThumbnailEncoder`, x2 anti-aliased downsampling then a 3D
  encoder with two stride-2 levels -> z of shape (c, D/8, H/8, W/8).
- f_sr: :class:`UniaxialSuperResolution`, upsamples only the slice axis D, x8.
- Dec_M: :class:`MultiSliceDecoder`, the frozen Dec2D with a :class:`SliceAdaptor3D` after every
  residual block (identity at initialisation).

MONAI lacks a slice-wise decoder whose 2D layers see one B-scan at a time while learnable 3D
adaptors mix neighbouring B-scans; that is what :class:`MultiSliceDecoder` adds. Its adaptors use
replicate padding along D only at true volume ends and valid convolution elsewhere, so a chunk of
latents with a halo of ``receptive_radius`` slices on each interior side decodes exactly the slices
that one-shot decoding of the whole stack would give (see ``bundle.inferers.SlidingSliceDecoder``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import AutoencoderKL
from monai.networks.nets.autoencoderkl import AEKLResBlock, Encoder


class ThumbnailEncoder(nn.Module):
    """E_3D: encodes a x2-downsampled thumbnail of the volume into the 3D latent z.

    Input (B, 1, D, H, W) with D, H, W multiples of 8; output ``(z_mu, z_sigma)``, each
    (B, latent_channels, D/8, H/8, W/8). Downsampling is 2x2x2 average pooling (anti-aliased);
    the encoder is MONAI's AutoencoderKL ``Encoder`` with ``len(channels) = 3`` levels (two stride-2).
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64), latent_channels: int = 4,
                 num_res_blocks: int = 1, norm_num_groups: int = 8, norm_eps: float = 1e-6):
        super().__init__()
        if len(channels) != 3:
            raise ValueError(f"ThumbnailEncoder needs 3 levels (two stride-2 steps), got channels={tuple(channels)}")
        if any(c % norm_num_groups for c in channels):
            raise ValueError(f"channels {tuple(channels)} must be divisible by norm_num_groups={norm_num_groups}")
        self.latent_channels = latent_channels
        self.encoder = Encoder(spatial_dims=3, in_channels=in_channels, channels=tuple(channels),
                               out_channels=channels[-1], num_res_blocks=(num_res_blocks,) * 3,
                               norm_num_groups=norm_num_groups, norm_eps=norm_eps,
                               attention_levels=(False, False, False), with_nonlocal_attn=False)
        self.to_mu = nn.Conv3d(channels[-1], latent_channels, 1)
        self.to_log_var = nn.Conv3d(channels[-1], latent_channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 5 or any(s % 8 for s in x.shape[2:]):
            raise ValueError(f"ThumbnailEncoder expects (B, C, D, H, W) with D, H, W multiples of 8, "
                             f"got {tuple(x.shape)}")
        h = self.encoder(F.avg_pool3d(x, 2))
        log_var = torch.clamp(self.to_log_var(h), -30.0, 20.0)
        return self.to_mu(h), torch.exp(log_var / 2)


class UniaxialSuperResolution(nn.Module):
    """f_sr: (B, c, D', H', W') -> (B, c, D' * 2**levels, H', W'); only the slice axis grows.

    Each level: a 3D residual block then a transposed convolution with stride (2, 1, 1).
    """

    def __init__(self, latent_channels: int = 4, channels: int = 32, levels: int = 3, num_res_blocks: int = 1,
                 norm_num_groups: int = 8, norm_eps: float = 1e-6):
        super().__init__()
        self.factor = 2**levels
        layers: list[nn.Module] = [nn.Conv3d(latent_channels, channels, 3, padding=1)]
        for _ in range(levels):
            layers += [AEKLResBlock(3, channels, norm_num_groups, norm_eps, channels) for _ in range(num_res_blocks)]
            layers.append(nn.ConvTranspose3d(channels, channels, kernel_size=(4, 3, 3), stride=(2, 1, 1),
                                             padding=(1, 1, 1)))
        layers += [AEKLResBlock(3, channels, norm_num_groups, norm_eps, channels),
                   nn.GroupNorm(norm_num_groups, channels, eps=norm_eps), nn.SiLU(),
                   nn.Conv3d(channels, latent_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class SliceAdaptor3D(nn.Module):
    """3D adaptor after a residual block of Dec2D: ``x + alpha * conv3d(silu(norm(x)))``.

    GroupNorm runs per slice (so results never depend on how many slices are decoded together);
    the 3x3x3 convolution mixes each slice with its neighbours. Its weights start at zero, so the
    adaptor is the identity at initialisation. Along D it pads (replicate) only at true volume ends
    (``pad_front`` / ``pad_back``); elsewhere it is a valid convolution and the stack loses a slice.
    """

    def __init__(self, channels: int, norm_num_groups: int = 8, norm_eps: float = 1e-6):
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=norm_eps)
        self.conv = nn.Conv3d(channels, channels, kernel_size=3, padding=(0, 1, 1))
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.alpha = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor, batch: int, pad_front: bool, pad_back: bool) -> torch.Tensor:
        n, c, h, w = x.shape
        k = n // batch
        y = F.silu(self.norm(x)).reshape(batch, k, c, h, w).transpose(1, 2)
        if pad_front or pad_back:
            y = F.pad(y, (0, 0, 0, 0, int(pad_front), int(pad_back)), mode="replicate")
        y = self.conv(y)  # (B, C, k', h, w), k' = k - 2 + pad_front + pad_back
        skip = x.reshape(batch, k, c, h, w).transpose(1, 2)[:, :, int(not pad_front) : k - int(not pad_back)]
        out = skip + self.alpha * y
        return out.transpose(1, 2).reshape(-1, c, h, w)


class MultiSliceDecoder(nn.Module):
    """Dec_M: Dec2D of a MONAI 2D ``AutoencoderKL`` plus a :class:`SliceAdaptor3D` after each of its
    residual blocks.

    ``forward(z)`` takes a stack of 2D latents (B, c, k, h, w) and returns (B, out_channels,
    k_out, 8h, 8w). With ``pad_front`` / ``pad_back`` True (one-shot decoding) k_out = k; each False
    side drops ``receptive_radius`` slices (their receptive field leaves the stack).
    ``use_adaptors=False`` runs the plain Dec2D slice by slice (the paper's "w/o Dec_M" ablation).
    """

    def __init__(self, autoencoder: AutoencoderKL, norm_num_groups: int = 8):
        super().__init__()
        if not isinstance(autoencoder, AutoencoderKL):
            raise TypeError(f"MultiSliceDecoder wraps a monai AutoencoderKL, got {type(autoencoder).__name__}")
        self.autoencoder = autoencoder
        self.latent_channels = autoencoder.post_quant_conv.conv.in_channels
        res_blocks = [b for b in autoencoder.decoder.blocks if isinstance(b, AEKLResBlock)]
        self.adaptors = nn.ModuleList(SliceAdaptor3D(b.out_channels, norm_num_groups) for b in res_blocks)

    @property
    def receptive_radius(self) -> int:
        """Slices on each side that influence one output slice (one per adaptor)."""
        return len(self.adaptors)

    def forward(self, z: torch.Tensor, pad_front: bool = True, pad_back: bool = True,
                use_adaptors: bool = True) -> torch.Tensor:
        if z.ndim != 5:
            raise ValueError(f"MultiSliceDecoder expects latents (B, c, k, h, w), got shape {tuple(z.shape)}")
        b, c, k, h, w = z.shape
        if c != self.latent_channels:
            raise ValueError(f"latent has {c} channels but the decoder expects {self.latent_channels}")
        lost = self.receptive_radius * (2 - int(pad_front) - int(pad_back)) if use_adaptors else 0
        if k - lost < 1:
            raise ValueError(f"a stack of {k} latent slices is too short: {lost} are consumed by the adaptors' halo")
        x = self.autoencoder.post_quant_conv(z.transpose(1, 2).reshape(b * k, c, h, w))
        i = 0
        for block in self.autoencoder.decoder.blocks:
            x = block(x)
            if use_adaptors and isinstance(block, AEKLResBlock):
                x = self.adaptors[i](x, b, pad_front, pad_back)
                i += 1
        return x.reshape(b, -1, *x.shape[1:]).transpose(1, 2)


class NonHolisticAutoencoder(nn.Module):
    """The whole NHAE: slice autoencoder (Enc2D/Dec2D), thumbnail encoder E_3D, f_sr and Dec_M.

    Buffers ``scale_factor`` (3D latent z) and ``slice_scale_factor`` (2D latents z_hr) hold
    1 / std of the training latents, computed after training and saved with the weights.

    Args:
        channels_2d: widths of the slice autoencoder levels (4 levels -> x8).
        channels_3d: widths of the thumbnail encoder levels (3 levels + x2 thumbnail -> x8).
        sr_channels: width inside f_sr.
        latent_channels: c.
        num_res_blocks: residual blocks per level (all networks).
        norm_num_groups: GroupNorm groups (all networks).
    """

    def __init__(self, channels_2d: Sequence[int] = (16, 32, 64, 64), channels_3d: Sequence[int] = (16, 32, 64),
                 sr_channels: int = 32, latent_channels: int = 4, num_res_blocks: int = 1, norm_num_groups: int = 8):
        super().__init__()
        if len(channels_2d) != 4:
            raise ValueError(f"the slice autoencoder needs 4 levels for x8 downsampling, "
                             f"got channels_2d={tuple(channels_2d)}")
        self.latent_channels = latent_channels
        ae = AutoencoderKL(spatial_dims=2, in_channels=1, out_channels=1, channels=tuple(channels_2d),
                           latent_channels=latent_channels, num_res_blocks=num_res_blocks,
                           norm_num_groups=norm_num_groups, attention_levels=(False,) * 4,
                           with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
        self.dec_m = MultiSliceDecoder(ae, norm_num_groups)
        self.thumbnail_encoder = ThumbnailEncoder(1, channels_3d, latent_channels, num_res_blocks, norm_num_groups)
        self.f_sr = UniaxialSuperResolution(latent_channels, sr_channels, 3, num_res_blocks, norm_num_groups)
        self.register_buffer("scale_factor", torch.ones(()))
        self.register_buffer("slice_scale_factor", torch.ones(()))

    @property
    def slice_ae(self) -> AutoencoderKL:
        return self.dec_m.autoencoder

    def stage_modules(self, stage: str) -> list[nn.Module]:
        """Modules trained in a stage: autoencoder2d -> Enc2D/Dec2D; nhae -> E_3D and f_sr; \
adaptors -> Dec_M adaptors."""
        ae = self.slice_ae
        table = {
            "autoencoder2d": [ae.encoder, ae.quant_conv_mu, ae.quant_conv_log_sigma, ae.post_quant_conv, ae.decoder],
            "nhae": [self.thumbnail_encoder, self.f_sr],
            "adaptors": [self.dec_m.adaptors],
        }
        if stage not in table:
            raise ValueError(f"stage must be one of {tuple(table)}, got {stage!r}")
        return table[stage]

    def trainable_parameters(self, stage: str) -> list[nn.Parameter]:
        """Freeze everything but the stage's modules; return their parameters (for the optimizer)."""
        self.requires_grad_(False)
        params: list[nn.Parameter] = []
        for m in self.stage_modules(stage):
            m.requires_grad_(True)
            params += list(m.parameters())
        return params

    def encode_slices(self, x: torch.Tensor) -> torch.Tensor:
        """Enc2D mean of every B-scan: (B, 1, D, H, W) -> (B, c, D, H/8, W/8) (unscaled)."""
        b, ch, d, h, w = x.shape
        mu, _ = self.slice_ae.encode(x.transpose(1, 2).reshape(b * d, ch, h, w))
        return mu.reshape(b, d, *mu.shape[1:]).transpose(1, 2)

    def encode_volume(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E_3D: (B, 1, D, H, W) -> (z_mu, z_sigma), each (B, c, D/8, H/8, W/8) (unscaled)."""
        return self.thumbnail_encoder(x)

    def reconstruct(self, x: torch.Tensor, use_adaptors: bool = True) -> torch.Tensor:
        """x -> E_3D -> f_sr -> Dec_M (one shot). For small volumes; use SlidingSliceDecoder for big ones."""
        z_mu, _ = self.encode_volume(x)
        return self.dec_m(self.f_sr(z_mu), use_adaptors=use_adaptors)
