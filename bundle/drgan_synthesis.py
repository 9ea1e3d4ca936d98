"""DR-GAN sampling (``configs/inference_drgan.json``) and lesion manipulation (``scripts/drgan_edit.py``).

Every sample has its own seed (``seed + index``); from it a CPU ``torch.Generator`` draws, in this
order, the grading code's standard-normal part and the generator's noise inputs; fresh phantom
masks use the same seed. So a sample does not depend on the batch it runs in, a rerun skips what
is finished, and :func:`resynthesize` can redraw the same eye with other masks or another grade:
the same seed gives the same noise and the same position within each grade's Gaussian.

Lesion manipulation (paper Fig. 5) edits a mask map with the fundus phantom's own lesion
vocabulary (``bundle.data.fundus_phantom``): lesions are placed relative to the fovea and disc
found in the map, avoiding the disc, and kept inside an optional region.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.inferers import Inferer

from .data.fundus_phantom import FIELD_MM, LESIONS, _Canvas, _downsample, _draw_lesions, _lesion_counts
from .io import check_num_samples, check_seed, save_json, save_png
from .networks.drgan import MASK_CHANNELS, NUM_GRADES
from .preview import image_grid
from .transforms.drgan import check_mask_map, find_mask_maps

REGIONS = ("macula", "periphery", "superior", "inferior")


def load_drgan(models_dir: str | os.PathLike | None = None, bundle_root: str | os.PathLike | None = None):
    """(generator, grader) with their weights, as ``configs/inference_drgan.json`` defines them
    (``models_dir`` overrides where the weights are; ``bundle_root`` defaults to this bundle)."""
    from monai.bundle import ConfigParser

    root = Path(bundle_root) if bundle_root else Path(__file__).resolve().parents[1]
    p = ConfigParser()
    p.read_config(str(root / "configs" / "inference_drgan.json"))
    p["bundle_root"] = str(root)
    if models_dir:
        p["models_dir"] = str(models_dir)
    return p.get_parsed_content("network"), p.get_parsed_content("grader")


def check_grade(grade) -> int | None:
    """``grade`` as an int in 0..4, or None (the grade the masks imply); anything else raises ValueError."""
    if grade is None:
        return None
    try:
        g = int(grade)
    except (TypeError, ValueError):
        raise ValueError(f"grade must be an integer 0-4 or null, got {grade!r}") from None
    if g != grade or not 0 <= g < NUM_GRADES:
        raise ValueError(f"grade must be an integer 0-4 or null, got {grade!r}")
    return g


class DRGANInferer(Inferer):
    """``inferer(masks, generator, seeds=[...], grades=[...])`` -> {"image": (B, 3, S, S) in [-1, 1],
    "grade": (B,)}, without gradients.

    Each sample's grading code and noise come from its seed (:func:`sample_inputs`); a grade of -1
    (none requested, none recorded) is the generator's grade-head prediction from the masks. With
    ``code`` / ``noise`` given, they are used as they are (``grades`` then only labels the output).
    """

    def __init__(self, grader: torch.nn.Module | None = None):
        self.grader = grader

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args, seeds: Sequence[int] | None = None,
                 grades: Sequence[int] | None = None, code: torch.Tensor | None = None,
                 noise: Sequence[torch.Tensor] | None = None, **kwargs) -> dict:
        masks = torch.as_tensor(inputs).float()
        grades = [-1] * len(masks) if grades is None else [int(g) for g in torch.as_tensor(grades).view(-1).tolist()]
        if any(g < 0 for g in grades):
            pred = network.predict_grade(masks).argmax(1).tolist()
            grades = [p if g < 0 else g for g, p in zip(grades, pred)]
        if code is None:
            if self.grader is None or seeds is None:
                raise ValueError("DRGANInferer needs the grader and per-sample seeds, or code= and noise=")
            code, noise = sample_inputs(network, self.grader, grades, list(seeds), masks.shape[-1], masks.device)
        return {"image": network(masks, code, noise), "grade": torch.tensor(grades, device=masks.device)}


def sample_inputs(generator: torch.nn.Module, grader: torch.nn.Module, grades: Sequence[int], seeds: Sequence[int],
                  size: int, device=None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Grading codes (B, F) and noise inputs for ``grades``, one seeded draw per sample (see module docstring)."""
    codes, noises = [], []
    for g, s in zip(grades, seeds):
        gen = torch.Generator().manual_seed(int(s))
        codes.append(grader.sample_code(torch.tensor([int(g)]), gen))
        noises.append(generator.make_noise(1, size, gen))
    noise = [torch.cat([n[i] for n in noises]).to(device) for i in range(len(noises[0]))]
    return torch.cat(codes).to(device), noise


