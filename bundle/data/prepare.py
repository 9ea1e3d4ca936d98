"""Dataset preparation behind ``scripts/prepare_data.py``: phantom sets, OCTA-500 conversion, previews.

Outputs are NIfTI volumes in (D, H, W) order with the voxel spacing in mm, plus a MONAI datalist
JSON with ``training`` and ``test`` lists whose paths are relative to the datalist's folder.
Every file is written atomically; a rerun skips cases that are already complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io import load_nifti, save_json, save_nifti, save_png
from ..preview import volume_preview
from .datalist import split_cases, write_datalist
from .octa500 import check_volume_folder, list_volumes, read_category_table, read_volume_folder, resize_volume
from .oct_phantom import CATEGORIES, generate_oct_phantom

SIZE_MULTIPLE = 8
"""Every volume dimension must be a multiple of this: the autoencoders downsample by 8 per axis."""


def parse_size(size) -> tuple[int, int, int]:
    """Accept "D,H,W", (D, H, W) or a single int (cube); check the models can take it."""
    if isinstance(size, str):
        parts = [p for p in size.replace("x", ",").split(",") if p.strip()]
    elif isinstance(size, (int, np.integer)):
        parts = [size] * 3
    else:
        parts = list(size)
    try:
        dims = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"size {size!r} is not three integers D,H,W") from None
    if len(dims) != 3:
        raise ValueError(f"size {size!r} must have three dimensions D,H,W, got {len(dims)}")
    if any(d <= 0 or d % SIZE_MULTIPLE for d in dims):
        raise ValueError(
            f"size {dims} cannot be used: every dimension must be a positive multiple of {SIZE_MULTIPLE} "
            f"(the autoencoders downsample x{SIZE_MULTIPLE} per axis)"
        )
    return dims


def case_seed(seed: int, index: int) -> int:
    """Independent, reproducible seed of case ``index`` in a set generated with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _progress(iterable, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="vol", disable=os.environ.get("RETINA_NO_PROGRESS") == "1")


PHANTOM_FILES = {
    "image": "images/{name}.nii.gz",
    "label": "labels/{name}_layers.nii.gz",
    "lesions": "labels/{name}_lesions.nii.gz",
    "surfaces": "labels/{name}_surfaces.nii.gz",
    "artery": "labels/{name}_artery.nii.gz",
    "vein": "labels/{name}_vein.nii.gz",
    "params": "params/{name}.json",
}


def completed_record(out: Path, entry: dict, expect: dict) -> dict | None:
    """The params record of a complete generated case, else None.

    ``entry`` maps names to relative file paths, ``entry["params"]`` being the record, which is
    written last; the case is complete when every file exists and the record matches ``expect``."""
    params = out / entry["params"]
    if not params.is_file() or not all((out / p).is_file() for p in entry.values()):
        return None
    try:
        rec = json.loads(params.read_text())
    except ValueError:
        return None
    return rec if all(rec.get(k) == v for k, v in expect.items()) else None


def check_set_arguments(num, test_fraction: float, seed: int) -> int:
    """Validate the size and split of a generated set before anything is written; returns ``num``."""
    if int(num) < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    split_cases([], test_fraction, seed)
    return int(num)


