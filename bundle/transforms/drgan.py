"""DR-GAN mask maps: stacking, checking and reading the 9-channel conditioning map.

A mask map is a float (9, S, S) array in {0, 1} with the channels of
``bundle.networks.drgan.MASK_CHANNELS`` (vessels, disc, MA, HE, EX, SE, laser, NV, FOV). On disk it
is either one PNG per channel, ``NAME_<channel>.png`` (the layout ``scripts/prepare_data.py fundus``
writes under ``masks/``; the vessel PNG may hold 0 / 1 artery / 2 vein), or one ``NAME.npy`` array
(9, S, S). Lesion channels may be all zero (a grade-0 eye); the FOV must not be.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.transforms import MapTransform, Transform

from ..networks.drgan import MASK_CHANNELS

REQUIRED = ("vessels", "disc", "fov")
"""Channels every mask map must have on disk; a missing lesion PNG means no lesion of that type."""


def check_mask_map(masks, name: str = "mask map", size: int | None = None, stride: int | None = None) -> torch.Tensor:
    """Return ``masks`` as a float tensor (9, S, S) after checking it; raise ValueError naming ``name``.

    Checks: 9 channels, square, ``size`` if given, a multiple of ``stride`` if given, values in
    {0, 1}, a non-empty FOV.
    """
    m = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    if m.ndim != 3 or m.shape[0] != len(MASK_CHANNELS):
        raise ValueError(f"{name}: a mask map must be ({len(MASK_CHANNELS)}, S, S) with the channels "
                         f"{', '.join(MASK_CHANNELS)}; got shape {tuple(m.shape)}")
    s = m.shape[-1]
    if m.shape[-2] != s:
        raise ValueError(f"{name}: mask map is {s} x {m.shape[-2]} pixels; it must be square")
    if size is not None and s != int(size):
        raise ValueError(f"{name}: mask map is {s} x {s} pixels but the generator makes {size} x {size} images")
    if stride is not None and s % int(stride):
        raise ValueError(f"{name}: size {s} is not a multiple of the generator's stride {stride}")
    m = m.float()
    bad = ~((m == 0) | (m == 1))
    if bad.any():
        ch = MASK_CHANNELS[int(bad.flatten(1).any(1).nonzero()[0])]
        raise ValueError(f"{name}: channel {ch!r} is not binary (values must be 0 or 1)")
    if not m[MASK_CHANNELS.index("fov")].any():
        raise ValueError(f"{name}: the field-of-view channel 'fov' is empty")
    return m


def stack_masks(arrays: Mapping[str, np.ndarray], name: str = "mask map") -> np.ndarray:
    """{channel: (H, W) or (1, H, W) array} -> (9, H, W) float32; the vessel map's artery / vein
    labels become one vessel channel; missing lesion channels are zero. Raises ValueError naming
    ``name`` for missing required channels, size mismatches and non-binary values."""
    missing = [c for c in REQUIRED if c not in arrays]
    if missing:
        raise ValueError(f"{name}: missing mask channel(s) {missing}")
    shapes = {c: np.squeeze(np.asarray(a)).shape for c, a in arrays.items()}
    ref = shapes["fov"]
    for c, s in shapes.items():
        if s != ref:
            raise ValueError(f"{name}: mask {c!r} is {s} but 'fov' is {ref}; all masks must have one size")
    out = np.zeros((len(MASK_CHANNELS), *ref), np.float32)
    for i, c in enumerate(MASK_CHANNELS):
        if c not in arrays:
            continue
        a = np.squeeze(np.asarray(arrays[c]))
        allowed = (0, 1, 2) if c == "vessels" else (0, 1)
        if not np.isin(a, allowed).all():
            raise ValueError(f"{name}: mask {c!r} has values {np.unique(a)[:6].tolist()}; allowed {list(allowed)}")
        out[i] = a > 0
    return out


class MaskMapd(MapTransform):
    """Stack the per-channel masks at ``keys`` (loaded (1, H, W) arrays) into ``output_key`` (9, H, W)
    and check it against the image at ``image_key`` (same size). Errors name the image file."""

    def __init__(self, keys: Sequence[str] = MASK_CHANNELS, output_key: str = "mask", image_key: str | None = "image",
                 allow_missing_keys: bool = True):
        super().__init__(keys, allow_missing_keys)
        self.output_key, self.image_key = output_key, image_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        name = "mask map"
        if self.image_key and self.image_key in d:
            name = str(getattr(d[self.image_key], "meta", {}).get("filename_or_obj", self.image_key))
        arrays = {k: np.asarray(d.pop(k)) for k in self.key_iterator(d)}
        m = stack_masks(arrays, name)
        if self.image_key and self.image_key in d:
            hw = tuple(d[self.image_key].shape[-2:])
            if hw != m.shape[-2:]:
                raise ValueError(f"{name}: image is {hw} but its masks are {m.shape[-2:]}; they must match")
        d[self.output_key] = torch.from_numpy(check_mask_map(m, name).numpy())
        return d


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except Exception as e:
        raise ValueError(f"cannot read mask {path}: {e}") from e


def read_mask_map(path_or_stem: str | os.PathLike) -> np.ndarray:
    """One mask map from ``NAME.npy`` (9, S, S) or from ``NAME_<channel>.png`` files (give ``NAME``)."""
    p = Path(path_or_stem)
    if p.suffix == ".npy":
        if not p.is_file():
            raise ValueError(f"mask map {p} does not exist")
        return check_mask_map(np.load(p), str(p)).numpy()
    arrays = {c: _read_png(p.parent / f"{p.name}_{c}.png") for c in MASK_CHANNELS
              if (p.parent / f"{p.name}_{c}.png").is_file()}
    if not arrays:
        raise ValueError(f"no mask files {p}_<channel>.png (channels {', '.join(MASK_CHANNELS)}) or {p}.npy")
    return check_mask_map(stack_masks(arrays, str(p)), str(p)).numpy()


def find_mask_maps(folder: str | os.PathLike, split: str = "test") -> list[tuple[str, Path, int | None]]:
    """(name, path-or-stem, grade or None) of every mask map in ``folder``.

    ``folder`` is a directory of ``*.npy`` maps and / or ``NAME_fov.png`` + ``NAME_<channel>.png``
    files (a prepared dataset's folder or its ``masks/``), or a ``datalist.json`` whose ``split``
    entries name the masks (``fov``, ``vessels``, ...) and carry ``grade``. Sorted by name; raises
    ValueError when there is none."""
    folder = Path(folder)
    if folder.is_file() and folder.suffix == ".json":
        from ..data.datalist import load_checked_datalist

        items = load_checked_datalist(folder, split, keys=REQUIRED)
        out = []
        for item in items:
            fov = Path(item["fov"])
            stem = fov.parent / re.sub(r"_fov$", "", fov.stem)
            out.append((stem.name, stem, int(item["grade"]) if "grade" in item else None))
        return sorted(out, key=lambda t: t[0])
    if not folder.is_dir():
        raise ValueError(f"mask folder {folder} does not exist")
    if (folder / "masks").is_dir() and not any(folder.glob("*_fov.png")):
        folder = folder / "masks"
    found = {f.stem: f for f in folder.glob("*.npy")}
    for f in folder.glob("*_fov.png"):
        stem = re.sub(r"_fov$", "", f.stem)
        found.setdefault(stem, folder / stem)
    if not found:
        raise ValueError(f"{folder} holds no mask maps (NAME.npy or NAME_fov.png with the other NAME_<channel>.png)")
    return [(k, v, None) for k, v in sorted(found.items())]


def phantom_masks(size: int, seed: int, grade: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """(mask map (9, S, S), artery / vein label map, grade) of a fresh fundus phantom."""
    from ..data.fundus_phantom import generate_fundus_phantom

    ph = generate_fundus_phantom(size, seed=seed, grade=grade)
    masks = stack_masks({"vessels": ph.vessels, "disc": ph.disc, "fov": ph.fov, **ph.lesions}, f"phantom seed {seed}")
    return masks, ph.vessels, ph.grade


class DRGANRequestd(Transform):
    """Turn a request of :func:`bundle.drgan_synthesis.drgan_requests` into the generator's input: ``mask``
    (9, S, S) read from ``masks_from`` (checked: size ``size``, binary, non-empty FOV) or drawn from a
    phantom with the request's seed (and grade, which it then records), plus ``vessels`` (the artery /
    vein label map when known, else the binary vessel channel) for saving."""

    def __init__(self, size: int, stride: int = 1):
        self.size, self.stride = int(size), int(stride)
        if self.size % self.stride:
            raise ValueError(f"size {self.size} is not a multiple of the generator's stride {self.stride}")

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        if d.get("masks_from"):
            m = read_mask_map(d["masks_from"])
            check_mask_map(m, str(d["masks_from"]), size=self.size, stride=self.stride)
            vessels = m[MASK_CHANNELS.index("vessels")].astype(np.uint8)
        else:
            m, vessels, g = phantom_masks(self.size, int(d["seed"]), None if int(d["grade"]) < 0 else int(d["grade"]))
            d["grade"] = g
        d["mask"] = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))
        d["vessels"] = torch.from_numpy(np.ascontiguousarray(vessels, dtype=np.uint8))
        return d


class SaveDRGANPaird(Transform):
    """Write one synthetic pair: the masks (``masks/NAME_<channel>.png``; vessels as the artery / vein
    map when known), then the image (``images/NAME.png``), then ``records/NAME.json`` (its datalist
    entry: paths, grade, lesion-presence label, seed, sources); each file atomically, image after
    masks, so an existing image means a complete pair. Reads ``pred`` = {"image", "grade"} from the
    ``DRGANInferer``."""

    def __init__(self, output_dir: str | os.PathLike, pred_key: str = "pred"):
        self.output_dir, self.pred_key = Path(output_dir), pred_key

    def __call__(self, data: Mapping) -> dict:
        from ..data.fundus_phantom import LESIONS
        from ..io import save_json, save_png
        from .synthesis import to_uint8

        d = dict(data)
        out, name = self.output_dir, d["name"]
        masks = np.asarray(torch.as_tensor(d["mask"]).cpu())
        grade = int(torch.as_tensor(d[self.pred_key]["grade"]).item())
        entry = {"image": f"images/{name}.png"}
        for i, c in enumerate(MASK_CHANNELS):
            arr = np.asarray(torch.as_tensor(d["vessels"]).cpu()) if c == "vessels" else masks[i]
            entry[c] = f"masks/{name}_{c}.png"
            save_png(arr.astype(np.uint8), out / entry[c])
        img = torch.as_tensor(d[self.pred_key]["image"]).detach().cpu()[None]
        save_png(to_uint8(img)[0].transpose(1, 2, 0), out / entry["image"])
        present = [int(masks[MASK_CHANNELS.index(k)].any()) for k in LESIONS]
        entry.update(grade=grade, label=[grade] + present, seed=int(torch.as_tensor(d["seed"]).item()),
                     grade_source=d["grade_source"], masks_from=d["masks_from"] or f"phantom seed {int(d['seed'])}")
        save_json(entry, out / "records" / f"{name}.json")
        d["image_file"] = str(out / entry["image"])
        return d