def resynthesize(generator: torch.nn.Module, grader: torch.nn.Module, masks, grades: Sequence[int],
                 seeds: Sequence[int] | int) -> torch.Tensor:
    """Images for mask maps ``masks`` (B, 9, S, S) at ``grades`` with the per-sample ``seeds``."""
    device = next(generator.parameters()).device
    masks = torch.as_tensor(masks).float()
    if masks.ndim == 3:
        masks = masks[None]
    for i, m in enumerate(masks):
        check_mask_map(m, f"mask map {i}", stride=generator.stride)
    seeds = [int(seeds)] * len(masks) if isinstance(seeds, int) else list(seeds)
    grades = [check_grade(g) for g in grades]
    if len(grades) != len(masks) or len(seeds) != len(masks) or None in grades:
        raise ValueError(f"need one grade 0-4 and one seed per mask map ({len(masks)}), got {grades} and {seeds}")
    out = DRGANInferer(grader)(masks.to(device), generator.eval(), seeds=seeds, grades=grades)
    return out["image"].cpu()


def drgan_requests(num_samples: int | None, seed: int = 0, grade: int | None = None,
                   mask_dir: str | os.PathLike | None = None, mask_split: str = "test",
                   skip_done: str | os.PathLike | None = None, prefix: str = "drgan") -> list[dict]:
    """The synthesis requests of ``configs/inference_drgan.json``: one dict per sample with its ``name``,
    ``seed`` (``seed + index``), requested or recorded ``grade`` (-1: none, the grade head decides)
    and ``masks_from`` (a mask map, or "" for a fresh phantom). ``num_samples`` None means one per mask
    map of ``mask_dir`` (used in turn), else 16. With ``skip_done`` (the output folder), requests
    whose image is already there are left out (images are written last and atomically)."""
    grade = check_grade(grade)
    seed = check_seed(seed)
    maps = find_mask_maps(mask_dir, mask_split) if mask_dir is not None else None
    n = check_num_samples(num_samples if num_samples is not None else (len(maps) if maps else 16))
    out = []
    for i in range(n):
        r = {"name": f"{prefix}_{i:04d}", "index": i, "seed": int(seed) + i, "grade": -1 if grade is None else grade,
             "grade_source": "requested" if grade is not None else "phantom", "masks_from": ""}
        if maps is not None:
            _, src, listed = maps[i % len(maps)]
            r["masks_from"] = str(src)
            if grade is None:
                r["grade"] = -1 if listed is None else int(listed)
                r["grade_source"] = "grade head" if listed is None else "datalist"
        if not (skip_done and (Path(skip_done) / "images" / f"{r['name']}.png").is_file()):
            out.append(r)
    return out


def prepare_drgan_batch(batchdata: dict, device=None, non_blocking: bool = False, **kwargs):
    """``SupervisedEvaluator`` ``prepare_batch``: the mask maps as the inputs, no target, and the requests'
    seeds and grades as the inferer's keyword arguments."""
    masks = batchdata["mask"]
    masks = masks.as_tensor() if hasattr(masks, "as_tensor") else masks
    kw = {"seeds": torch.as_tensor(batchdata["seed"]).view(-1).tolist(),
          "grades": torch.as_tensor(batchdata["grade"]).view(-1).tolist()}
    return masks.to(device=device, non_blocking=non_blocking), None, (), kw


