"""Sampling stages of CA-LDM and of the 3D latent diffusion baselines (paper Sec. 2.2, Table 1).

A stage is a callable ``stage(x, network, ctx) -> x``: it takes the previous stage's tensor (None for
the first), the composed network (``CascadedLDM`` or ``LatentDiffusionModel``) whose part it names by
attribute, and the ``SamplingContext`` (seed, random stream). ``CascadedLatentDiffusionInferer`` runs
a list of them; an ablation or a baseline is another list in a config, never a flag in a class.

CA-LDM: ``GlobalLatentSampler`` (Diff_3D) -> ``UniaxialSuperResolution`` (f_sr) -> ``SliceRefiner``
(Diff_slice) -> ``DecodeSlices`` (Dec_M) [-> ``DrawSpeckle``]. Baselines: ``GlobalLatentSampler`` ->
``DecodeSlices`` (LDM3D, plain Dec2D) or ``DecodeVolume`` (Medical Diffusion, 3D AutoencoderKL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from monai.networks.schedulers import DDIMScheduler

from ..data.latents import neighbour_condition
from .ddim import WhiteNoise, check_steps, ddim_sample, predict_noise
from .sliding_slice import SlidingSliceDecoder

SPECKLE_STREAM_OFFSET = 2**40  # the speckle model's random stream: seed + 2^40, independent of the diffusion stream


@dataclass
class SamplingContext:
    """What the stages of one sample share: its seed, the CPU random stream every stage draws from in
    order, and optional conditions (label-guided synthesis)."""

    seed: int
    generator: torch.Generator = field(init=False)
    conditions: dict = field(default_factory=dict)

    def __post_init__(self):
        self.generator = torch.Generator(device="cpu").manual_seed(int(self.seed))


def _part(network: torch.nn.Module, name: str) -> torch.nn.Module:
    if not hasattr(network, name):
        raise ValueError(f"this stage needs the network part {name!r}, but {type(network).__name__} has none")
    return getattr(network, name)


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


class GlobalLatentSampler:
    """Diff_3D (or a baseline's 3D diffusion model): noise (1, *latent_shape) -> DDIM -> latent z.

    Args:
        scheduler: MONAI ``DDIMScheduler``. latent_shape: (c, D', H', W').
        num_inference_steps: DDIM steps. eta: DDIM eta (>= 0). amp: autocast on CUDA.
        part: attribute of the composed network holding the UNet ("diffusion3d"; "diffusion" for baselines).
        unscale: divide z by the UNet's ``scale_factor`` (baselines' ``ScaledDiffusionUNet``); CA-LDM
            leaves z in Diff_3D units and ``UniaxialSuperResolution`` divides by the NHAE's factor.
    """

    def __init__(self, scheduler: DDIMScheduler, latent_shape: Sequence[int], num_inference_steps: int = 200,
                 eta: float = 0.0, amp: bool = False, part: str = "diffusion3d", unscale: bool = False,
                 progress: bool = True):
        if len(latent_shape) != 4 or min(int(s) for s in latent_shape) < 1:
            raise ValueError(f"latent_shape must be (c, D', H', W') with positive sizes, got {tuple(latent_shape)}")
        self.steps, self.eta = check_steps(scheduler, num_inference_steps, eta)
        self.scheduler, self.latent_shape = scheduler, tuple(int(s) for s in latent_shape)
        self.amp, self.part, self.unscale, self.progress = amp, part, unscale, progress

    def output_size(self, size=None) -> tuple[int, int, int]:
        """(D', H', W') of the latent this stage draws."""
        return self.latent_shape[1:]

    def __call__(self, x, network: torch.nn.Module, ctx: SamplingContext) -> torch.Tensor:
        unet = _part(network, self.part)
        device = _device(unet)
        noise = WhiteNoise()
        z = noise.draw((1, *self.latent_shape), ctx.generator).to(device)
        cond = ctx.conditions.get("latent")
        z = ddim_sample(lambda v, t: predict_noise(unet, v, t, cond, self.amp), self.scheduler, z, self.steps, self.eta,
                        noise, ctx.generator, "Diff_3D", self.progress)
        return z.float() / unet.scale_factor if self.unscale else z


class UniaxialSuperResolution:
    """f_sr of the NHAE: Diff_3D's z (1, c, D/8, h, w) -> (c, D, h, w) in Enc2D latent units."""

    def __init__(self, part: str = "nhae"):
        self.part = part

    def output_size(self, size) -> tuple[int, int, int]:
        return (size[0] * 8, size[1], size[2])

    def __call__(self, z: torch.Tensor, network: torch.nn.Module, ctx: SamplingContext) -> torch.Tensor:
        nhae = _part(network, self.part)
        return nhae.f_sr(z / nhae.scale_factor)[0]


class SliceRefiner:
    """Diff_slice: every B-scan latent re-sampled with DDIM, conditioned on f_sr(z)_i (and its neighbours).

    Args:
        scheduler, num_inference_steps, eta, amp: as in ``GlobalLatentSampler``.
        slice_batch: B-scans per network call (and per sampling group with white noise).
        neighbours: condition slice i on f_sr(z) slices i-n..i+n (must match the refiner's training).
        noise: ``WhiteNoise`` (the paper) or ``CorrelatedNoise`` (noise correlated along D).
    """

    def __init__(self, scheduler: DDIMScheduler, num_inference_steps: int = 200, eta: float = 0.0,
                 slice_batch: int = 128, neighbours: int = 0, noise: WhiteNoise | None = None, amp: bool = False,
                 part: str = "refiner", autoencoder: str = "nhae", progress: bool = True):
        self.steps, self.eta = check_steps(scheduler, num_inference_steps, eta)
        if int(slice_batch) < 1:
            raise ValueError(f"slice_batch must be >= 1, got {slice_batch}")
        if int(neighbours) < 0:
            raise ValueError(f"neighbours must be >= 0, got {neighbours}")
        self.scheduler, self.slice_batch, self.neighbours = scheduler, int(slice_batch), int(neighbours)
        self.noise = noise if noise is not None else WhiteNoise()
        self.amp, self.part, self.autoencoder, self.progress = amp, part, autoencoder, progress

    def output_size(self, size) -> tuple[int, int, int]:
        return tuple(size)

    def __call__(self, z_sr: torch.Tensor, network: torch.nn.Module, ctx: SamplingContext) -> torch.Tensor:
        refiner, nhae = _part(network, self.part), _part(network, self.autoencoder)
        s2 = nhae.slice_scale_factor
        cond = neighbour_condition(z_sr * s2, self.neighbours)  # (D, c', h, w)
        if "slices" in ctx.conditions:
            cond = torch.cat([cond, ctx.conditions["slices"].to(cond.device)], dim=1)
        channels, d = z_sr.shape[0], cond.shape[0]

        def predict(x: torch.Tensor, t: int, rows: range) -> torch.Tensor:
            return torch.cat([predict_noise(refiner, x[a - rows.start : a - rows.start + self.slice_batch], t,
                                            cond[a : min(a + self.slice_batch, rows.stop)], self.amp)
                              for a in range(rows.start, rows.stop, self.slice_batch)])

        refined = []
        for rows in self.noise.groups(d, self.slice_batch):
            x = self.noise.draw((len(rows), channels, *cond.shape[2:]), ctx.generator).to(cond.device)
            refined.append(ddim_sample(lambda v, t, r=rows: predict(v, t, r), self.scheduler, x, self.steps, self.eta,
                                       self.noise, ctx.generator, f"Diff_slice {rows.start}/{d}", self.progress))
        return torch.cat(refined).transpose(0, 1) / s2


class DecodeSlices:
    """Dec_M (or plain Dec2D with ``decoder.mode == "slice2d"``) over a latent stack (c, D, h, w) ->
    volume (1, D, H, W) in [-1, 1], streamed chunk by chunk by the ``SlidingSliceDecoder``.

    ``chunk_steps`` (e.g. ``DrawSpeckle``, ``Quantize``) run on every decoded chunk of B-scans in order, so
    the whole volume is only ever held in their output form (uint8 after ``Quantize``: one byte per voxel,
    the peak memory of an inference then barely grows with D)."""

    def __init__(self, decoder: SlidingSliceDecoder, part: str = "nhae", chunk_steps: Sequence = ()):
        self.decoder, self.part, self.chunk_steps = decoder, part, list(chunk_steps or [])

    def output_size(self, size) -> tuple[int, int, int]:
        return (size[0], size[1] * 8, size[2] * 8)

    def __call__(self, z: torch.Tensor, network: torch.nn.Module, ctx: SamplingContext) -> torch.Tensor:
        steps = [s.for_volume(network, ctx) for s in self.chunk_steps]

        def post(piece: torch.Tensor) -> torch.Tensor:
            piece = piece.float().cpu().clamp(-1, 1)
            for step in steps:
                piece = step(piece)
            return piece

        return self.decoder(z.float(), _part(network, self.part).dec_m, post=post)


class DecodeVolume:
    """A holistic 3D autoencoder's decoder on the whole latent (1, c, D/8, H/8, W/8) -> (1, D, H, W) in [-1, 1]
    (Medical Diffusion baseline: its memory grows with D*H*W, the point of the comparison)."""

    def __init__(self, part: str = "autoencoder", amp: bool = False):
        self.part, self.amp = part, amp

    def output_size(self, size) -> tuple[int, int, int]:
        return tuple(s * 8 for s in size)

    def __call__(self, z: torch.Tensor, network: torch.nn.Module, ctx: SamplingContext) -> torch.Tensor:
        with torch.autocast("cuda", enabled=self.amp and z.is_cuda):
            return _part(network, self.part).decode(z)[0].float().clamp(-1, 1)


class DrawSpeckle:
    """The fitted ``SpeckleModel`` (a bundle addition, not in the paper) drawn in place onto the decoded
    volume, per B-scan chunk, from its own random stream (seed + 2^40): a seed's anatomy does not
    depend on whether speckle is drawn."""

    def __init__(self, chunk_size: int = 16, part: str = "speckle"):
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size, self.part = int(chunk_size), part

    def output_size(self, size) -> tuple[int, int, int]:
        return tuple(size)

    def __call__(self, volume: torch.Tensor, network: torch.nn.Module, ctx: SamplingContext) -> torch.Tensor:
        return self.for_volume(network, ctx)(volume)

    def for_volume(self, network: torch.nn.Module, ctx: SamplingContext):
        """The speckle of one volume as a chunk step (``DecodeSlices(chunk_steps=...)``): called on its chunks of
        B-scans in order it draws what one call on the whole volume draws (when chunks hold whole multiples
        of ``chunk_size`` B-scans)."""
        speckle = _part(network, self.part)  # an unfitted model refuses to draw, naming the fix
        gen = torch.Generator(device="cpu").manual_seed(int(ctx.seed) + SPECKLE_STREAM_OFFSET)
        return lambda x: speckle.to(x.device)(x.contiguous(), gen, chunk=self.chunk_size, inplace=True)


class Quantize:
    """Chunk step of ``DecodeSlices``: [-1, 1] float -> uint8 0..255, exactly as the writer quantises
    (``bundle.transforms.to_uint8``), so the decoded volume is held as one byte per voxel."""

    def for_volume(self, network: torch.nn.Module, ctx: SamplingContext):
        from ..transforms.synthesis import to_uint8

        return lambda x: torch.from_numpy(to_uint8(x))


def output_size(stages: Sequence) -> tuple[int, int, int]:
    """(D, H, W) of the volume a stage list produces."""
    size = None
    for s in stages:
        size = s.output_size(size)
    return tuple(int(v) for v in size)


def check_output_size(stages: Sequence, image_size: Sequence[int]) -> tuple[int, int, int]:
    """Validate ``image_size`` (three positive multiples of 8, as ``bundle.data.prepare.parse_size``)
    against what ``stages`` produce."""
    from ..data.prepare import parse_size

    try:
        size = parse_size(list(image_size))
    except (TypeError, ValueError) as e:
        raise ValueError(f"image_size {image_size!r} cannot be synthesized: {e}") from None
    expected = output_size(stages)
    if size != expected:
        raise ValueError(f"image_size {size} does not match what the sampling stages produce ({expected})")
    return size
