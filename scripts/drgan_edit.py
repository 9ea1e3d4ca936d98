"""Lesion manipulation with DR-GAN (paper Fig. 5): edit a mask map and resynthesize the same eye.

    # add ten haemorrhages and two exudate clusters in the macula, remove the microaneurysms
    python scripts/drgan_edit.py edit --masks data/fundus256/masks/fundus_0003 --add he=10,ex=2 \\
        --remove ma --region macula --grade 3 --output out/edit
    # the same eye (noise, vessels, disc) at grades 0-4, with lesions typical of each grade
    python scripts/drgan_edit.py progression --phantom_seed 7 --output out/progression

``--masks`` is a mask map (NAME for NAME_<channel>.png files, or NAME.npy); ``--phantom_seed`` draws a
fresh phantom's masks instead. Outputs: before / after images and mask maps (``*.npy``) and a figure
strip (mask overlays above images).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import fire
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.drgan_synthesis import (  # noqa: E402
    check_grade,
    edit_lesions,
    grade_progression,
    load_drgan,
    mask_overlay,
    parse_counts,
    resynthesize,
)
from bundle.io import check_output_dir, save_png  # noqa: E402
from bundle.preview import image_grid  # noqa: E402
from bundle.transforms.drgan import read_mask_map  # noqa: E402
from bundle.transforms.synthesis import to_uint8  # noqa: E402


def _masks(masks, phantom_seed, size, grade=None):
    if (masks is None) == (phantom_seed is None):
        raise ValueError("give --masks NAME (mask files) or --phantom_seed N, not both and not neither")
    if masks is not None:
        return read_mask_map(masks)
    from bundle.transforms.drgan import phantom_masks

    return phantom_masks(int(size), int(phantom_seed), grade)[0]


def _strip(maps, images) -> np.ndarray:
    over = torch.from_numpy(np.stack([mask_overlay(m) for m in maps]).transpose(0, 3, 1, 2)).float() / 127.5 - 1
    return image_grid(torch.cat([over, images]), nrow=len(maps))


def edit(output, masks=None, phantom_seed=None, add=None, remove=None, region=None, grade=None, seed=0,
         lesion_seed=0, size=256, models_dir=None):
    """Edit one mask map (add / remove lesion types, optionally inside a region) and draw it before and
    after with the same seed and grading code; ``grade`` None uses the generator's grade head on each."""
    out = check_output_dir(output)
    net, grader = load_drgan(models_dir)
    before = _masks(masks, phantom_seed, size)
    removed = [r.strip() for r in str(remove).split(",")] if remove else []
    after = edit_lesions(before, parse_counts(add), removed, region=region, seed=lesion_seed)
    maps = np.stack([before, after])
    g = check_grade(grade)
    with torch.no_grad():
        grades = [g] * 2 if g is not None else net.predict_grade(torch.from_numpy(maps)).argmax(1).tolist()
    imgs = resynthesize(net, grader, maps, grades, [int(seed)] * 2)
    for name, m, x in zip(("before", "after"), maps, imgs):
        np.save(out / f"{name}_masks.npy", m)
        save_png(to_uint8(x[None])[0].transpose(1, 2, 0), out / f"{name}.png")
    save_png(_strip(maps, imgs), out / "edit.png")
    print(f"wrote before / after (grades {grades}) to {out}")


def progression(output, masks=None, phantom_seed=None, grades="0,1,2,3,4", seed=0, lesion_seed=0, size=256,
                models_dir=None):
    """The same eye at every grade of ``grades`` (lesions redrawn per grade, same noise and code position)."""
    out = check_output_dir(output)
    net, grader = load_drgan(models_dir)
    base = _masks(masks, phantom_seed, size)
    gs = [int(g) for g in str(grades).split(",")]
    maps, imgs = grade_progression(net, grader, base, gs, seed=seed, lesion_seed=lesion_seed)
    for g, m, x in zip(gs, maps, imgs):
        np.save(out / f"grade{g}_masks.npy", m)
        save_png(to_uint8(x[None])[0].transpose(1, 2, 0), out / f"grade{g}.png")
    save_png(_strip(maps, imgs), out / "progression.png")
    print(f"wrote grades {gs} of one eye to {out}")


if __name__ == "__main__":
    os.environ.setdefault("RETINA_NO_PROGRESS", "1")
    fire.Fire({"edit": edit, "progression": progression})
