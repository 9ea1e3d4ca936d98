"""Training lists of real and synthetic (image, label) pairs.

Real data: a folder with ``datalist.json`` (``scripts/prepare_data.py``) or a Decathlon ``dataset.json``.
Synthetic data: a Decathlon folder (``imagesTr/``, ``labelsTr/``, ``dataset.json``) whose "training"
items have the keys the task loads (``image``, ``label``, ``artery``, ``vein``).

Counts follow the downstream experiments of CA-LDM: with ``n`` real training cases, ``ratio`` adds
``round(ratio * n)`` synthetic cases ("Real + 100 % Syn" is ratio 1) and ``real_fraction`` keeps
``round(real_fraction * n)`` of the real ones ("200 % Syn" is ratio 2 with real_fraction 0: synthetic
cases only, twice as many as there are real ones). Draws are seeded and without replacement; the
real and synthetic draws use separate streams, so changing one count does not reshuffle the other.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import ConcatDataset, Subset

from ..data.datalist import load_checked_datalist




def read_split(path: str | os.PathLike, split: str, keys: Sequence[str] = ("image",)) -> list[dict]:
    """Items of one split with absolute paths, every ``keys`` file checked to exist; [] when the
    datalist file or the split is missing or empty (a Decathlon ``dataset.json`` often has no labelled
    "test" list; a config still resolves and its checks say what is missing)."""
    if not os.path.isfile(path):
        return []
    try:
        listed = json.loads(Path(path).read_text()).get(split)
    except ValueError as e:
        raise ValueError(f"datalist {path} is not valid JSON: {e}") from None
    return load_checked_datalist(path, split, keys) if listed else []


def _check_arguments(ratio: float, real_fraction: float) -> tuple[float, float]:
    ratio, real_fraction = float(ratio), float(real_fraction)
    if not ratio >= 0:
        raise ValueError(f"synthetic_ratio must be >= 0, got {ratio}")
    if not 0 <= real_fraction <= 1:
        raise ValueError(f"real_fraction must be in [0, 1], got {real_fraction}")
    return ratio, real_fraction


def _draw(n: int, k: int, seed: Sequence[int]) -> list[int]:
    """``k`` of ``range(n)`` without replacement, seeded, in drawn order."""
    return [int(i) for i in np.random.default_rng([int(s) for s in seed]).permutation(n)[:k]]


def synthetic_items(synthetic_dir: str | os.PathLike, count: int, seed: int = 0, keys: Sequence[str] | None = None,
                    like: dict | None = None) -> list[dict]:
    """``count`` items drawn from ``synthetic_dir/dataset.json`` ("training"), absolute paths, restricted to
    ``keys``; by default to the keys they share with the real item ``like`` (so that one batch never mixes
    items with different keys), or to every key of the first item.

    Raises ValueError naming the folder when dataset.json is missing or unreadable, when an item lacks
    one of ``keys`` or points at a missing file, or when it lists fewer than ``count`` items.
    """
    from monai.data import load_decathlon_datalist

    folder = Path(synthetic_dir)
    path = folder / "dataset.json"
    if not path.is_file():
        raise ValueError(f"synthetic_dir {folder} has no dataset.json (a Decathlon folder of synthetic pairs: "
                         "imagesTr/, labelsTr/, dataset.json)")
    try:
        items = load_decathlon_datalist(str(path), True, "training", base_dir=str(folder))
    except (ValueError, KeyError, IndexError) as e:
        raise ValueError(f"synthetic_dir {folder}: dataset.json has no usable 'training' list: {e}") from e
    if keys is None:
        first = items[0] if items else {}
        keys = [k for k in (like or {}) if k in first] or list(first)
    lacking = sorted({k for it in items for k in keys if k not in it})
    if lacking:
        raise ValueError(f"synthetic_dir {folder}: dataset.json items lack key(s) {lacking}")
    missing = [str(it[k]) for it in items for k in keys if not os.path.isfile(str(it[k]))]
    if missing:
        raise ValueError(f"synthetic_dir {folder}: dataset.json lists {len(missing)} missing file(s), "
                         f"e.g. {missing[:3]}")
    if count > len(items):
        raise ValueError(f"synthetic_dir {folder} holds {len(items)} synthetic pairs; {count} were asked for "
                         "(lower synthetic_ratio or synthesise more pairs)")
    return [{k: items[i][k] for k in keys} for i in _draw(len(items), count, [seed, 1])]


def _plan(n: int, synthetic_dir, ratio: float, real_fraction: float) -> tuple[int, int]:
    ratio, real_fraction = _check_arguments(ratio, real_fraction)
    n_syn, n_real = int(round(ratio * n)), int(round(real_fraction * n))
    if n_syn and synthetic_dir is None:
        raise ValueError("synthetic_ratio > 0 needs synthetic_dir (a Decathlon folder of synthetic pairs)")
    if n_syn + n_real == 0:
        raise ValueError(f"nothing to train on: {n} real training cases, real_fraction {real_fraction} and "
                         f"synthetic_ratio {ratio} select none")
    return n_real, n_syn


def mix_synthetic(real_items: Sequence[dict], synthetic_dir: str | os.PathLike | None, ratio: float, seed: int = 0,
                  real_fraction: float = 1.0, keys: Sequence[str] | None = None) -> list[dict]:
    """Real training items plus ``round(ratio * len(real_items))`` synthetic ones (module docstring).

    ``ratio`` 0 with ``real_fraction`` 1 returns ``real_items`` as they are. ``keys``: the keys kept of each
    synthetic item (default: those it shares with the real items). Raises ValueError as ``synthetic_items``.
    """
    if float(ratio) == 0 and float(real_fraction) == 1:
        return list(real_items)
    n_real, n_syn = _plan(len(real_items), synthetic_dir, ratio, real_fraction)
    real = [real_items[i] for i in sorted(_draw(len(real_items), n_real, [seed, 0]))]
    like = real_items[0] if real_items else None
    syn = synthetic_items(synthetic_dir, n_syn, seed, keys, like) if n_syn else []
    return real + syn


def mix_dataset(real_dataset, synthetic_dir: str | os.PathLike | None, ratio: float, seed: int = 0,
                real_fraction: float = 1.0, keys: Sequence[str] | None = None):
    """``mix_synthetic`` on a dataset: a seeded subset of ``real_dataset`` plus a ``monai.data.Dataset`` of
    synthetic items with ``real_dataset.transform``. Used by ``configs/segmentation/mix_synthetic.json`` as
    ``train#dataloader#dataset``: the base config's ``train#dataset`` (however its data were listed, e.g. a
    model-zoo bundle's glob of ``dataset_dir``) stays untouched. Returns ``real_dataset`` itself when
    ``ratio`` is 0 and ``real_fraction`` 1."""
    from monai.data import Dataset

    if float(ratio) == 0 and float(real_fraction) == 1:
        return real_dataset
    n = len(real_dataset)
    n_real, n_syn = _plan(n, synthetic_dir, ratio, real_fraction)
    parts = [Subset(real_dataset, sorted(_draw(n, n_real, [seed, 0])))] if n_real else []
    if n_syn:
        data = getattr(real_dataset, "data", None)
        like = data[0] if data is not None and len(data) and isinstance(data[0], dict) else None
        items = synthetic_items(synthetic_dir, n_syn, seed, keys, like)
        parts.append(Dataset(items, transform=getattr(real_dataset, "transform", None)))
    return ConcatDataset(parts)
