"""Resume a killed training run from the newest interval checkpoint in its folder.

MONAI's ``CheckpointLoader`` needs an exact path; a resumable config needs "whatever the last run
left", which this handler finds (``*checkpoint_epoch=N.pt`` / ``*checkpoint_iteration=N.pt``,
largest N) and hands to ``CheckpointLoader`` (weights_only loading, trainer state included).

Both handlers here take ``engine_key``: the engine they are attached to joins the load / save dict
under that key. In the model-zoo layout the trainer builds its handlers (``train#trainer#train_handlers``),
so a config cannot name the trainer inside a handler's dict: that is a circular reference.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from monai.handlers import CheckpointLoader, CheckpointSaver

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
    the newest one when the run starts (so epoch and iteration continue); otherwise do nothing.
    With ``engine_key``, the engine's own state is loaded too, under that key."""

    def __init__(self, ckpt_dir: str | os.PathLike, load_dict: dict, map_location=None, enabled: bool = True,
                 engine_key: str | None = None):
        self.ckpt_dir, self.load_dict, self.map_location, self.engine_key = (ckpt_dir, load_dict, map_location,
                                                                             engine_key)
        self.enabled = as_bool(enabled, "resume")
        self.loaded_from: Path | None = None

    def attach(self, engine) -> None:
        path = latest_checkpoint(self.ckpt_dir) if self.enabled else None
        if path is not None:
            self.loaded_from = path
            engine.logger.info(f"resuming from {path}")
            load_dict = {**self.load_dict, self.engine_key: engine} if self.engine_key else self.load_dict
            CheckpointLoader(load_path=str(path), load_dict=load_dict, map_location=self.map_location).attach(engine)


class EngineCheckpointSaver:
    """MONAI ``CheckpointSaver`` (every keyword argument is passed on) of ``save_dict`` plus the engine
    it is attached to under ``engine_key``, so ``LatestCheckpointLoader(engine_key=...)`` resumes its
    epoch and iteration."""

    def __init__(self, save_dir: str | os.PathLike, save_dict: dict, engine_key: str = "trainer", **kwargs):
        self.save_dir, self.save_dict, self.engine_key, self.kwargs = str(save_dir), save_dict, engine_key, kwargs
        self.saver: CheckpointSaver | None = None

    def attach(self, engine) -> None:
        self.saver = CheckpointSaver(self.save_dir, {**self.save_dict, self.engine_key: engine}, **self.kwargs)
        self.saver.attach(engine)
