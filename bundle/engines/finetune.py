"""Fine-tuning the two diffusion stages of a trained CA-LDM on new volumes (``configs/train.json``,
the entry MONAI Label's bundle training runs), with latents from its frozen NHAE computed on the fly.

The stage configs train Diff_3D and the refiner separately, on latents precomputed once
(``bundle.data.latents``); a fine-tune on a user's few volumes does both in one
``SupervisedTrainer`` without the precompute step. The latents are the precomputed ones' (same
scale factors), and each loss is the one its stage trains with: MONAI's ``DiffusionPrepareBatch``
(white noise, uniform timesteps), the ``train#inferer`` forward and the MSE to the noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.engines import DiffusionPrepareBatch, Trainer

from ..data.latents import neighbour_condition


class CascadeDiffusionIteration:
    """Callable ``(engine, batchdata) -> {"loss", "loss_diffusion3d", "loss_refiner"}`` for MONAI's
    ``SupervisedTrainer(iteration_update=...)`` and ``SupervisedEvaluator(iteration_update=...)``.

    The engine's ``network`` is a ``bundle.networks.CascadedLDM``; the batch holds (B, 1, D, H, W)
    volumes in [-1, 1] under ``image_key``. Per step, with the NHAE frozen (eval mode, no gradients):

    - z = scale_factor * E_3D(x).mu, (B, c, D/8, H/8, W/8): Diff_3D's denoising loss on z;
    - for ``slices`` random B-scans i per volume: the refiner's denoising loss on
      slice_scale_factor * Enc2D(x_i).mu conditioned on slice_scale_factor * f_sr(E_3D(x).mu)_i
      (with the refiner's neighbouring slices, read from its input channels).

    The loss is the sum of the two. A trainer steps its ``optimizer`` (which should hold the
    ``diffusion3d`` and ``refiner`` parameters only); an evaluator computes the same losses
    without gradients, with noise, timesteps and B-scans drawn from ``seed`` + the batch number,
    so every validation sees the same draws and the global random state is left untouched.
    """

    def __init__(self, num_train_timesteps: int = 1000, slices: int = 16, seed: int = 0, image_key: str = "image"):
        if int(slices) < 1:
            raise ValueError(f"slices must be a positive number of B-scans per volume, got {slices!r}")
        self.slices, self.seed, self.image_key = int(slices), int(seed), image_key
        self.prepare_volumes = DiffusionPrepareBatch(num_train_timesteps)
        self.prepare_slices = DiffusionPrepareBatch(num_train_timesteps, condition_name="cond")

    @torch.no_grad()
    def latents(self, network, x: torch.Tensor) -> tuple[dict, dict]:
        """Diff_3D batch {"image": z} and refiner batch {"image": z_hr,i, "cond": f_sr(z)_i...} of volumes x."""
        nhae = network.nhae.eval()
        mu, _ = nhae.encode_volume(x)
        cond = nhae.f_sr(mu) * nhae.slice_scale_factor  # (B, c, D, h, w)
        b, c, d = cond.shape[:3]
        neighbours, rest = divmod(network.refiner.in_channels // c - 2, 2)
        if network.refiner.in_channels != c * (2 + 2 * neighbours) or rest:
            raise ValueError(f"refiner in_channels {network.refiner.in_channels} is not {c} x (2 + 2 * neighbours): "
                             "only unconditional refiners can be fine-tuned")
        k = min(self.slices, d)
        idx = torch.stack([torch.randperm(d)[:k] for _ in range(b)]).to(x.device)  # (B, k) B-scans per volume
        picked = torch.stack([x[i, :, idx[i]] for i in range(b)])  # (B, 1, k, H, W)
        target = nhae.encode_slices(picked) * nhae.slice_scale_factor  # (B, c, k, h, w)
        # (B, k, c(2n+1), h, w)
        conds = torch.stack([neighbour_condition(cond[i], neighbours)[idx[i]] for i in range(b)])
        slices = {"image": target.transpose(1, 2).reshape(b * k, c, *target.shape[3:]), "cond": conds.flatten(0, 1)}
        return {"image": mu * nhae.scale_factor}, slices

    def losses(self, engine, x: torch.Tensor) -> dict[str, torch.Tensor]:
        net = engine.network
        volumes, slices = self.latents(net, x)
        return {"diffusion3d": self._loss(engine, net.diffusion3d, volumes, self.prepare_volumes),
                "refiner": self._loss(engine, net.refiner, slices, self.prepare_slices)}

    @staticmethod
    def _loss(engine, unet, batch: dict, prepare: DiffusionPrepareBatch) -> torch.Tensor:
        inputs, target, args, kwargs = prepare(batch, engine.state.device, engine.non_blocking)
        return F.mse_loss(engine.inferer(inputs, unet, *args, **kwargs), target)

    def __call__(self, engine, batchdata: dict) -> dict:
        x = batchdata[self.image_key].to(engine.state.device, non_blocking=engine.non_blocking)
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        net = engine.network
        if isinstance(engine, Trainer):
            net.diffusion3d.train()
            net.refiner.train()
            terms = self.losses(engine, x)
            loss = sum(terms.values())
            engine.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            engine.optimizer.step()
        else:
            net.eval()
            with torch.no_grad(), torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
                torch.manual_seed(self.seed + engine.state.iteration)
                terms = self.losses(engine, x)
                loss = sum(terms.values())
        return {"loss": loss.item(), **{f"loss_{k}": v.item() for k, v in terms.items()}}
