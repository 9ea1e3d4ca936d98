"""Side-by-side preview figures of synthetic beside real / phantom data.

    python scripts/make_figure.py oct --left "out/*.nii.gz" --right "data/phantoms/images/oct_00[0-2]*.nii.gz" \
--out docs/figures/synthetic_preview.png
    python scripts/make_figure.py rows --files "out/a/x.nii.gz;out/b/x.nii.gz" --labels "model A;model B" \
--out docs/figures/table1_samples.png
    python scripts/make_figure.py enface --sets "out/table1/cascade/nhae_diff3d;out/table1v2/cascade/nhae_diff3d" \
--labels "0.4.0;0.5.0" --out docs/figures/enface_pit.png
    python scripts/make_figure.py fundus \
--panels "out/dcgan/dcgan_0*.png;out/vae/vae_0*.png;data/fundus/images/fundus_0*.png" \
--out docs/figures/fundus_samples.png
"""

import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fire  # noqa: E402
import numpy as np  # noqa: E402

from bundle.io import load_nifti, save_png  # noqa: E402
from bundle.preview import preview_grid, volume_preview  # noqa: E402


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
    fs, ls = files.split(";"), labels.split(";")
    if len(fs) != len(ls):
        raise SystemExit(f"error: {len(fs)} files but {len(ls)} labels")
    parts = []
    for f, lab in zip(fs, ls):
        if not os.path.isfile(f):
            raise SystemExit(f"error: {f} not found")
        prev = volume_preview(load_nifti(f)[0], int(height))
        parts += [_label_band(lab, prev.shape[1]), prev, np.zeros((6, prev.shape[1]), np.uint8)]
    save_png(preview_grid(parts, gap=0), out)
    print(out)


def _label_band(text, width):
    """An 18-pixel black band of ``width`` with ``text`` in white: the title above a figure part."""
    from PIL import Image, ImageDraw

    band = Image.new("L", (width, 18), 0)
    ImageDraw.Draw(band).text((4, 3), text, fill=255)
    return np.asarray(band)


def enface(sets, labels, out, num=20, per_row=10, depth="30,90"):
    """Per folder (';'-separated SETS), a labelled grid of the first NUM volumes' en-face mean over the
    depth rows DEPTH (the inner retina at 128^3), each contrast-stretched: shows whether a foveal pit
    (dark centre, bright rim) is there, seed by seed."""
    d0, d1 = (int(v) for v in str(depth).split(","))
    dirs, labs = sets.split(";"), labels.split(";")
    if len(dirs) != len(labs):
        raise SystemExit(f"error: {len(dirs)} sets but {len(labs)} labels")
    parts = []
    for folder, lab in zip(dirs, labs):
        files = sorted(glob.glob(os.path.join(folder, "*.nii.gz")))[: int(num)]
        if not files:
            raise SystemExit(f"error: {folder} holds no .nii.gz volumes")
        tiles = []
        for f in files:
            en = load_nifti(f)[0][:, d0:d1, :].astype(np.float64).mean(1)
            tiles.append(np.pad((255 * (en - en.min()) / (np.ptp(en) + 1e-6)).astype(np.uint8), 2))
        tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % int(per_row))
        grid = np.concatenate([np.concatenate(tiles[i : i + int(per_row)], 1)
                               for i in range(0, len(tiles), int(per_row))])
        parts += [_label_band(lab, grid.shape[1]), grid]
    save_png(preview_grid(parts, gap=0), out)
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
    fire.Fire({"oct": oct, "rows": rows, "enface": enface, "fundus": fundus})
