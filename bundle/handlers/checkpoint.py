"""Resume a killed training run from the newest interval checkpoint in its folder.

MONAI's ``CheckpointLoader`` needs an exact path; a resumable config needs "whatever the last run
left", which this handler finds (``*checkpoint_epoch=N.pt`` / ``*checkpoint_iteration=N.pt``,
largest N) and hands to ``CheckpointLoader`` (weights_only loading, trainer state included).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from monai.handlers import CheckpointLoader

from ..io import as_bool

_PATTERN = re.compile(r"checkpoint_(epoch|iteration)=(\d+)\.pt$")


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """Newest interval checkpoint in ``folder`` (by its epoch / iteration number), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [(int(m.group(2)), p) for p in folder.glob("*.pt") if (m := _PATTERN.search(p.name))]
    return max(found)[1] if found else None


class LatestCheckpointLoader:
    """Attach to a trainer: if ``ckpt_dir`` holds an interval checkpoint, load ``load_dict`` from
    the newest one when the run starts (so epoch and iteration continue); otherwise do nothing."""

    def __init__(self, ckpt_dir: str | os.PathLike, load_dict: dict, map_location=None, enabled: bool = True):
        self.ckpt_dir, self.load_dict, self.map_location = ckpt_dir, load_dict, map_location
        self.enabled = as_bool(enabled, "resume")
        self.loaded_from: Path | None = None

    def attach(self, engine) -> None:
        path = latest_checkpoint(self.ckpt_dir) if self.enabled else None
        if path is not None:
            self.loaded_from = path
            engine.logger.info(f"resuming from {path}")
            CheckpointLoader(load_path=str(path), load_dict=self.load_dict, map_location=self.map_location).attach(engine)
