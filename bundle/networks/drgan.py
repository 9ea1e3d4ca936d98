"""DR-GAN (Zhou et al., IEEE JBHI 2020): fundus photographs from a lesion / anatomy mask map and a DR grade.

No public implementation exists; this one is assembled from the paper's description
(``specs/fundus.md``) with MONAI blocks where they fit:

- :class:`DRGANGenerator`: a global generator G_m at half resolution (encoder k7 conv + three
  stride-2 convs, residual blocks, three :class:`SynthesisBlock` s) and a local enhancer G_l at
  full resolution whose up path starts from the element-wise sum of its own encoder features and
  G_m's last synthesis features. ``stage="global"`` trains and returns G_m's half-resolution image;
  ``stage="local"`` the full one. A small grade head on G_m's encoder predicts the grade implied
  by the masks (used when the user asks for none).
- :class:`SynthesisBlock`: features + noise (C/4 channels) -> 1x1 conv -> AdaIN(grading code
  through the mapping network) -> concat(encoder skip, resized masks) -> conv -> spatial-and-channel
  attention -> upsampling by nearest resize + 3x3 conv (no transposed convolution, so no
  checkerboard).
- :class:`SpatialChannelAttention`: DANet position attention (query/key at C/8, ``x + gamma * out``,
  gamma starts at 0) and channel attention, each followed by a conv and summed. Keys and values are
  average-pooled to at most ``max_tokens`` positions, so the attention map costs
  HW x ``max_tokens`` instead of HW x HW (the paper's full map is 2.5 GiB at 160 x 160 in fp32).
- :class:`MultiScaleDiscriminator`: three :class:`DRGANDiscriminator` s on the full, 1/2 and 1/4
  resolution concat(mask map, image); four k4/s2 convs with LeakyReLU 0.2 (instance norm after
  the first), a patch real/fake map and a grade-classification head on the pooled last features.
- :class:`FundusGrader`: MONAI ``ResNet`` (2D, basic blocks) grading 0-4, whose pooled penultimate
  features give the per-grade Gaussians of adaptive grading manipulation (AGM, buffers stored with
  the weights) and the perceptual loss when no VGG-19 weights are given.
"""

from __future__ import annotations

import logging

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.nets import ResNet
from torch import nn

from .fundus import strided_discriminator_layers

MASK_CHANNELS = ("vessels", "disc", "ma", "he", "ex", "se", "laser", "nv", "fov")
"""Channels of the DR-GAN mask map, in order: vessel tree (artery or vein), optic disc, the six
lesion types of ``bundle.data.fundus_phantom.LESIONS`` and the field of view."""
NUM_GRADES = 5
STAGES = ("global", "local")


def _conv(c_in: int, c_out: int, k: int = 3, stride: int = 1, norm=True, act=True) -> Convolution:
    return Convolution(2, c_in, c_out, strides=stride, kernel_size=k, act="RELU" if act else None,
                       norm="INSTANCE" if norm else None, conv_only=not (norm or act), padding=k // 2,
                       bias=not norm)


