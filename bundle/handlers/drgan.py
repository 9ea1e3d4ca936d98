"""Ignite handlers of the DR-GAN training stages: the global-then-local stage schedule, sample grids of
fixed mask maps, and the fit of the grader's per-grade Gaussians (adaptive grading manipulation)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events

from ..io import save_png
from ..preview import image_grid


class DRGANStageSchedule:
    """Train G_m alone for the first ``global_epochs`` epochs, then G_m + G_l (paper: 10 + 10).

    The stage follows ``engine.state.epoch``, so a resumed run continues in the right stage."""

    def __init__(self, generator: torch.nn.Module, global_epochs: int):
        if int(global_epochs) < 0:
            raise ValueError(f"global_epochs must be >= 0, got {global_epochs}")
        self.generator, self.global_epochs = generator, int(global_epochs)

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine) -> None:
        stage = "global" if engine.state.epoch <= self.global_epochs else "local"
        if stage != self.generator.stage:
            engine.logger.info(f"DR-GAN stage: {stage} (epoch {engine.state.epoch})")
        self.generator.set_stage(stage)


class DRGANSampleGrid:
    """Every ``interval`` epochs, write ``{output_dir}/{prefix}_epoch{N}.png``: for fixed ``masks``
    (N, 9, S, S) and ``grades``, the images the generator makes from the same seeded codes and noise,
    above the real images when ``reals`` is given; also to TensorBoard with ``summary_writer``."""

    def __init__(self, generator: torch.nn.Module, grader: torch.nn.Module, masks: torch.Tensor, grades,
                 output_dir: str | os.PathLike, reals: torch.Tensor | None = None, seed: int = 0, interval: int = 1,
                 prefix: str = "samples", summary_writer=None):
        self.generator, self.grader, self.masks = generator, grader, torch.as_tensor(masks).float()
        self.grades = torch.as_tensor(grades).long().flatten()
        self.reals, self.output_dir, self.seed = reals, Path(output_dir), int(seed)
        self.interval, self.prefix, self.writer = int(interval), prefix, summary_writer

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    @torch.no_grad()
    def images(self) -> torch.Tensor:
        g = self.generator
        was_training = g.training
        g.eval()
        device = next(g.parameters()).device
        gen = torch.Generator().manual_seed(self.seed)
        code = self.grader.sample_code(self.grades, gen).to(device)
        noise = g.make_noise(len(self.masks), self.masks.shape[-1], gen, device)
        x = g(self.masks.to(device), code, noise).cpu()
        g.train(was_training)
        return x

    def __call__(self, engine) -> None:
        x = self.images()
        if self.reals is not None:
            r = torch.as_tensor(self.reals).float()
            if r.shape[-1] != x.shape[-1]:
                r = torch.nn.functional.interpolate(r, size=x.shape[-2:], mode="area")
            x = torch.cat([x, r])
        grid = image_grid(x, nrow=len(self.masks))
        epoch = engine.state.epoch
        save_png(grid, self.output_dir / f"{self.prefix}_epoch{epoch:04d}.png")
        if self.writer is not None:
            self.writer.add_image(self.prefix, grid, global_step=epoch, dataformats="HWC" if grid.ndim == 3 else "HW")


@torch.no_grad()
def grader_features(grader: torch.nn.Module, loader, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features and grades of every image a loader of ``image`` / ``grade`` dict batches gives."""
    grader.eval()
    device = device or next(grader.parameters()).device
    feats, grades = [], []
    for batch in loader:
        img = batch["image"]
        img = img.as_tensor() if hasattr(img, "as_tensor") else img
        feats.append(grader.features(img.to(device)).cpu())
        grades.append(torch.as_tensor(np.asarray(batch["grade"])).long().flatten())
    return torch.cat(feats), torch.cat(grades)


class FitGradeGaussians:
    """When training completes, fit the grader's per-grade Gaussians on the features of ``loader`` (the
    training images without augmentation); attach it before the final ``CheckpointSaver`` so the
    exported weights carry them."""

    def __init__(self, grader: torch.nn.Module, loader):
        self.grader, self.loader = grader, loader

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine) -> None:
        feats, grades = grader_features(self.grader, self.loader)
        self.grader.fit_grade_gaussians(feats, grades)
        engine.logger.info(f"fitted per-grade Gaussians on {len(feats)} images "
                           f"(counts per grade {torch.bincount(grades, minlength=5).tolist()})")