def prepare_phantoms(out, num: int, size="128,128,128", seed: int = 0, test_fraction: float = 0.33,
                     pathology: str = "random") -> dict:
    """Write ``num`` OCT phantoms with all labels and ``datalist.json`` into ``out``; returns the datalist."""
    dims = parse_size(size)
    num = check_set_arguments(num, test_fraction, seed)
    if pathology not in ("random",) + CATEGORIES:
        raise ValueError(f"pathology must be 'random' or one of {CATEGORIES}, got {pathology!r}")
    out = Path(out)
    entries, categories = [], []
    for i in _progress(range(int(num)), int(num), "phantoms"):
        name = f"oct_{i:04d}"
        entry = {k: v.format(name=name) for k, v in PHANTOM_FILES.items()}
        expect = {"seed": case_seed(seed, i), "size": list(dims), "pathology_request": pathology}
        if completed_record(out, entry, expect) is None:
            ph = generate_oct_phantom(dims, seed=expect["seed"], pathology=pathology)
            sp = ph.params["spacing_mm"]
            save_nifti(np.round(ph.image * 255).astype(np.uint8), out / entry["image"], sp)
            save_nifti(ph.layers, out / entry["label"], sp)
            save_nifti(ph.lesions, out / entry["lesions"], sp)
            save_nifti(ph.surfaces, out / entry["surfaces"], (1.0, sp[0], sp[2]))
            save_nifti(ph.artery, out / entry["artery"], (sp[0], sp[2]))
            save_nifti(ph.vein, out / entry["vein"], (sp[0], sp[2]))
            save_json(dict(ph.params, pathology_request=pathology), out / entry["params"])
        category = json.loads((out / entry["params"]).read_text())["category"]
        entries.append(dict(entry, category=category))
        categories.append(category)
    return write_datalist(
        entries, split_cases(categories, test_fraction, seed), out / "datalist.json",
        description="OCT phantoms (bundle.data.oct_phantom)", size=list(dims), seed=int(seed),
        axes="D,H,W (B-scan, depth, lateral)", intensity_range=[0, 255],
    )


def prepare_octa500(src, out, size="128,128,128", categories: str | None = None, test_fraction: float = 1 / 3,
                    seed: int = 0, fov_mm: Sequence[float] = (6.0, 2.0, 6.0)) -> dict:
    """Convert OCTA-500 OCT volumes (folders of B-scan BMPs) to NIfTI of ``size`` plus a datalist.

    Split: stratified by category when ``categories`` (CSV: id, category) is given, else seeded
    random. Every input folder is checked (readable, same B-scan size) before anything is written.
    """
    dims = parse_size(size)
    split_cases([], test_fraction, seed)
    vols = list_volumes(src)
    for v in vols:
        check_volume_folder(v)
    table = read_category_table(categories) if categories else None
    if table is not None:
        missing = [v.name for v in vols if v.name not in table]
        if missing:
            raise ValueError(f"category table {categories} has no row for volume(s) {missing[:5]}")
    out = Path(out)
    spacing = [f / s for f, s in zip(fov_mm, dims)]
    entries, cats = [], []
    for v in _progress(vols, len(vols), "octa500"):
        entry = {"image": f"images/{v.name}.nii.gz"}
        if not (out / entry["image"]).is_file():
            vol = resize_volume(read_volume_folder(v), dims)
            save_nifti(np.clip(np.round(vol), 0, 255).astype(np.uint8), out / entry["image"], spacing)
        cat = table[v.name] if table else "unknown"
        entries.append(dict(entry, category=cat, source=str(v)))
        cats.append(cat)
    split = split_cases(cats if table else ["all"] * len(vols), test_fraction, seed)
    return write_datalist(entries, split, out / "datalist.json", description=f"OCTA-500 OCT volumes from {src}",
                          size=list(dims), seed=int(seed), axes="D,H,W (B-scan, depth, lateral)",
                          intensity_range=[0, 255], stratified=table is not None)


VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm")


def list_volume_files(src) -> list[Path]:
    """Volume files (NIfTI, NRRD, MHA/MHD) and DICOM series folders directly under ``src``, sorted."""
    src = Path(src)
    if not src.is_dir():
        raise ValueError(f"{src} is not a folder of volumes")
    found = [p for p in sorted(src.iterdir()) if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES[:-1])]
    found += [p for p in sorted(src.iterdir()) if p.is_dir() and any(f.suffix.lower() == ".dcm" for f in p.iterdir())]
    if not found:
        raise ValueError(f"{src} holds no volume files ({', '.join(VOLUME_SUFFIXES)}) or DICOM series folders")
    return found


