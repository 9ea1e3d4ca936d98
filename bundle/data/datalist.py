"""Train/test splits and MONAI datalist files."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..io import save_json


def split_cases(categories: Sequence[str], test_fraction: float, seed: int) -> list[str]:
    """Assign each case to "training" or "test", stratified by category and seeded.

    Within every category, ``round(n * test_fraction)`` cases go to test (at least one when the
    category has two or more cases and the fraction is positive), chosen by a seeded permutation.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    rng = np.random.default_rng([int(seed), 99])
    split = ["training"] * len(categories)
    for cat in sorted(set(categories)):
        idx = [i for i, c in enumerate(categories) if c == cat]
        n_test = int(round(len(idx) * test_fraction))
        if test_fraction > 0 and n_test == 0 and len(idx) >= 2:
            n_test = 1
        for i in rng.permutation(idx)[:n_test]:
            split[int(i)] = "test"
    return split


def write_datalist(entries: Sequence[dict], split: Sequence[str], path: str | os.PathLike, **info) -> dict:
    """Write a MONAI (decathlon-style) datalist: {"training": [...], "test": [...], **info}.

    File paths inside ``entries`` should be relative to the datalist's folder, which is what
    ``monai.data.load_decathlon_datalist`` resolves them against by default.
    """
    datalist = dict(info)
    datalist["training"] = [e for e, s in zip(entries, split) if s == "training"]
    datalist["test"] = [e for e, s in zip(entries, split) if s == "test"]
    save_json(datalist, path)
    return datalist
