"""The one DDIM sampling loop of the bundle, with the sampler's noise as a strategy object.

MONAI's ``DDIMScheduler.step`` draws its own noise on the model output's device from the caller's
generator; CA-LDM's refiner needs noise correlated across B-scans, and a CPU generator cannot draw
on CUDA. Here the noise comes from a strategy (``WhiteNoise``, ``CorrelatedNoise``), always drawn
on the CPU from the sample's generator (the same seed gives the same volume on any device), and
``ddim_step`` applies it with the scheduler's arithmetic (bit-identical to ``DDIMScheduler.step`` on
the CPU; tested).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.networks.schedulers import DDIMScheduler

Predict = Callable[[torch.Tensor, int], torch.Tensor]


def check_steps(scheduler: DDIMScheduler, num_inference_steps: int, eta: float) -> tuple[int, float]:
    """Validate a sampler's step count and eta; returns them as (int, float)."""
    if isinstance(num_inference_steps, bool) or int(num_inference_steps) != num_inference_steps:
        raise ValueError(f"num_inference_steps must be an integer, got {num_inference_steps!r}")
    if not 1 <= int(num_inference_steps) <= scheduler.num_train_timesteps:
        raise ValueError(f"num_inference_steps must be in 1..{scheduler.num_train_timesteps}, "
                         f"got {num_inference_steps}")
    if not float(eta) >= 0:
        raise ValueError(f"eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM-like noise), got {eta!r}")
    return int(num_inference_steps), float(eta)


def ddim_step(scheduler: DDIMScheduler, eps: torch.Tensor, t: int, x: torch.Tensor, eta: float,
              noise: torch.Tensor | None) -> torch.Tensor:
    """One DDIM update (Song et al. 2021, eq. 12 with sigma_t(eta), eq. 16) with caller-supplied noise.

    Same arithmetic as ``DDIMScheduler.step`` for epsilon prediction without clipping."""
    if scheduler.prediction_type != "epsilon" or scheduler.clip_sample:
        raise ValueError("ddim_step supports epsilon prediction without clip_sample only")
    prev = t - scheduler.num_train_timesteps // scheduler.num_inference_steps
    a_t = scheduler.alphas_cumprod[t].to(x.device)
    a_prev = (scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod).to(x.device)
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    std = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
    out = a_prev.sqrt() * x0 + (1 - a_prev - std**2).sqrt() * eps
    return out if eta <= 0 or noise is None else out + std * noise.to(x.device)


class WhiteNoise:
    """Independent standard normal noise (the paper's sampler). Sampling runs in groups of ``batch``
    items (B-scans), each group through the whole DDIM loop before the next."""

    def draw(self, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=generator)

    def groups(self, n: int, batch: int) -> list[range]:
        return [range(a, min(a + batch, n)) for a in range(0, n, batch)]


class CorrelatedNoise(WhiteNoise):
    """Standard normal noise correlated along the first axis (B-scans): white noise of D + 2r slices
    filtered with a Gaussian of ``sigma`` slices whose squared weights sum to one, so every slice keeps
    unit variance and neighbours at distance k correlate by exp(-k^2 / (4 sigma^2)). All B-scans form
    one group (the correlation spans the volume); the network still runs in batches."""

    def __init__(self, sigma: float):
        if not float(sigma) > 0:
            raise ValueError(f"noise correlation sigma must be > 0 B-scans, got {sigma!r}")
        self.sigma = float(sigma)

    def draw(self, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        return correlated_noise(shape, self.sigma, generator)

    def groups(self, n: int, batch: int) -> list[range]:
        return [range(0, n)]


def correlated_noise(shape: Sequence[int], sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Noise of ``shape`` (D, ...) correlated along D with a Gaussian of ``sigma`` slices (white if sigma <= 0)."""
    if sigma <= 0:
        return torch.randn(tuple(shape), generator=generator)
    r = max(1, int(round(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.square().sum().sqrt()
    white = torch.randn((shape[0] + 2 * r, *shape[1:]), generator=generator)
    return sum(k[j] * white[j : j + shape[0]] for j in range(2 * r + 1))


def ddim_sample(predict: Predict, scheduler: DDIMScheduler, x: torch.Tensor, steps: int, eta: float,
                noise: WhiteNoise, generator: torch.Generator, desc: str = "DDIM",
                progress: bool = True) -> torch.Tensor:
    """Run DDIM from ``x`` (the initial noise) for ``steps`` steps; ``predict(x, t)`` returns the noise
    estimate (float32). Per-step noise (eta > 0) comes from ``noise.draw`` on the CPU ``generator``."""
    from tqdm import tqdm

    scheduler.set_timesteps(steps, device=x.device)
    for t in tqdm(scheduler.timesteps, desc=desc, disable=not progress, leave=False):
        eps = predict(x, int(t))
        step_noise = noise.draw(x.shape, generator) if eta > 0 else None
        x = ddim_step(scheduler, eps, int(t), x, eta, step_noise)
    return x


def predict_noise(model: torch.nn.Module, x: torch.Tensor, t: int, cond: torch.Tensor | None = None,
                  amp: bool = False) -> torch.Tensor:
    """The UNet's noise prediction for ``x`` at timestep ``t`` (condition concatenated on channels;
    autocast on CUDA only), as float32."""
    inp = x if cond is None else torch.cat([x, cond], dim=1)
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    with torch.autocast("cuda", enabled=amp and x.is_cuda):
        return model(inp, timesteps=tt).float()


def refiner_noise(sigma: float) -> WhiteNoise:
    """The refiner's noise for a correlation of ``sigma`` B-scans: ``WhiteNoise`` for 0 (the paper), \
else ``CorrelatedNoise``."""
    try:
        sigma = float(sigma)
    except (TypeError, ValueError):
        raise ValueError(f"noise correlation must be a number of B-scans >= 0, got {sigma!r}") from None
    if not sigma >= 0:
        raise ValueError(f"noise correlation must be a number of B-scans >= 0, got {sigma!r}")
    return CorrelatedNoise(sigma) if sigma > 0 else WhiteNoise()