def index_outputs(output_dir: str | os.PathLike, prefix: str = "drgan", size: int | None = None) -> dict:
    """Write ``datalist.json`` (every finished pair under ``training``, paths relative to it, with its
    grade and lesion-presence label), ``{prefix}_grid.png`` (up to 64 images) and
    ``{prefix}_summary.json`` from the per-sample records in ``output_dir/records``; returns the summary."""
    from PIL import Image

    out = Path(output_dir)
    entries = []
    for rec in sorted((out / "records").glob(f"{prefix}_*.json")):
        r = json.loads(rec.read_text())
        if (out / r["image"]).is_file():
            entries.append(r)
    save_json({"description": "DR-GAN samples (configs/inference_drgan.json)",
               "label_fields": ["grade"] + [f"{k}_present" for k in LESIONS], "training": entries, "test": []},
              out / "datalist.json")
    if entries:
        imgs = [np.asarray(Image.open(out / e["image"]).convert("RGB")) for e in entries[:64]]
        x = torch.from_numpy(np.stack(imgs).transpose(0, 3, 1, 2)).float() / 127.5 - 1
        save_png(image_grid(x), out / f"{prefix}_grid.png")
    counts = np.bincount([int(e["grade"]) for e in entries], minlength=NUM_GRADES).tolist()
    summary = {"num_samples": len(entries), "grades": counts, "datalist": "datalist.json", "size": size}
    save_json(summary, out / f"{prefix}_summary.json")
    print(f"{len(entries)} DR-GAN images (grades 0-4: {counts}) with their masks in {out}")
    return summary


# --- lesion manipulation -------------------------------------------------------------------------

