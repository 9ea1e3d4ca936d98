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


def load_checked_datalist(path: str | os.PathLike, split: str = "training",
                          keys: Sequence[str] = ("image",)) -> list[dict]:
    """``monai.data.load_decathlon_datalist`` that fails early and clearly: a missing datalist, an
    empty split or an entry whose ``keys`` point at missing files raise ValueError naming them."""
    from monai.data import load_decathlon_datalist

    if not os.path.isfile(path):
        raise ValueError(f"datalist {path} does not exist (prepare the data first: scripts/prepare_data.py)")
    try:
        items = load_decathlon_datalist(path, True, split)
    except (ValueError, IndexError) as e:
        raise ValueError(f"datalist {path} has no usable '{split}' list: {e}") from e
    if not items:
        raise ValueError(f"datalist {path}: the '{split}' list is empty")
    missing = [str(item[k]) for item in items for k in keys if not os.path.isfile(str(item.get(k, "")))]
    if missing:
        raise ValueError(f"datalist {path} ('{split}') points at {len(missing)} missing file(s), e.g. {missing[:3]}")
    return items


def datalist_split(path: str | os.PathLike, split: str = "training") -> list[dict]:
    """The ``split`` list of a datalist, checked like ``load_checked_datalist``, or [] when the file does not
    exist: a config that also runs with its data passed in (MONAI Label sets ``train#dataset#data``) still
    resolves without the default datalist; ``require_items`` then names what is missing."""
    return load_checked_datalist(path, split) if os.path.isfile(path) else []


def require_items(dataset, datalist: str | os.PathLike, what: str = "train#dataset") -> int:
    """Raise a clear ValueError before training when ``dataset`` is empty; returns its length."""
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{what} is empty: the default datalist {datalist} does not exist or lists nothing; "
                         "prepare data (python scripts/prepare_data.py phantoms --out data/phantoms ...) "
                         f"or pass --dataset_dir / --{what}#data")
    return n


DATALIST_NAMES = ("datalist.json", "dataset.json")
"""The datalist file a data folder holds: the bundle's own name first, then the Decathlon one."""


def find_datalist(dataset_dir: str | os.PathLike) -> str:
    """``dataset_dir/datalist.json``, else ``dataset_dir/dataset.json`` when that exists, else the first
    (missing) path, so that an error names the file the workflow looked for."""
    paths = [os.path.join(str(dataset_dir), n) for n in DATALIST_NAMES]
    return next((p for p in paths if os.path.isfile(p)), paths[0])
