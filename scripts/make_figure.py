"""Side-by-side preview figure: synthetic volumes (left) beside real / phantom volumes (right).

    python scripts/make_figure.py --left "out/*.nii.gz" --right "data/phantoms/images/oct_00[0-2]*.nii.gz" --out docs/figures/synthetic_preview.png
"""

import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fire  # noqa: E402
import numpy as np  # noqa: E402

from bundle.io import load_nifti, save_png  # noqa: E402
from bundle.preview import volume_preview  # noqa: E402


def main(left, right, out, num=3, height=200):
    """Rows of (LEFT preview | RIGHT preview) for the first NUM files of each glob pattern."""
    lf, rf = sorted(glob.glob(left))[: int(num)], sorted(glob.glob(right))[: int(num)]
    if not lf or not rf:
        raise SystemExit(f"error: no files match {left if not lf else right}")
    rows = []
    for a, b in zip(lf, rf):
        pa, pb = volume_preview(load_nifti(a)[0], height), volume_preview(load_nifti(b)[0], height)
        gap = np.zeros((pa.shape[0], 12), np.uint8)
        rows.append(np.concatenate([pa, gap, pb], axis=1))
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate([np.pad(r, ((0, 8), (0, width - r.shape[1]))) for r in rows])
    save_png(grid, out)
    print(out)


if __name__ == "__main__":
    fire.Fire(main)
