"""CA-LDM sampling (paper Sec. 2.2): noise -> Diff_3D (DDIM) -> f_sr -> slice refiner (DDIM) -> Dec_M.

MONAI's ``LatentDiffusionInferer`` samples one latent and decodes it whole; the cascade needs a
second, slice-wise diffusion conditioned on the super-resolved 3D latent and a decoder that
streams B-scans (``SlidingSliceDecoder``). Both diffusion stages use MONAI's ``DDIMScheduler``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.schedulers import DDIMScheduler

from ..data.latents import neighbour_condition
from ..io import as_bool
from ..networks.nhae import NonHolisticAutoencoder
from ..networks.speckle import SpeckleModel
from .sliding_slice import SlidingSliceDecoder


def _ddim(model, scheduler: DDIMScheduler, x: torch.Tensor, steps: int, eta: float, cond: torch.Tensor | None,
          generator: torch.Generator, desc: str, progress: bool, amp: bool) -> torch.Tensor:
    from tqdm import tqdm

    scheduler.set_timesteps(steps, device=x.device)
    for t in tqdm(scheduler.timesteps, desc=desc, disable=not progress, leave=False):
        eps = _predict_noise(model, x, int(t), cond, amp)
        noise_gen = generator if eta > 0 else None
        x, _ = scheduler.step(eps, int(t), x, eta=eta, generator=noise_gen)
    return x


def _predict_noise(model, x: torch.Tensor, t: int, cond: torch.Tensor | None, amp: bool) -> torch.Tensor:
    """The UNet's noise prediction for ``x`` at timestep ``t`` (condition concatenated; autocast on CUDA only), float32."""
    inp = x if cond is None else torch.cat([x, cond], dim=1)
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    with torch.autocast("cuda", enabled=amp and x.is_cuda):
        return model(inp, timesteps=tt).float()


def check_sampler_args(scheduler: DDIMScheduler, latent_shape: Sequence[int], num_inference_steps: int) -> tuple[int, ...]:
    """Validate a sampler's latent shape (c, D', H', W') and step count; returns the shape as ints."""
    if len(latent_shape) != 4 or min(latent_shape) < 1:
        raise ValueError(f"latent_shape must be (c, D', H', W') with positive sizes, got {tuple(latent_shape)}")
    if num_inference_steps < 1 or num_inference_steps > scheduler.num_train_timesteps:
        raise ValueError(f"num_inference_steps must be in 1..{scheduler.num_train_timesteps}, got {num_inference_steps}")
    return tuple(int(s) for s in latent_shape)


def ddim_step(scheduler: DDIMScheduler, eps: torch.Tensor, t: int, x: torch.Tensor, eta: float, noise: torch.Tensor | None):
    """One DDIM update (Song et al. 2021, eq. 12 with sigma_t(eta), eq. 16) with caller-supplied noise.

    Same arithmetic as ``DDIMScheduler.step`` for epsilon prediction without clipping (tested), but
    the noise is an argument, so the refiner can use noise that is correlated across B-scans."""
    if scheduler.prediction_type != "epsilon" or scheduler.clip_sample:
        raise ValueError("ddim_step supports epsilon prediction without clip_sample only")
    prev = t - scheduler.num_train_timesteps // scheduler.num_inference_steps
    a_t = scheduler.alphas_cumprod[t].to(x.device)
    a_prev = (scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod).to(x.device)
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    std = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
    out = a_prev.sqrt() * x0 + (1 - a_prev - std**2).sqrt() * eps
    return out if eta <= 0 or noise is None else out + std * noise


