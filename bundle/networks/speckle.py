"""A fitted stochastic speckle model for decoded OCT volumes (an addition to CA-LDM, off with ``use_speckle``).

OCT speckle is a random interference pattern: fully developed, independent from one B-scan to the next,
multiplicative in intensity and so, after log compression, an additive, skewed texture whose spread
depends on the local reflectivity. A deterministic decoder trained with an L1 loss cannot draw it (it
outputs the conditional median: the shipped Dec2D reconstructs smooth layers, see the model card), and
teaching it to hallucinate speckle adversarially needs far more compute than this bundle trains with.

``SpeckleModel`` therefore draws the texture explicitly, as a Gaussian copula fitted to the residuals
``real - Dec_M(Enc2D(real))`` of training volumes:

- the residual's distribution depends on the decoded intensity: ``quantiles[b]`` holds its quantiles in
  intensity bin ``b`` (bin centres evenly spaced over the decoded intensities' 0.1-99.9 % range; values
  between bin centres blend the two nearest bins linearly);
- its spatial correlation inside a B-scan is that of white noise filtered by a Gaussian of ``sigma``
  (axial, lateral) voxels, fitted from the lag-1 autocorrelation of the Gaussianised residuals
  (for such a field, corr(1) = exp(-1 / (4 sigma^2)));
- every B-scan gets independent noise, like the acquisition;
- ``gain`` scales the drawn residuals so that the speckled reconstructions of the fitting volumes have the
  real volumes' total variation (the residuals also carry structure the decoder misses, see ``_calibrate_gain``).

Sampling: correlated unit Gaussian field n -> u = Phi(n) -> residual = the bin's quantile function at u
-> added to the decoded volume, clamped to [-1, 1]. Its random stream is separate from the diffusion
stages', so switching it off leaves the rest of a seeded sample unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F


class SpeckleModel(nn.Module):
    """Fitted speckle texture (module docstring): ``fit`` on (decoded, real) pairs, then call on decoded volumes."""

    def __init__(self, num_bins: int = 16, num_quantiles: int = 65):
        super().__init__()
        if num_bins < 1 or num_quantiles < 2:
            raise ValueError(f"need num_bins >= 1 and num_quantiles >= 2, got {num_bins}, {num_quantiles}")
        self.register_buffer("bin_centres", torch.linspace(-1, 1, num_bins))
        self.register_buffer("quantiles", torch.zeros(num_bins, num_quantiles))
        self.register_buffer("sigma", torch.zeros(2))
        self.register_buffer("gain", torch.tensor(1.0))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], max_voxels: int = 4_000_000,
            seed: int = 0) -> "SpeckleModel":
        """Fit from (decoded, real) pairs of equal shape (..., H, W) in [-1, 1] (B-scans in the last two axes)."""
        dec, res = [], []
        gen = torch.Generator().manual_seed(seed)
        for d, x in pairs:
            if d.shape != x.shape or d.ndim < 2:
                raise ValueError(f"decoded and real must have the same shape (..., H, W), "
                                 f"got {tuple(d.shape)}, {tuple(x.shape)}")
            d, e = d.float().reshape(-1, *d.shape[-2:]), (x.float() - d.float()).reshape(-1, *d.shape[-2:])
            dec.append(d)
            res.append(e)
        if not dec:
            raise ValueError("cannot fit the speckle model: no (decoded, real) pairs")
        d_all, e_all = torch.cat(dec), torch.cat(res)
        flat_d, flat_e = d_all.flatten(), e_all.flatten()
        pick = torch.randperm(flat_d.numel(), generator=gen)[:max_voxels]
        sd, se = flat_d[pick], flat_e[pick]
        nb, nq = self.quantiles.shape
        lo, hi = torch.quantile(sd, torch.tensor([0.001, 0.999])).tolist()
        centres = torch.linspace(lo, hi, nb) if nb > 1 else sd.median().reshape(1)
        half = (hi - lo) / max(nb - 1, 1) / 2
        probs = torch.linspace(0, 1, nq)
        min_count = max(nq, min(2000, sd.numel()))
        table = []
        for c in centres:
            dist = (sd - c).abs()
            vals = se[dist <= half]
            if vals.numel() < min_count:  # a sparse intensity range: use the nearest voxels instead
                vals = se[torch.topk(dist, min_count, largest=False).indices]
            table.append(torch.quantile(vals, probs))
        self.bin_centres.copy_(centres)
        self.quantiles.copy_(torch.stack(table))
        n = self._gaussianise(d_all, e_all)
        for axis, k in ((0, 1), (1, 2)):  # axial (H), lateral (W)
            a, b = n.narrow(k, 0, n.shape[k] - 1), n.narrow(k, 1, n.shape[k] - 1)
            rho = float((a * b).mean() / n.var())
            self.sigma[axis] = math.sqrt(-1.0 / (4.0 * math.log(rho))) if 0.01 < rho < 0.999 else 0.0
        self.fitted.fill_(True)
        self._calibrate_gain(d_all[:256], e_all[:256], gen)
        return self

    def _calibrate_gain(self, d: torch.Tensor, e: torch.Tensor, gen: torch.Generator, iterations: int = 14) -> None:
        """Scale the drawn residuals so that decoded + speckle has the real B-scans' total variation.

        The residuals also hold what the decoder misses that is not speckle (vessel shadows, edges, choroid
        texture); spread as independent noise, their full spread over-roughens the volume (TV +39 % at
        gain 1 on the shipped model). ``d``/``e``: consecutive B-scans (N, H, W)."""
        from ..metrics.volumes import total_variation

        target = total_variation((d + e + 1) / 2)["total"]
        seed = int(torch.randint(0, 2**31, (1,), generator=gen))
        lo, hi = 0.0, 2.0
        for _ in range(iterations):
            self.gain.fill_(0.5 * (lo + hi))
            tv = total_variation((self(d, torch.Generator().manual_seed(seed)) + 1) / 2)["total"]
            lo, hi = (self.gain.item(), hi) if tv < target else (lo, self.gain.item())
        self.gain.fill_(0.5 * (lo + hi))

    def _weights(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Lower bin index, upper bin index and the upper bin's weight for every decoded value."""
        c = self.bin_centres
        if len(c) == 1:
            zero = torch.zeros_like(d, dtype=torch.long)
            return zero, zero, torch.zeros_like(d)
        hi = torch.bucketize(d.clamp(c[0], c[-1]).contiguous(), c).clamp(1, len(c) - 1)
        lo = hi - 1
        return lo, hi, ((d - c[lo]) / (c[hi] - c[lo]).clamp(min=1e-6)).clamp(0, 1)

    def _quantile_at(self, b: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Quantile function of bin ``b`` at probability ``u`` (linear between table entries)."""
        pos = u.clamp(0, 1) * (self.quantiles.shape[1] - 1)
        i0 = pos.floor().long().clamp(max=self.quantiles.shape[1] - 2)
        f = pos - i0
        q = self.quantiles
        return q[b, i0] * (1 - f) + q[b, i0 + 1] * f

    def _gaussianise(self, d: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Residuals -> standard normal scores through their (nearest) bin's quantile table."""
        lo, hi, w = self._weights(d)
        b = torch.where(w > 0.5, hi, lo)
        nq = self.quantiles.shape[1]
        idx = torch.zeros_like(e)
        for k in range(self.quantiles.shape[0]):
            m = b == k
            idx[m] = torch.searchsorted(self.quantiles[k].contiguous(), e[m].contiguous()).float()
        u = (idx / (nq - 1)).clamp(0.5 / nq, 1 - 0.5 / nq)
        return math.sqrt(2.0) * torch.erfinv(2 * u - 1)

    def field(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Unit-variance Gaussian noise (N, H, W), correlated within each B-scan by the fitted sigmas."""
        n, h, w = shape
        sig = [float(s) for s in self.sigma]
        radii = [max(1, int(math.ceil(3 * s))) if s > 0 else 0 for s in sig]
        white = torch.randn((n, 1, h + 2 * radii[0], w + 2 * radii[1]), generator=generator)
        for axis, (s, r) in enumerate(zip(sig, radii)):
            if r == 0:
                continue
            k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / s) ** 2)
            k = k / k.square().sum().sqrt()
            white = F.conv2d(white, k.view(1, 1, -1, 1) if axis == 0 else k.view(1, 1, 1, -1))
        return white[:, 0]

    @torch.no_grad()
    def forward(self, volume: torch.Tensor, generator: torch.Generator, chunk: int = 16,
                inplace: bool = False) -> torch.Tensor:
        """``volume`` (..., D, H, W) in [-1, 1] -> the same with speckle drawn independently per B-scan (chunks of D).

        ``inplace`` writes into ``volume`` (contiguous) instead of a copy: no second full-size volume at 512^3."""
        if not bool(self.fitted):
            raise RuntimeError("the speckle model is not fitted; "
                               "run configs/stages/speckle.json or pass use_speckle false")
        if inplace and not volume.is_contiguous():
            raise ValueError("inplace speckle needs a contiguous volume")
        out = volume if inplace else volume.clone()
        flat = out.reshape(-1, *out.shape[-2:])
        for a in range(0, flat.shape[0], chunk):
            d = flat[a : a + chunk]
            n = self.field(tuple(d.shape), generator).to(d.device)
            u = 0.5 * (1 + torch.erf(n / math.sqrt(2.0)))
            lo, hi, w = self._weights(d.float())
            res = (self._quantile_at(lo, u) * (1 - w) + self._quantile_at(hi, u) * w) * self.gain
            flat[a : a + chunk] = (d.float() + res).clamp(-1, 1).to(d.dtype)
        return out


@torch.no_grad()
def fit_speckle(nhae, datalist, transform, path, num_volumes: int = 8, image_key: str = "image", chunk_size: int = 16,
                num_bins: int = 16, num_quantiles: int = 65, prefix: str | None = None) -> SpeckleModel:
    """Fit a ``SpeckleModel`` on ``num_volumes`` volumes of ``datalist``: real B-scans against their
    Enc2D -> Dec_M (``stack``) reconstruction, the decoder path the cascade's refined latents take; save it to ``path``
    (into its ``prefix.*`` part, e.g. ``"speckle"`` of ``models/model.pt``, when ``prefix`` is given)."""
    from ..inferers.sliding_slice import SlidingSliceDecoder
    from .io import save_weights

    items = list(datalist)[: int(num_volumes)]
    if not items:
        raise ValueError("cannot fit the speckle model: the datalist is empty")
    nhae.eval()
    device = next(nhae.parameters()).device
    decoder = SlidingSliceDecoder("stack", chunk_size=chunk_size)

    def pairs():
        for item in items:
            x = transform(dict(item))[image_key]
            x = (x.as_tensor() if hasattr(x, "as_tensor") else x)[None].to(device)  # (1, 1, D, H, W)
            yield decoder(nhae.encode_slices(x)[0], nhae.dec_m)[0].cpu(), x[0, 0].cpu()

    model = SpeckleModel(num_bins, num_quantiles).fit(pairs())
    save_weights(model, path, prefix)
    return model