class UpConv(nn.Sequential):
    """x2 nearest-neighbour resize then a 3x3 convolution (+ instance norm + ReLU): upsampling
    without the checkerboard of transposed convolutions."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), _conv(c_in, c_out))


class ResidualBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_conv(c, c), _conv(c, c, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MappingNetwork(nn.Sequential):
    """Grading code (B, code_size) -> style (B, style_size): ``layers`` linear layers with LeakyReLU 0.2."""

    def __init__(self, code_size: int, style_size: int, layers: int = 4):
        mods, c = [], code_size
        for _ in range(layers):
            mods += [nn.Linear(c, style_size), nn.LeakyReLU(0.2)]
            c = style_size
        super().__init__(*mods)


class AdaIN(nn.Module):
    """Instance normalisation whose scale and shift come from the style vector: (1 + gamma) * IN(x) + beta."""

    def __init__(self, channels: int, style_size: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(style_size, 2 * channels)
        nn.init.zeros_(self.affine.weight)
        nn.init.zeros_(self.affine.bias)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(style)[:, :, None, None].chunk(2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class SpatialChannelAttention(nn.Module):
    """DANet position + channel attention, summed after one 3x3 conv each (residual, gammas start at 0).

    Position attention pools keys and values to at most ``max_tokens`` positions (average pooling
    by the smallest power of two that gets there); at or below that size it is the exact HW x HW
    attention of the paper.
    """

    def __init__(self, channels: int, reduction: int = 8, max_tokens: int = 1024):
        super().__init__()
        cq = max(channels // reduction, 1)
        self.query, self.key = nn.Conv2d(channels, cq, 1), nn.Conv2d(channels, cq, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma_p, self.gamma_c = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.conv_p, self.conv_c = _conv(channels, channels), _conv(channels, channels)
        self.max_tokens = int(max_tokens)

    def pool_factor(self, h: int, w: int) -> int:
        f = 1
        while (h // f) * (w // f) > self.max_tokens and min(h, w) // f > 1:
            f *= 2
        return f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        f = self.pool_factor(h, w)
        kv = F.avg_pool2d(x, f) if f > 1 else x
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, HW, Cq)
        k = self.key(kv).flatten(2)  # (B, Cq, N)
        v = self.value(kv).flatten(2)  # (B, C, N)
        attn = torch.softmax(q @ k, dim=-1)  # (B, HW, N)
        pos = x + self.gamma_p * (v @ attn.transpose(1, 2)).view(b, c, h, w)
        flat = x.flatten(2)
        energy = flat @ flat.transpose(1, 2)  # (B, C, C)
        energy = energy.amax(dim=-1, keepdim=True) - energy  # DANet's channel attention uses max - energy
        chan = x + self.gamma_c * (torch.softmax(energy, dim=-1) @ flat).view(b, c, h, w)
        return self.conv_p(pos) + self.conv_c(chan)


class SynthesisBlock(nn.Module):
    """One up step of G_m (see the module docstring); (B, c_in, r, r) -> (B, c_out, 2r, 2r)."""

    def __init__(self, c_in: int, c_skip: int, c_out: int, mask_channels: int, style_size: int,
                 attention: bool = True, max_tokens: int = 1024):
        super().__init__()
        self.noise_channels = max(c_in // 4, 1)
        self.mix = nn.Conv2d(c_in + self.noise_channels, c_in, 1)
        self.adain = AdaIN(c_in, style_size)
        self.fuse = _conv(c_in + c_skip + mask_channels, c_in)
        self.attention = SpatialChannelAttention(c_in, max_tokens=max_tokens) if attention else nn.Identity()
        self.up = UpConv(c_in, c_out)

    def forward(self, x, skip, masks, style, noise=None):
        if noise is None:
            noise = torch.randn(x.shape[0], self.noise_channels, *x.shape[2:], device=x.device, dtype=x.dtype)
        h = self.adain(self.mix(torch.cat([x, noise], 1)), style)
        m = F.interpolate(masks, size=x.shape[2:], mode="area")
        h = self.attention(self.fuse(torch.cat([h, skip, m], 1)))
        return self.up(h)


class DRGANGenerator(nn.Module):
    """(mask map (B, M, S, S) in {0, 1}, grading code (B, code_size)) -> image (B, 3, S', S') in [-1, 1].

    S' = S for ``stage="local"``, S / 2 for ``stage="global"`` (G_m alone). S must be a multiple
    of ``2 ** (len(channels) + 1)``.

    Args:
        mask_channels: M (default the 9 of :data:`MASK_CHANNELS`).
        channels: G_m encoder widths, k7 conv then one per stride-2 level (paper: 64 .. 512).
        local_channels: G_l widths at full and half resolution.
        num_res_blocks: residual blocks at G_m's bottleneck (paper: 7).
        code_size / style_size / mapping_layers: grading code, style vector, mapping depth (paper: 4).
        attention: SCA in every synthesis block; ``max_tokens`` bounds the pooled keys/values.
        stage: "global" or "local" (switch with :meth:`set_stage`).
    """

    def __init__(self, mask_channels: int = len(MASK_CHANNELS), channels: Sequence[int] = (16, 32, 64, 128),
                 local_channels: Sequence[int] = (8, 16), num_res_blocks: int = 7, code_size: int = 128,
                 style_size: int = 128, mapping_layers: int = 4, attention: bool = True, max_tokens: int = 1024,
                 stage: str = "local"):
        super().__init__()
        ch = list(channels)
        if len(ch) < 2 or len(local_channels) != 2 or local_channels[1] != ch[0]:
            raise ValueError(f"need >= 2 G_m widths and two G_l widths whose second equals channels[0]; got "
                             f"{channels}, {local_channels}")
        self.mask_channels, self.code_size = int(mask_channels), int(code_size)
        self.stride = 2 ** len(ch)  # G_m's levels below half resolution, times the half-resolution step
        self.encoder = nn.ModuleList([_conv(mask_channels, ch[0], k=7)] +
                                     [_conv(a, b, stride=2) for a, b in zip(ch[:-1], ch[1:])])
        self.res = nn.Sequential(*[ResidualBlock(ch[-1]) for _ in range(num_res_blocks)])
        self.mapping = MappingNetwork(code_size, style_size, mapping_layers)
        rev = ch[::-1]  # e.g. 128, 64, 32, 16
        self.synthesis = nn.ModuleList([
            SynthesisBlock(rev[i], rev[i], rev[i + 1], mask_channels, style_size, attention, max_tokens)
            for i in range(len(rev) - 1)])
        self.to_rgb_global = nn.Sequential(_conv(ch[0], 3, k=7, norm=False, act=False), nn.Tanh())
        self.grade_head = nn.Linear(ch[-1], NUM_GRADES)
        lc = list(local_channels)
        self.local_encoder = nn.Sequential(_conv(mask_channels, lc[0], k=7), _conv(lc[0], lc[1], stride=2))
        self.local_up = nn.Sequential(_conv(lc[1], lc[1]), UpConv(lc[1], lc[0]))
        self.to_rgb_local = nn.Sequential(_conv(lc[0], 3, k=7, norm=False, act=False), nn.Tanh())
        self.set_stage(stage)

    def set_stage(self, stage: str) -> DRGANGenerator:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.stage = stage
        return self

    def noise_shapes(self, size: int) -> list[tuple[int, int, int]]:
        """(channels, h, w) of the noise input of each synthesis block for a size x size mask map."""
        r = size // 2 // 2 ** (len(self.encoder) - 1)
        shapes = []
        for blk in self.synthesis:
            shapes.append((blk.noise_channels, r, r))
            r *= 2
        return shapes

    def make_noise(self, batch_size: int, size: int, generator: torch.Generator | None = None,
                   device=None) -> list[torch.Tensor]:
        """Noise inputs drawn on the CPU from ``generator`` (same seed, same noise on any device)."""
        return [torch.randn(batch_size, *s, generator=generator).to(device) for s in self.noise_shapes(size)]

    def check_masks(self, masks: torch.Tensor) -> None:
        if masks.ndim != 4 or masks.shape[1] != self.mask_channels:
            raise ValueError(f"mask map must be (B, {self.mask_channels}, S, S) with the channels {MASK_CHANNELS}, "
                             f"got shape {tuple(masks.shape)}")
        s = masks.shape[-1]
        if masks.shape[-2] != s or s % self.stride:
            raise ValueError(f"mask map size {tuple(masks.shape[-2:])} must be square and a multiple of the "
                             f"generator's stride {self.stride}")

    def encode(self, masks: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """G_m's encoder on the half-resolution masks: (skip features per level, bottleneck features)."""
        h = F.avg_pool2d(masks, 2)
        skips = []
        for layer in self.encoder:
            h = layer(h)
            skips.append(h)
        return skips, self.res(h)

    def predict_grade(self, masks: torch.Tensor) -> torch.Tensor:
        """Grade logits (B, 5) implied by the mask map (the paper's test-time grade head)."""
        self.check_masks(masks)
        return self.grade_head(self.encode(masks)[1].mean(dim=(2, 3)))

    def forward(self, masks: torch.Tensor, code: torch.Tensor, noise: Sequence[torch.Tensor] | None = None,
                return_grade: bool = False):
        self.check_masks(masks)
        if code.ndim != 2 or code.shape != (masks.shape[0], self.code_size):
            raise ValueError(f"grading code must be ({masks.shape[0]}, {self.code_size}), got {tuple(code.shape)}")
        skips, h = self.encode(masks)
        grade_logits = self.grade_head(h.mean(dim=(2, 3)))
        style = self.mapping(code)
        half = F.avg_pool2d(masks, 2)
        noise = list(noise) if noise is not None else [None] * len(self.synthesis)
        for i, blk in enumerate(self.synthesis):
            h = blk(h, skips[-1 - i], half, style, noise[i])
        if self.stage == "global":
            img = self.to_rgb_global(h)
        else:
            img = self.to_rgb_local(self.local_up(self.local_encoder(masks) + h))
        return (img, grade_logits) if return_grade else img


