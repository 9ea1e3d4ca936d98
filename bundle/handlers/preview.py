"""Save the evaluator's first volume and its reconstruction / sample as a preview PNG (and to TensorBoard)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from ignite.engine import Events

from ..io import save_png
from ..preview import preview_grid, volume_preview


def _first_volume(value) -> np.ndarray:
    if isinstance(value, (list, tuple)):
        value = value[0]
    arr = value.detach().cpu().float().numpy() if hasattr(value, "detach") else np.asarray(value)
    while arr.ndim > 3:
        arr = arr[0]
    return arr


class VolumePreviewSaver:
    """At the end of every evaluation, write ``{output_dir}/{prefix}_epoch{N}.png`` with the en-face /
    B-scan / inter-slice preview of ``image_key`` above that of ``pred_key`` (from ``engine.state.output``,
    not decollated), and add it to TensorBoard when ``summary_writer`` is given.

    Args:
        output_dir: folder for the PNGs.
        epoch_source: engine whose epoch number names the file (the trainer); default the engine itself.
    """

    def __init__(self, output_dir: str | os.PathLike, image_key: str = "image", pred_key: str = "pred",
                 prefix: str = "preview", summary_writer=None, epoch_source=None):
        self.output_dir, self.image_key, self.pred_key, self.prefix = Path(output_dir), image_key, pred_key, prefix
        self.writer, self.epoch_source = summary_writer, epoch_source

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine) -> None:
        out = engine.state.output
        if isinstance(out, list):
            out = out[0]
        real, fake = _first_volume(out[self.image_key]), _first_volume(out[self.pred_key])
        lo, hi = float(real.min()), float(real.max())
        grid = preview_grid([volume_preview(real), volume_preview(np.clip(fake, lo, hi))])
        epoch = (self.epoch_source or engine).state.epoch
        save_png(grid, self.output_dir / f"{self.prefix}_epoch{epoch:04d}.png")
        if self.writer is not None:
            self.writer.add_image(self.prefix, grid[None], global_step=epoch)