def correlated_noise(shape: Sequence[int], sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise of ``shape`` (D, ...) correlated along the first axis: white noise of
    D + 2r slices filtered with a Gaussian of ``sigma`` slices whose squared weights sum to one, so
    every slice keeps unit variance and neighbours at distance k correlate by exp(-k^2 / (4 sigma^2))."""
    if sigma <= 0:
        return torch.randn(tuple(shape), generator=generator)
    r = max(1, int(round(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.square().sum().sqrt()
    white = torch.randn((shape[0] + 2 * r, *shape[1:]), generator=generator)
    return sum(k[j] * white[j : j + shape[0]] for j in range(2 * r + 1))


class CascadedLatentDiffusionInferer:
    """Sample OCT volumes with the CA-LDM cascade.

    Args:
        scheduler: DDIM scheduler (shared settings for both stages; its state is reset per stage).
        decoder: sliding-slice decoder (mode "stack" or "window"; "slice2d" is the no-Dec_M ablation).
        latent_shape: (c, D/8, H/8, W/8) of the 3D latent.
        num_inference_steps: DDIM steps per stage.
        eta: DDIM eta (0 = deterministic given the initial noise).
        slice_batch: B-scans refined together.
        use_refiner: False -> "NHAE + Diff_3D" ablation (decode f_sr(z) directly).
        use_dec_m: False -> plain Dec2D ("w/o Dec_M" ablation).
        neighbours: condition each slice on f_sr(z) slices i-n..i+n (must match the refiner's training).
        noise_correlation: Gaussian sigma, in B-scans, of the correlation of the refiner's noise along D
            (initial and per-step noise); 0 = independent noise per B-scan, as in the paper.
        speckle: optional fitted ``SpeckleModel`` drawing speckle onto the decoded volume (not in the paper;
            its own random stream, seeded from the sample seed, so the rest of the sample is unchanged).
        progress: tqdm bars per stage. amp: autocast on CUDA only.
    """

    def __init__(self, scheduler: DDIMScheduler, decoder: SlidingSliceDecoder, latent_shape: Sequence[int],
                 num_inference_steps: int = 200, eta: float = 0.0, slice_batch: int = 128, use_refiner: bool = True,
                 use_dec_m: bool = True, neighbours: int = 0, noise_correlation: float = 0.0,
                 speckle: SpeckleModel | None = None, progress: bool = True, amp: bool = False):
        latent_shape = check_sampler_args(scheduler, latent_shape, num_inference_steps)
        if slice_batch < 1:
            raise ValueError(f"slice_batch must be >= 1, got {slice_batch}")
        self.scheduler, self.decoder = scheduler, decoder
        self.latent_shape = latent_shape
        self.steps, self.eta, self.slice_batch = int(num_inference_steps), float(eta), int(slice_batch)
        if not noise_correlation >= 0:
            raise ValueError(f"noise_correlation must be >= 0 (B-scans), got {noise_correlation}")
        self.use_refiner, self.use_dec_m = as_bool(use_refiner, "use_refiner"), as_bool(use_dec_m, "use_dec_m")
        self.neighbours = int(neighbours)
        self.noise_correlation = float(noise_correlation)
        if speckle is not None and not bool(speckle.fitted):
            raise ValueError("the speckle model is not fitted: run configs/fit_speckle.json or set use_speckle false")
        self.speckle, self.progress, self.amp = speckle, progress, amp
        if not self.use_dec_m:
            self.decoder = SlidingSliceDecoder("slice2d", chunk_size=decoder.chunk_size, output_dtype=decoder.output_dtype)

    @torch.no_grad()
    def sample(self, nhae: NonHolisticAutoencoder, diffusion3d: torch.nn.Module, refiner: torch.nn.Module | None,
               seed: int = 0, label_3d: torch.Tensor | None = None, label_slices: torch.Tensor | None = None) -> torch.Tensor:
        """One volume (1, D, H, W) in [-1, 1] (float, on the decoder's output device).

        ``label_3d`` (1, l, D', H', W') and ``label_slices`` (D, l, h, w) are optional extra conditions
        concatenated to the networks' inputs (networks built with ``label_channels = l``), for
        label-guided synthesis; without them the networks must have been built with no label channels.
        """
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        z_sr = self._global_latent(nhae, diffusion3d, gen, label_3d)
        if self.use_refiner:
            z_sr = self._refine(nhae, refiner, z_sr, gen, label_slices)
        return self._texture(self.decoder(z_sr.float(), nhae.dec_m).clamp(-1, 1), seed)

    def _texture(self, volume: torch.Tensor, seed: int) -> torch.Tensor:
        """Speckle drawn onto a decoded volume from a stream of its own (seed + 2^40), or the volume unchanged."""
        if self.speckle is None:
            return volume
        gen = torch.Generator(device="cpu").manual_seed(int(seed) + 2**40)
        return self.speckle.to(volume.device)(volume.contiguous(), gen, chunk=self.decoder.chunk_size, inplace=True)

    @torch.no_grad()
    def sample_ablations(self, nhae: NonHolisticAutoencoder, diffusion3d: torch.nn.Module, refiner: torch.nn.Module,
                         seed: int = 0) -> dict[str, torch.Tensor]:
        """The three rows of the paper's ablation from one pass, sharing the Diff_3D and refiner samples:
        "nhae_diff3d" (no refiner, plain Dec2D), "diff_slice" (refiner, plain Dec2D) and "caldm"
        (refiner, Dec_M with this inferer's decoder). Each equals ``sample`` with the same seed and the
        matching switches (the random streams are consumed in the same order; with a speckle model every
        row gets the same speckle draw)."""
        plain = SlidingSliceDecoder("slice2d", chunk_size=self.decoder.chunk_size, output_dtype=self.decoder.output_dtype)
        full = self.decoder if self.use_dec_m else SlidingSliceDecoder("stack", chunk_size=self.decoder.chunk_size,
                                                                      output_dtype=self.decoder.output_dtype)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        z_sr = self._global_latent(nhae, diffusion3d, gen, None)
        out = {"nhae_diff3d": plain(z_sr.float(), nhae.dec_m).clamp(-1, 1)}
        z_hr = self._refine(nhae, refiner, z_sr, gen, None).float()
        out["diff_slice"] = plain(z_hr, nhae.dec_m).clamp(-1, 1)
        out["caldm"] = full(z_hr, nhae.dec_m).clamp(-1, 1)
        return {k: self._texture(v, seed) for k, v in out.items()}

    def _global_latent(self, nhae, diffusion3d, gen: torch.Generator, label_3d) -> torch.Tensor:
        """noise -> Diff_3D (DDIM) -> f_sr: (c, D, h, w) in Enc2D latent units."""
        device = next(nhae.parameters()).device
        noise = torch.randn((1, *self.latent_shape), generator=gen).to(device)
        c3 = None if label_3d is None else label_3d.to(device)
        z = _ddim(diffusion3d, self.scheduler, noise, self.steps, self.eta, c3, gen, "Diff_3D", self.progress, self.amp)
        return nhae.f_sr(z / nhae.scale_factor)[0]

    def _refine(self, nhae, refiner, z_sr: torch.Tensor, gen: torch.Generator, label_slices) -> torch.Tensor:
        """Diff_slice: every B-scan latent re-sampled (DDIM) conditioned on f_sr(z) (and its neighbours)."""
        if refiner is None:
            raise ValueError("use_refiner=True needs the refiner network")
        device = z_sr.device
        s2 = nhae.slice_scale_factor
        cond = neighbour_condition(z_sr * s2, self.neighbours)  # (D, c', h, w)
        if label_slices is not None:
            cond = torch.cat([cond, label_slices.to(device)], dim=1)
        if self.noise_correlation > 0:
            return self._refine_correlated(refiner, cond, z_sr.shape[0], gen).transpose(0, 1) / s2
        refined = []
        for a in range(0, cond.shape[0], self.slice_batch):
            c = cond[a : a + self.slice_batch]
            x = torch.randn((c.shape[0], z_sr.shape[0], *c.shape[2:]), generator=gen).to(device)
            refined.append(_ddim(refiner, self.scheduler, x, self.steps, self.eta, c, gen,
                                 f"Diff_slice {a}/{cond.shape[0]}", self.progress, self.amp))
        return torch.cat(refined).transpose(0, 1) / s2

    def _refine_correlated(self, refiner, cond: torch.Tensor, channels: int, gen: torch.Generator) -> torch.Tensor:
        """The refiner's DDIM run step-major over all B-scans, with noise correlated along D: (D, c, h, w)."""
        from tqdm import tqdm

        d, device = cond.shape[0], cond.device
        shape = (d, channels, *cond.shape[2:])
        x = correlated_noise(shape, self.noise_correlation, gen).to(device)
        self.scheduler.set_timesteps(self.steps, device=device)
        for t in tqdm(self.scheduler.timesteps, desc="Diff_slice (correlated noise)", disable=not self.progress, leave=False):
            eps = [_predict_noise(refiner, x[a : a + self.slice_batch], int(t), cond[a : a + self.slice_batch], self.amp)
                   for a in range(0, d, self.slice_batch)]
            noise = correlated_noise(shape, self.noise_correlation, gen).to(device) if self.eta > 0 else None
            x = ddim_step(self.scheduler, torch.cat(eps), int(t), x, self.eta, noise)
        return x


class ConcatDiffusionInferer:
    """Training-time forward of a condition-concatenated diffusion UNet: MONAI's ``DiffusionInferer``
    with ``mode="concat"`` fixed, since ``SupervisedTrainer`` passes only the prepare_batch kwargs."""

    def __init__(self, scheduler):
        from monai.inferers import DiffusionInferer

        self.inner = DiffusionInferer(scheduler)

    def __call__(self, inputs, network, noise, timesteps, condition=None):
        if condition is None:
            return self.inner(inputs, network, noise=noise, timesteps=timesteps)
        return self.inner(inputs, network, noise=noise, timesteps=timesteps, condition=condition, mode="concat")
