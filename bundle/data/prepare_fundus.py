"""Fundus datasets for the bundle: phantom sets and APTOS-2019 conversion (``scripts/prepare_data.py``).

Layout written into ``out``: ``images/<name>.png`` (RGB uint8), for phantoms also
``masks/<name>_<mask>.png`` (label maps: 0/1 for binary masks; the vessel map is 0 background,
1 artery, 2 vein) and ``params/<name>.json``, plus ``datalist.json`` (MONAI decathlon style,
``training`` / ``test`` lists stratified by grade, paths relative to the datalist). Every entry
carries ``grade`` and ``label`` = [grade, MA, HE, EX, SE, laser, NV presence] (phantoms) or
[grade] (APTOS). Writes are atomic and a rerun skips finished cases.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..io import save_json, save_png
from .datalist import split_cases, write_datalist
from .fundus_phantom import LESIONS, VERSION, generate_fundus_phantom
from .prepare import _progress, case_seed, check_set_arguments, completed_record

FUNDUS_MASKS = ("fov", "vessels", "disc") + LESIONS


def parse_image_size(size) -> int:
    """A square image side in pixels: an int >= 32 that is a multiple of 16."""
    try:
        s = int(size)
    except (TypeError, ValueError):
        raise ValueError(f"size {size!r} is not an integer") from None
    if s < 32 or s % 16:
        raise ValueError(f"size {s} cannot be used: it must be a multiple of 16 and at least 32 pixels")
    return s


def _fundus_entry(name: str) -> dict:
    entry = {"image": f"images/{name}.png"}
    entry.update({m: f"masks/{name}_{m}.png" for m in FUNDUS_MASKS})
    entry["params"] = f"params/{name}.json"
    return entry


def prepare_fundus(out, num: int, size=128, seed: int = 0, test_fraction: float = 0.2) -> dict:
    """Write ``num`` fundus phantoms with all masks and ``datalist.json`` into ``out``; returns the datalist."""
    size = parse_image_size(size)
    num = check_set_arguments(num, test_fraction, seed)
    out = Path(out)
    entries, grades = [], []
    for i in _progress(range(int(num)), int(num), "fundus"):
        name = f"fundus_{i:04d}"
        entry = _fundus_entry(name)
        expect = {"seed": case_seed(seed, i), "size": size, "version": VERSION}
        rec = completed_record(out, entry, expect)
        if rec is None:
            ph = generate_fundus_phantom(size, seed=expect["seed"])
            save_png(np.round(ph.image * 255).astype(np.uint8), out / entry["image"])
            save_png(ph.fov.astype(np.uint8), out / entry["fov"])
            save_png(ph.vessels, out / entry["vessels"])
            save_png(ph.disc.astype(np.uint8), out / entry["disc"])
            for k in LESIONS:
                save_png(ph.lesions[k].astype(np.uint8), out / entry[k])
            rec = ph.params
            save_json(rec, out / entry["params"])
        present = [int(rec["lesion_counts"][k] > 0) for k in LESIONS]
        entries.append(dict(entry, grade=rec["grade"], label=[rec["grade"]] + present))
        grades.append(str(rec["grade"]))
    return write_datalist(
        entries, split_cases(grades, test_fraction, seed), out / "datalist.json",
        description="fundus phantoms (bundle.data.fundus_phantom)", size=[size, size], seed=int(seed),
        label_fields=["grade"] + [f"{k}_present" for k in LESIONS],
        mask_values="binary masks 0/1; vessels 0/1 artery/2 vein",
    )


def read_grade_table(path) -> dict[str, int]:
    """APTOS-style CSV (columns ``id_code``, ``diagnosis`` 0-4) -> {id_code: grade}, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"grade table {path} does not exist")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"id_code", "diagnosis"} <= set(rows[0]):
        raise ValueError(f"grade table {path} must have columns 'id_code' and 'diagnosis'")
    table = {}
    for n, r in enumerate(rows, start=2):
        try:
            g = int(r["diagnosis"])
        except (TypeError, ValueError):
            g = -1
        if g not in range(5):
            raise ValueError(f"grade table {path}, line {n}: diagnosis {r['diagnosis']!r} is not a grade 0-4")
        table[r["id_code"].strip()] = g
    return table


def fundus_square(img: np.ndarray, threshold: int = 10) -> np.ndarray:
    """Crop an (H, W, 3) uint8 photograph to the bounding box of its field of view (pixels brighter
    than ``threshold`` in any channel) and pad it to a centred square with black."""
    bright = img.max(axis=2) > threshold
    if not bright.any():
        return img
    rows, cols = np.where(bright.any(axis=1))[0], np.where(bright.any(axis=0))[0]
    img = img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = img.shape[:2]
    side = max(h, w)
    sq = np.zeros((side, side, 3), np.uint8)
    sq[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = img
    return sq


def read_rgb(path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB (``bundle.transforms.to_rgb``); unreadable files raise
    ValueError naming the file."""
    from PIL import Image

    from ..transforms.fundus import to_rgb

    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(to_rgb(im))
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def prepare_aptos(src, csv_path, out, size=128, test_fraction: float = 0.2, seed: int = 0) -> dict:
    """Convert APTOS-2019 (``SRC/<id_code>.png`` + CSV with ``diagnosis``) to square ``size`` PNGs.

    Each photograph is cropped to its field of view, padded to a square and resized with an
    anti-aliased (Lanczos) filter. Every listed file is checked before anything is written.
    """
    from PIL import Image

    size = parse_image_size(size)
    split_cases([], test_fraction, seed)
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise ValueError(f"APTOS image folder {src} does not exist")
    table = read_grade_table(csv_path)
    files = {}
    for code in table:
        cands = [src / f"{code}{ext}" for ext in (".png", ".jpg", ".jpeg")]
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            raise ValueError(f"{csv_path} lists {code!r} but {src / (code + '.png')} does not exist")
        files[code] = hit
    for code, f in files.items():  # header check of every file before writing anything
        try:
            with Image.open(f) as im:
                im.verify()
        except Exception as e:
            raise ValueError(f"cannot read image {f}: {e}") from e
    entries, grades = [], []
    for code, f in _progress(files.items(), len(files), "aptos"):
        entry = {"image": f"images/{code}.png"}
        target = out / entry["image"]
        done = False
        if target.is_file():
            with Image.open(target) as im:
                done = im.size == (size, size)
        if not done:
            sq = fundus_square(read_rgb(f))
            im = Image.fromarray(sq).resize((size, size), Image.LANCZOS)
            save_png(np.asarray(im), target)
        entries.append(dict(entry, grade=table[code], label=[table[code]], source=str(f)))
        grades.append(str(table[code]))
    return write_datalist(entries, split_cases(grades, test_fraction, seed), out / "datalist.json",
                          description=f"APTOS-2019 photographs from {src}", size=[size, size], seed=int(seed),
                          label_fields=["grade"])