class DRGANDiscriminator(nn.Module):
    """concat(mask map, image) -> (features per layer, patch logits (B, 1, h, w), grade logits (B, 5))."""

    def __init__(self, in_channels: int, channels: Sequence[int] = (32, 64, 128, 256)):
        super().__init__()
        self.layers = nn.ModuleList(strided_discriminator_layers(in_channels, channels, "INSTANCE"))
        self.patch = nn.Conv2d(channels[-1], 1, 3, padding=1)
        self.grade = nn.Linear(channels[-1], NUM_GRADES)

    def forward(self, x: torch.Tensor):
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats, self.patch(x), self.grade(x.mean(dim=(2, 3)))


class MultiScaleDiscriminator(nn.Module):
    """``num_scales`` :class:`DRGANDiscriminator` s on the input downsampled by 1, 2, 4, ...; returns a list
    of their outputs (full resolution first)."""

    def __init__(self, mask_channels: int = len(MASK_CHANNELS), channels: Sequence[int] = (32, 64, 128, 256),
                 num_scales: int = 3):
        super().__init__()
        self.discriminators = nn.ModuleList([DRGANDiscriminator(mask_channels + 3, channels)
                                             for _ in range(num_scales)])

    def forward(self, masks: torch.Tensor, images: torch.Tensor) -> list:
        if masks.shape[-2:] != images.shape[-2:]:
            masks = F.interpolate(masks, size=images.shape[-2:], mode="area")
        x = torch.cat([masks, images], 1)
        out = []
        for i, d in enumerate(self.discriminators):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(d(x))
        return out


