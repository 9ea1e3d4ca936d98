"""Pre- and postprocessing of the synthesis workflow (``configs/inference.json``).

``SynthesisRequestd`` turns a request into the reference image the inferer reads its size and
spacing from (MONAI Label always sends an image; a plain request carries only a seed).
``SaveSyntheticd`` writes each synthetic volume as uint8 in NIfTI (nibabel) or NRRD / MHA (MONAI's
``ITKWriter``) with the reference's affine, plus a preview PNG, each atomically.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, ScaleIntensityRange

from ..io import atomic_path, check_output_dir, check_output_ext, save_nifti, save_png, spacing_affine
from ..preview import volume_preview


def to_uint8(volume: torch.Tensor) -> np.ndarray:
    """[-1, 1] float -> uint8 0..255 (MONAI ``ScaleIntensityRange``, clipped, rounded half to even); uint8
    (already quantised, e.g. by ``bundle.inferers.Quantize``) passes unchanged."""
    if volume.dtype in (torch.uint8, np.uint8):
        return np.asarray(volume.cpu() if torch.is_tensor(volume) else volume)
    scaled = ScaleIntensityRange(a_min=-1.0, a_max=1.0, b_min=0.0, b_max=255.0, clip=True)(volume.float().cpu())
    return np.asarray(torch.round(torch.as_tensor(scaled)).numpy(), dtype=np.uint8)


def save_volume(array: np.ndarray, path: str | os.PathLike, affine: np.ndarray) -> Path:
    """Write a (D, H, W) array atomically: NIfTI through nibabel (axes stored as given, the affine as
    is), NRRD / MHA through MONAI's ``ITKWriter`` (RAS affine converted to ITK's LPS)."""
    path = Path(path)
    ext = check_output_ext("".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix)
    if ext.startswith(".nii"):
        return save_nifti(array, path, affine=affine)
    from monai.data import ITKWriter

    with atomic_path(path) as tmp:
        writer = ITKWriter(output_dtype=np.asarray(array).dtype)
        writer.set_data_array(np.asarray(array), channel_dim=None)
        writer.set_metadata({"affine": np.asarray(affine), "original_affine": np.asarray(affine)}, resample=False)
        writer.write(str(tmp))
    return path


def write_volume(volume: torch.Tensor, out: str | os.PathLike, name: str, affine: np.ndarray,
                 ext: str = ".nii.gz") -> dict:
    """(1, D, H, W) tensor in [-1, 1] -> ``out/name{ext}`` (uint8) and ``out/name_preview.png``; returns
    the file names and the uint8 array ("image", "preview", "array")."""
    u8 = to_uint8(volume[0])
    ext = check_output_ext(ext)
    save_volume(u8, Path(out) / f"{name}{ext}", affine)
    save_png(volume_preview(u8), Path(out) / f"{name}_preview.png")
    return {"image": f"{name}{ext}", "preview": f"{name}_preview.png", "array": u8}


class SynthesisRequestd(MapTransform):
    """Give every request a reference image ``keys`` of shape (1, *spatial_size).

    A request without one (a plain seed) gets a uint8 zero volume with ``spacing`` on the affine's
    diagonal; a request with one (MONAI Label, or a user's reference volume loaded by ``LoadImaged``)
    must have one channel and the spatial size the model synthesizes, else a ``ValueError`` names
    the file and both sizes.
    """

    def __init__(self, keys, spatial_size: Sequence[int], spacing: Sequence[float]):
        super().__init__(keys, allow_missing_keys=True)
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.spacing = [float(s) for s in spacing]
        if len(self.spatial_size) != 3 or len(self.spacing) != 3:
            raise ValueError(f"spatial_size and spacing must have 3 values, got {spatial_size} and {spacing}")

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.keys:
            if key not in d:
                ref = torch.zeros((1, *self.spatial_size), dtype=torch.uint8)
                d[key] = MetaTensor(ref, affine=torch.as_tensor(spacing_affine(self.spacing)))
                continue
            img = d[key]
            name = getattr(img, "meta", {}).get("filename_or_obj", key)
            if img.ndim != 4 or img.shape[0] != 1 or tuple(img.shape[1:]) != self.spatial_size:
                raise ValueError(f"reference image {name} has shape {tuple(img.shape)}; this model synthesizes "
                                 f"(1, {', '.join(map(str, self.spatial_size))}) volumes (channel, D, H, W)")
        return d


class SaveSyntheticd(MapTransform):
    """Write ``data[key]`` (1, D, H, W) in [-1, 1] as ``output_dir/{prefix}_seed{seed}{output_ext}`` (uint8, the
    reference image's affine) plus a preview PNG, both atomically; replace it by the uint8 volume and
    record the file name under ``{key}_file``."""

    def __init__(self, keys, output_dir: str | os.PathLike, output_ext: str = ".nii.gz", prefix: str = "synthetic_oct",
                 seed_key: str = "seed", ref_key: str = "image"):
        super().__init__(keys)
        self.output_dir, self.ext = Path(output_dir), check_output_ext(output_ext)
        self.prefix, self.seed_key, self.ref_key = prefix, seed_key, ref_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        check_output_dir(self.output_dir)
        for key in self.keys:
            vol = d[key]
            affine = getattr(vol, "affine", None)
            if affine is None and isinstance(d.get(self.ref_key), MetaTensor):
                affine = d[self.ref_key].affine
            affine = np.eye(4) if affine is None else np.asarray(torch.as_tensor(affine).cpu(), dtype=np.float64)
            seed = int(torch.as_tensor(d[self.seed_key]).item()) if self.seed_key in d else 0
            files = write_volume(torch.as_tensor(vol), self.output_dir, f"{self.prefix}_seed{seed}", affine, self.ext)
            d[key] = MetaTensor(torch.from_numpy(files["array"])[None], affine=torch.as_tensor(affine))
            d[f"{key}_file"] = str(self.output_dir / files["image"])
        return d
