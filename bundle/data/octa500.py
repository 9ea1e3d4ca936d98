"""Reader for OCTA-500 OCT volumes: one folder per volume, one BMP per B-scan.

Raw OCTA-500 volumes are 400 B-scans x 640 depth x 400 lateral (6 mm subset: 6 x 2 x 6 mm;
3 mm subset: 304 B-scans over 3 x 2 x 3 mm). The reader returns (D, H, W) uint8 arrays in that
order; :func:`resize_volume` resamples them with anti-aliasing.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

IMAGE_EXTS = (".bmp", ".png", ".tif", ".tiff")


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_bscans(folder: str | os.PathLike) -> list[Path]:
    """B-scan files of one volume folder in natural order (2.bmp before 10.bmp)."""
    files = [p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
    return sorted(files, key=lambda p: _natural_key(p.name))


def list_volumes(src: str | os.PathLike) -> list[Path]:
    """Volume folders under ``src`` (each holding B-scan images), naturally sorted.

    Raises ValueError when ``src`` is missing or holds no volume folder.
    """
    src = Path(src)
    if not src.is_dir():
        raise ValueError(f"OCTA-500 source folder {src} does not exist or is not a folder")
    vols = [p for p in src.iterdir() if p.is_dir() and list_bscans(p)]
    if not vols:
        raise ValueError(f"no volume folders with B-scan images ({', '.join(IMAGE_EXTS)}) found in {src}")
    return sorted(vols, key=lambda p: _natural_key(p.name))


def check_volume_folder(folder: str | os.PathLike) -> tuple[int, int, int]:
    """Read only the headers of every B-scan: returns (D, H, W) or raises ValueError naming the file."""
    from PIL import Image

    files = list_bscans(folder)
    if not files:
        raise ValueError(f"volume folder {folder} contains no B-scan images")
    size = None
    for f in files:
        try:
            with Image.open(f) as im:
                wh = im.size
        except Exception as e:
            raise ValueError(f"cannot read B-scan {f}: {e}") from e
        if size is None:
            size = wh
        elif wh != size:
            raise ValueError(f"B-scan {f} is {wh[1]}x{wh[0]} (HxW) but earlier B-scans of {folder} are "
                             f"{size[1]}x{size[0]}")
    return len(files), size[1], size[0]


def read_volume_folder(folder: str | os.PathLike) -> np.ndarray:
    """Stack the B-scans of one folder into a (D, H, W) uint8 array (colour images -> luminance)."""
    from PIL import Image

    D, H, W = check_volume_folder(folder)
    vol = np.empty((D, H, W), np.uint8)
    for i, f in enumerate(list_bscans(folder)):
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert("L"))
        except Exception as e:
            raise ValueError(f"cannot decode B-scan {f}: {e}") from e
        vol[i] = arr
    return vol


def resize_volume(volume: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resample a (D, H, W) array to ``size`` axis by axis: box averaging ('area') where an axis
    shrinks, so it is anti-aliased, and linear interpolation where it grows. Returns float32."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    for axis, target in enumerate(size):
        cur = t.shape[2 + axis]
        if cur == target:
            continue
        new = list(t.shape[2:])
        new[axis] = int(target)
        mode = "area" if target < cur else "trilinear"
        kw = {} if mode == "area" else {"align_corners": False}
        t = F.interpolate(t, size=new, mode=mode, **kw)
    return t[0, 0].numpy()


def read_category_table(path: str | os.PathLike) -> dict[str, str]:
    """Volume id -> category from a CSV with an id column (ID / id / volume) and a category column
    (Disease / category / label). OCTA-500's spreadsheet can be saved as such a CSV."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"category table {path} does not exist")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"category table {path} has no rows")
    cols = {c.lower().strip(): c for c in rows[0]}
    id_col = next((cols[c] for c in ("id", "volume", "name") if c in cols), None)
    cat_col = next((cols[c] for c in ("disease", "category", "label") if c in cols), None)
    if id_col is None or cat_col is None:
        raise ValueError(f"category table {path} needs an id column (ID/volume/name) and a category column "
                         f"(Disease/category/label); found {list(rows[0])}")
    return {str(r[id_col]).strip(): str(r[cat_col]).strip() for r in rows}
