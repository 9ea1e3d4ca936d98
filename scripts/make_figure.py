"""Side-by-side preview figures of synthetic beside real / phantom data.

    python scripts/make_figure.py oct --left "out/*.nii.gz" --right "data/phantoms/images/oct_00[0-2]*.nii.gz" --out docs/figures/synthetic_preview.png
    python scripts/make_figure.py rows --files "out/a/x.nii.gz;out/b/x.nii.gz" --labels "model A;model B" --out docs/figures/table1_samples.png
    python scripts/make_figure.py fundus --panels "out/dcgan/dcgan_0*.png;out/vae/vae_0*.png;data/fundus/images/fundus_0*.png" --out docs/figures/fundus_samples.png
"""

import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fire  # noqa: E402
import numpy as np  # noqa: E402

from bundle.io import load_nifti, save_png  # noqa: E402
from bundle.preview import volume_preview  # noqa: E402


def oct(left, right, out, num=3, height=200):
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


def rows(files, labels, out, height=160):
    """One labelled preview row per NIfTI file (';'-separated FILES and LABELS), e.g. one sample per model."""
    from PIL import Image, ImageDraw

    fs, ls = files.split(";"), labels.split(";")
    if len(fs) != len(ls):
        raise SystemExit(f"error: {len(fs)} files but {len(ls)} labels")
    parts = []
    for f, lab in zip(fs, ls):
        if not os.path.isfile(f):
            raise SystemExit(f"error: {f} not found")
        prev = volume_preview(load_nifti(f)[0], int(height))
        band = Image.new("L", (prev.shape[1], 18), 0)
        ImageDraw.Draw(band).text((4, 3), lab, fill=255)
        parts += [np.asarray(band), prev, np.zeros((6, prev.shape[1]), np.uint8)]
    width = max(p.shape[1] for p in parts)
    save_png(np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]))) for p in parts]), out)
    print(out)


def fundus(panels, out, num=16, nrow=4):
    """Panels side by side, each a grid of the first NUM images matching one of the ';'-separated globs."""
    import torch

    from bundle.evaluation import load_images
    from bundle.preview import image_grid

    torch.set_grad_enabled(False)
    grids = []
    for pattern in panels.split(";"):
        files = [f for f in sorted(glob.glob(pattern)) if not f.endswith("_grid.png")][: int(num)]
        if not files:
            raise SystemExit(f"error: no files match {pattern}")
        imgs = load_images(files, 128)
        grids.append(image_grid(imgs, nrow=int(nrow)))
    h = max(g.shape[0] for g in grids)
    gap = np.full((h, 16, 3), 255, np.uint8)
    parts = []
    for g in grids:
        parts += [np.pad(g, ((0, h - g.shape[0]), (0, 0), (0, 0)), constant_values=255), gap]
    save_png(np.concatenate(parts[:-1], axis=1), out)
    print(out)


if __name__ == "__main__":
    fire.Fire({"oct": oct, "rows": rows, "fundus": fundus})
