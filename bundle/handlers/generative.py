"""Ignite handlers for the fundus generators MONAI lacks: fixed-latent sample grids, per-epoch loss
curves as a PNG (the DCGAN paper's Fig. 6), set-level metrics on a held-out set at epoch end,
batch-norm recalibration (``torch.optim.swa_utils.update_bn``) and the DCGAN's instance-noise decay.

Generators are anything with ``generate(z) -> images in [-1, 1]`` (``bundle.networks.DCGANGenerator``,
``bundle.networks.FundusVAE``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events
from torch.optim.swa_utils import update_bn

from ..io import save_json, save_png
from ..metrics.generative import batched_features, frechet_distance, mean_pairwise_distance, swd
from ..preview import image_grid, line_plot


@torch.no_grad()
def generate_images(generator: torch.nn.Module, num: int, latent_size: int, seed: int, batch_size: int = 64,
                    device=None) -> torch.Tensor:
    """``num`` images from latents drawn with ``seed`` (CPU generator, so every device gives the same z)."""
    device = device or next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    z = torch.randn(num, latent_size, generator=torch.Generator().manual_seed(int(seed)))
    out = torch.cat([generator.generate(z[i : i + batch_size].to(device)).cpu() for i in range(0, num, batch_size)])
    generator.train(was_training)
    return out


class RecalibrateBatchNorm:
    """At every epoch end (before handlers attached after it sample) and at completion (before the
    weights are exported), set ``generator``'s batch-norm running statistics to its population
    statistics with ``torch.optim.swa_utils.update_bn`` over ``batches`` batches of ``batch_size``
    random latents drawn with ``seed`` (reproducible).

    During GAN training batch norm normalises with batch statistics, while the exponential running
    averages lag behind a generator that changes every step, so eval-mode samples come out
    washed-out grey; with the re-estimated statistics eval-mode sampling is per-sample deterministic
    and matches training-mode samples. ``generator`` takes latents (B, ``generator.latent_size``)."""

    def __init__(self, generator: torch.nn.Module, batches: int = 20, batch_size: int = 64, seed: int = 0):
        self.network, self.batches, self.batch_size, self.seed = generator, int(batches), int(batch_size), int(seed)

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self)

    def inputs(self):
        gen = torch.Generator().manual_seed(self.seed)
        return (torch.randn(self.batch_size, self.network.latent_size, generator=gen) for _ in range(self.batches))

    def __call__(self, engine=None) -> None:
        update_bn(self.inputs(), self.network, device=next(self.network.parameters()).device)


class RecalibrateBatchNormOnData(RecalibrateBatchNorm):
    """Like ``RecalibrateBatchNorm`` (same events; attach it before validation and export), for a
    network fed with data: ``update_bn`` over the ``image_key`` images of up to ``max_batches``
    batches of ``data_loader``, so eval-mode outputs of a network trained with a large learning rate
    match the final weights."""

    def __init__(self, network: torch.nn.Module, data_loader, max_batches: int = 50, image_key: str = "image"):
        self.network, self.loader, self.max_batches, self.image_key = network, data_loader, int(max_batches), image_key

    def inputs(self):
        for i, batch in enumerate(self.loader):
            if i >= self.max_batches:
                break
            x = batch[self.image_key]
            yield x.as_tensor() if hasattr(x, "as_tensor") else x


class InstanceNoiseSchedule:
    """Keep ``gan_loss.iteration`` (``bundle.engines.DCGANLoss``) at the trainer's iteration (0-based)
    at every iteration start, so the instance noise decays with ``engine.state.iteration``, also after
    a resume."""

    def __init__(self, gan_loss):
        self.gan_loss = gan_loss

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine) -> None:
        self.gan_loss.iteration = engine.state.iteration - 1


class SampleGridSaver:
    """Every ``interval`` epochs, write ``{output_dir}/{prefix}_epoch{N}.png``: a grid of images the
    generator makes from the same ``num`` seeded latents (so epochs are comparable), and add it to
    TensorBoard when ``summary_writer`` is given."""

    def __init__(self, generator: torch.nn.Module, output_dir: str | os.PathLike, latent_size: int, num: int = 64,
                 seed: int = 0, nrow: int = 8, prefix: str = "samples", interval: int = 1, summary_writer=None):
        self.generator, self.output_dir, self.latent_size = generator, Path(output_dir), int(latent_size)
        self.num, self.seed, self.nrow, self.prefix, self.interval, self.writer = (num, seed, nrow, prefix, interval,
                                                                                   summary_writer)

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine) -> None:
        grid = image_grid(generate_images(self.generator, self.num, self.latent_size, self.seed), nrow=self.nrow)
        epoch = engine.state.epoch
        save_png(grid, self.output_dir / f"{self.prefix}_epoch{epoch:04d}.png")
        if self.writer is not None:
            self.writer.add_image(self.prefix, grid, global_step=epoch, dataformats="HWC" if grid.ndim == 3 else "HW")


class LossCurveSaver:
    """Per-epoch means of the iteration outputs ``keys`` (and of ``DCGANLoss.last`` probabilities when
    ``gan_loss`` is given), kept in ``{output_dir}/{prefix}.json`` and drawn as ``{prefix}.png``.

    The JSON survives restarts: a resumed run keeps the epochs before its start and appends."""

    def __init__(self, output_dir: str | os.PathLike, keys=("g_loss", "d_loss"), prefix: str = "losses", gan_loss=None,
                 summary_writer=None, title: str = "training losses per epoch"):
        self.output_dir, self.keys, self.prefix, self.gan_loss, self.writer, self.title = (
            Path(output_dir), tuple(keys), prefix, gan_loss, summary_writer, title)
        self.history: dict[str, list[float]] = {}
        self._sums: dict[str, list[float]] = {}

    @property
    def json_path(self) -> Path:
        return self.output_dir / f"{self.prefix}.json"

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self._load)
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self._sums.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _load(self, engine) -> None:
        done = engine.state.epoch  # > 0 when resumed from a checkpoint
        self.history = {}
        if done and self.json_path.is_file():
            old = json.loads(self.json_path.read_text())
            self.history = {k: v[:done] for k, v in old.items()}

    def _collect(self, engine) -> None:
        out = engine.state.output if isinstance(engine.state.output, dict) else {}
        vals = {k: out[k] for k in self.keys if k in out}
        if self.gan_loss is not None:
            vals.update(self.gan_loss.last)
        for k, v in vals.items():
            self._sums.setdefault(k, []).append(float(v))

    def __call__(self, engine) -> None:
        for k, v in self._sums.items():
            self.history.setdefault(k, []).append(float(np.mean(v)))
            if self.writer is not None:
                self.writer.add_scalar(f"epoch_{k}", float(np.mean(v)), engine.state.epoch)
        save_json(self.history, self.json_path)
        save_png(line_plot({k: v for k, v in self.history.items() if k in self.keys}, title=self.title),
                 self.output_dir / f"{self.prefix}.png")


class GenerativeMetrics:
    """Every ``interval`` epochs: Fréchet distance on domain features and SWD between ``num`` samples
    of the generator and the held-out ``real_images`` (N, C, H, W) in [-1, 1], plus the diversity
    (mean pairwise distance) of the samples against the real set's own. Values go to
    ``engine.state.metrics`` (``fd_domain``, ``swd``, ``diversity``), the log and TensorBoard.
    A diversity falling towards 0 while the real value stays put is mode collapse."""

    def __init__(self, generator: torch.nn.Module, real_images: torch.Tensor, feature_net: torch.nn.Module,
                 latent_size: int, num: int = 200, seed: int = 1234, interval: int = 1, summary_writer=None,
                 batch_size: int = 64):
        self.generator, self.feature_net, self.latent_size = generator, feature_net.eval(), int(latent_size)
        self.real = real_images.float().cpu()
        self.num, self.seed, self.interval, self.writer, self.batch_size = (int(num), seed, interval, summary_writer,
                                                                            batch_size)
        self.real_features = self._features(self.real)
        self.real_diversity = mean_pairwise_distance(self.real)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return batched_features(self.feature_net, x, self.batch_size)

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def compute(self) -> dict:
        fake = generate_images(self.generator, self.num, self.latent_size, self.seed, self.batch_size)
        return {"fd_domain": frechet_distance(self._features(fake), self.real_features),
                "swd": swd(self.real, fake)["mean"], "diversity": mean_pairwise_distance(fake),
                "diversity_real": self.real_diversity}

    def __call__(self, engine) -> None:
        m = self.compute()
        engine.state.metrics.update(m)
        engine.logger.info(f"epoch {engine.state.epoch}: " + ", ".join(f"{k}={v:.4f}" for k, v in m.items()))
        if self.writer is not None:
            for k, v in m.items():
                self.writer.add_scalar(k, v, engine.state.epoch)