class FundusGrader(nn.Module):
    """DR grading classifier: MONAI ``ResNet`` (2D basic blocks) on images in [-1, 1] resized to
    ``input_size``; ``forward`` -> grade logits (B, 5); ``features`` -> pooled penultimate features;
    ``intermediate`` -> the four stage outputs (perceptual loss).

    Buffers ``grade_mean`` / ``grade_var`` (5, F) hold the per-grade Gaussians of adaptive grading
    manipulation (:meth:`fit_grade_gaussians`); :meth:`sample_code` draws grading codes from them.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 128), layers: Sequence[int] = (1, 1, 1, 1),
                 input_size: int = 256):
        super().__init__()
        self.net = ResNet(block="basic", layers=list(layers), block_inplanes=list(channels), spatial_dims=2,
                          n_input_channels=3, conv1_t_size=7, conv1_t_stride=2, feed_forward=False)
        self.head = nn.Linear(channels[-1], NUM_GRADES)
        self.input_size, self.feature_size = int(input_size), int(channels[-1])
        self.register_buffer("grade_mean", torch.zeros(NUM_GRADES, channels[-1]))
        self.register_buffer("grade_var", torch.ones(NUM_GRADES, channels[-1]))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"grader expects (B, 3, H, W) RGB images, got {tuple(x.shape)}")
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            mode = "area" if x.shape[-1] > self.input_size else "bilinear"
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode=mode)
        return x

    def intermediate(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = self.net
        x = self._resize(x)
        x = n.maxpool(n.act(n.bn1(n.conv1(x))))
        outs = []
        for layer in (n.layer1, n.layer2, n.layer3, n.layer4):
            x = layer(x)
            outs.append(x)
        return outs

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate(x)[-1].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def fit_grade_gaussians(self, features: torch.Tensor, grades: torch.Tensor, min_var: float = 1e-4) -> None:
        """Per-grade mean and diagonal variance of penultimate ``features`` (N, F) with ``grades`` (N,)."""
        grades = grades.long().flatten()
        if len(features) < 2:
            raise ValueError(f"fitting the grade Gaussians needs at least 2 images, got {len(features)}")
        pooled_mean, pooled_var = features.mean(0), features.var(0)
        for g in range(NUM_GRADES):
            f = features[grades == g]
            if len(f) < 2:  # too few images of this grade: fall back to the pooled statistics (logged)
                logging.getLogger("bundle.drgan").warning(
                    "grade %d has %d training image(s); its Gaussian uses the pooled variance", g, len(f))
            self.grade_mean[g] = f.mean(0) if len(f) else pooled_mean
            self.grade_var[g] = (f.var(0) if len(f) >= 2 else pooled_var).clamp(min=min_var)
        self.fitted.fill_(True)

    def sample_code(self, grades: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Grading codes (B, F) from the Gaussians of ``grades`` (B,), noise drawn on the CPU from ``generator``."""
        if not bool(self.fitted):
            raise RuntimeError("the grader's grade Gaussians are not fitted "
                               "(configs/train_drgan_grader.json fits them)")
        grades = torch.as_tensor(grades).long().flatten()
        if len(grades) and (grades.min() < 0 or grades.max() >= NUM_GRADES):
            raise ValueError(f"grades must be in 0..{NUM_GRADES - 1}, got {grades.tolist()}")
        eps = torch.randn(len(grades), self.feature_size, generator=generator).to(self.grade_mean.device)
        g = grades.to(self.grade_mean.device)
        return self.grade_mean[g] + self.grade_var[g].sqrt() * eps


def onehot_code(grades: torch.Tensor, code_size: int) -> torch.Tensor:
    """The ablation without AGM: the grade as a one-hot code (zero-padded to ``code_size``)."""
    grades = torch.as_tensor(grades).long().flatten()
    return F.one_hot(grades, code_size).float()