def read_volume(path, axes: str = "DHW") -> tuple[np.ndarray, tuple[float, float, float]]:
    """A user's OCT volume as (D, H, W) float32 and its spacing (mm) along D, H, W, read with MONAI's
    ``LoadImage`` (nibabel for NIfTI, ITK for NRRD / MHA / a DICOM series folder). ``axes`` names the
    stored axes in the bundle's terms, e.g. "WHD" for a DICOM series of B-scans as ITK reads it."""
    from monai.transforms import LoadImage

    axes = axes.upper()
    if sorted(axes) != ["D", "H", "W"]:
        raise ValueError(f"axes must be a permutation of 'DHW', got {axes!r}")
    try:
        img = LoadImage(image_only=True)(str(path))
    except Exception as e:  # readers raise many types for unreadable files
        raise ValueError(f"cannot read volume {path}: {e}") from e
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 4 and 1 in (arr.shape[0], arr.shape[-1]):
        arr = arr[0] if arr.shape[0] == 1 else arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"volume {path} has shape {arr.shape}; expected a single-channel 3D volume")
    if not np.isfinite(arr).all():
        raise ValueError(f"volume {path} contains non-finite values")
    spacing = [float(s) for s in img.pixdim[:3]]
    order = [axes.index(a) for a in "DHW"]
    return np.transpose(arr, order), tuple(spacing[i] for i in order)


def prepare_volumes(src, out, size="128,128,128", axes: str = "DHW", test_fraction: float = 1 / 3,
                    seed: int = 0) -> dict:
    """Convert a folder of the user's own OCT volumes (any format MONAI's ``LoadImage`` reads) to uint8 NIfTI of
    ``size`` (spacing scaled so the field of view is kept; intensities min-max scaled to 0..255 unless already
    uint8-ranged) plus a datalist. Every input is read and checked before anything is written."""
    dims = parse_size(size)
    split_cases([], test_fraction, seed)
    files = list_volume_files(src)
    for f in files:
        read_volume(f, axes)
    out = Path(out)
    entries = []
    for f in _progress(files, len(files), "volumes"):
        name = f.name.split(".")[0]
        entry = {"image": f"images/{name}.nii.gz"}
        if not (out / entry["image"]).is_file():
            vol, spacing = read_volume(f, axes)
            lo, hi = float(vol.min()), float(vol.max())
            if lo < 0 or hi > 255:
                vol = (vol - lo) / max(hi - lo, 1e-12) * 255
            fov = [s * n for s, n in zip(spacing, vol.shape)]
            resized = resize_volume(vol, dims)
            save_nifti(np.clip(np.round(resized), 0, 255).astype(np.uint8), out / entry["image"],
                       [f_ / n for f_, n in zip(fov, dims)])
        entries.append(dict(entry, source=str(f)))
    return write_datalist(entries, split_cases(["all"] * len(files), test_fraction, seed), out / "datalist.json",
                          description=f"OCT volumes from {src}", size=list(dims), seed=int(seed),
                          axes="D,H,W (B-scan, depth, lateral)", intensity_range=[0, 255])


def write_preview(image, out) -> Path:
    """PNG of the en-face mean, middle B-scan and middle inter-slice plane of a NIfTI volume."""
    image = Path(image)
    if not image.is_file():
        raise ValueError(f"image file {image} does not exist")
    vol, _ = load_nifti(image)
    if vol.ndim == 4 and 1 in (vol.shape[0], vol.shape[-1]):
        vol = vol.reshape([s for s in vol.shape if s != 1] if vol.shape.count(1) == 1 else vol.shape[1:])
    if vol.ndim != 3:
        raise ValueError(f"image {image} has shape {vol.shape}; expected a 3D (D, H, W) volume")
    if not np.isfinite(vol).all():
        raise ValueError(f"image {image} contains non-finite values")
    return save_png(volume_preview(vol), out)