def _eye_geometry(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(fovea, disc centre) in the phantom's mm frame (origin at the image centre, (y, x)) and the disc
    radius in mm, from a mask map; the fovea lies 4.5 mm from the disc towards the image centre."""
    s = masks.shape[-1]
    mm = FIELD_MM / s
    disc = masks[MASK_CHANNELS.index("disc")] > 0
    if not disc.any():
        raise ValueError("the mask map has no optic disc; lesion editing places lesions relative to it")
    ys, xs = np.nonzero(disc)
    centre = (np.array([ys.mean(), xs.mean()]) + 0.5) * mm - FIELD_MM / 2
    radius = float(np.sqrt(disc.sum() / np.pi) * mm)
    side = 1.0 if centre[1] > 0 else -1.0
    fovea = centre - np.array([-0.25, 4.5 * side])
    return fovea, centre, radius


def region_mask(masks: np.ndarray, region) -> np.ndarray:
    """A boolean (S, S) mask of ``region``: None (the whole FOV), "macula" (within 3 mm of the fovea),
    "periphery" (beyond 3 mm), "superior" / "inferior" (upper / lower half), or a pixel box (y0, x0, y1, x1)."""
    s = masks.shape[-1]
    fov = masks[MASK_CHANNELS.index("fov")] > 0
    if region is None:
        return fov
    if isinstance(region, str):
        if region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS} or a pixel box (y0, x0, y1, x1), got {region!r}")
        yy, xx = np.mgrid[:s, :s]
        if region in ("superior", "inferior"):
            half = yy < s // 2 if region == "superior" else yy >= s // 2
            return fov & half
        fovea = _eye_geometry(masks)[0]
        mm = FIELD_MM / s
        d = np.hypot((yy + 0.5) * mm - FIELD_MM / 2 - fovea[0], (xx + 0.5) * mm - FIELD_MM / 2 - fovea[1])
        return fov & ((d <= 3.0) if region == "macula" else (d > 3.0))
    box = [int(v) for v in region]
    if len(box) != 4 or not (0 <= box[0] < box[2] <= s and 0 <= box[1] < box[3] <= s):
        raise ValueError(f"region box must be (y0, x0, y1, x1) inside the {s} x {s} map, got {region!r}")
    out = np.zeros((s, s), bool)
    out[box[0] : box[2], box[1] : box[3]] = True
    return fov & out


def edit_lesions(masks, add: Mapping[str, int] | None = None, remove: Sequence[str] = (), region=None,
                 seed: int = 0) -> np.ndarray:
    """A copy of the mask map with lesion types ``remove`` cleared (inside ``region``) and ``add``
    {type: count} new lesions drawn (kept inside ``region``); types are those of ``LESIONS``
    (laser takes 0 / 1: a panretinal pattern)."""
    m = check_mask_map(masks).numpy().copy()
    add = dict(add or {})
    for k in list(add) + list(remove):
        if k not in LESIONS:
            raise ValueError(f"unknown lesion type {k!r}; choose from {LESIONS}")
    for k, v in add.items():
        if int(v) < 0:
            raise ValueError(f"lesion count for {k!r} must be >= 0, got {v}")
    keep = region_mask(m, region)
    for k in remove:
        m[MASK_CHANNELS.index(k)][keep] = 0
    if any(int(v) for v in add.values()):
        s = m.shape[-1]
        ss = 2 if s <= 512 else 1
        fovea, disc, disc_r = _eye_geometry(m)
        counts = {k: int(add.get(k, 0)) for k in LESIONS}
        alpha, _ = _draw_lesions(_Canvas(s * ss), np.random.default_rng(int(seed)), counts, fovea, disc, disc_r)
        for k in LESIONS:
            new = (_downsample(alpha[k], ss) >= 0.25) & keep
            m[MASK_CHANNELS.index(k)] = np.maximum(m[MASK_CHANNELS.index(k)], new)
    return m


def grade_masks(masks, grade: int, seed: int = 0) -> np.ndarray:
    """The mask map with every lesion replaced by a set typical of ``grade`` (counts drawn from the
    phantom's per-grade priors with ``seed``): grade 0 has none."""
    g = check_grade(grade)
    if g is None:
        raise ValueError("grade_masks needs a grade 0-4")
    counts = _lesion_counts(np.random.default_rng(int(seed)), g)
    return edit_lesions(masks, add=counts, remove=LESIONS, seed=seed)


def grade_progression(generator, grader, masks, grades: Sequence[int] = (0, 1, 2, 3, 4), seed: int = 0,
                      lesion_seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """The same eye (vessels, disc, FOV, noise, position in each grade's Gaussian) at every grade of
    ``grades``: (mask maps (G, 9, S, S), images (G, 3, S, S))."""
    maps = np.stack([grade_masks(masks, g, lesion_seed) for g in grades])
    return maps, resynthesize(generator, grader, maps, list(grades), [int(seed)] * len(grades))


def parse_counts(text) -> dict[str, int]:
    """"he=10,ex=2" (or a dict) -> {"he": 10, "ex": 2}, with clear errors."""
    if text is None or text == "":
        return {}
    if isinstance(text, Mapping):
        return {str(k): int(v) for k, v in text.items()}
    out = {}
    for part in str(text).split(","):
        k, sep, v = part.partition("=")
        if not sep:
            raise ValueError(f"lesion counts must look like 'he=10,ex=2', got {text!r}")
        try:
            out[k.strip()] = int(v)
        except ValueError:
            raise ValueError(f"lesion count {part!r} is not an integer") from None
    return out


def mask_overlay(masks: np.ndarray) -> np.ndarray:
    """An RGB uint8 (S, S, 3) picture of a mask map: FOV grey, vessels red, disc yellow, lesions in colours."""
    colours = {"fov": (40, 40, 40), "vessels": (200, 40, 40), "disc": (230, 210, 60), "ma": (255, 0, 255),
               "he": (120, 0, 200), "ex": (255, 255, 0), "se": (255, 255, 255), "laser": (0, 200, 255),
               "nv": (0, 255, 0)}
    m = np.asarray(masks)
    img = np.zeros((*m.shape[-2:], 3), np.uint8)
    for c in ("fov", "vessels", "disc", "se", "ex", "he", "laser", "nv", "ma"):
        img[m[MASK_CHANNELS.index(c)] > 0] = colours[c]
    return img
