"""Pre- and postprocessing of label-guided synthesis (``configs/inference_conditional.json``).

``PhantomLabelsd`` draws a label set from the OCT phantom generator (label-first mode),
``LabelGuidedRequestd`` checks a loaded label set and gives the request its reference image (the
label's size and affine), and ``SaveSyntheticPaird`` writes each synthetic volume with the label set it
was conditioned on into a Decathlon folder (``bundle.data.decathlon``), every file atomically.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

from ..data.decathlon import pair_files, write_decathlon_index
from ..data.labels import LABEL_KEYS, check_label_set, phantom_label_set
from ..io import check_output_dir, check_output_ext, save_png, spacing_affine
from ..preview import volume_preview
from .synthesis import save_volume, to_uint8


def _affine4(affine) -> np.ndarray:
    """A 4 x 4 affine from MONAI's (n+1) x (n+1) one (a 2D mask's is 3 x 3)."""
    a = np.asarray(torch.as_tensor(affine).cpu(), dtype=np.float64)
    if a.shape == (4, 4):
        return a
    n = a.shape[0] - 1
    out = np.eye(4)
    out[:n, :n], out[:n, 3] = a[:n, :n], a[:n, n]
    return out


class PhantomLabelsd(MapTransform):
    """Label-first mode: a fresh label set for the request's seed from the OCT phantom generator, as MONAI
    would load it (channel first, spacing on the affine): ``label`` (1, D, H, W), ``artery`` / ``vein`` (1, D, W)."""

    def __init__(self, size: Sequence[int], seed_key: str = "seed"):
        super().__init__(LABEL_KEYS)
        self.size, self.seed_key = tuple(int(s) for s in size), seed_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        labels = phantom_label_set(int(d[self.seed_key]), self.size)
        sp = labels["spacing"]
        d["label"] = MetaTensor(torch.from_numpy(labels["label"])[None], affine=torch.as_tensor(spacing_affine(sp)))
        for k in ("artery", "vein"):
            d[k] = MetaTensor(torch.from_numpy(labels[k])[None], affine=torch.as_tensor(spacing_affine([sp[0], sp[2]])))
        return d


class LabelGuidedRequestd(MapTransform):
    """Check a request's label set against the model (``bundle.data.labels.check_label_set``: size,
    integer values 0..12, binary (D, W) vessel masks; the error names the file) and give it the reference
    image ``ref_key``: a uint8 zero volume (1, D, H, W) with the layer map's affine, which the synthetic
    volume inherits."""

    def __init__(self, spatial_size: Sequence[int], ref_key: str = "image"):
        super().__init__(LABEL_KEYS)
        self.spatial_size, self.ref_key = tuple(int(s) for s in spatial_size), ref_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        missing = [k for k in LABEL_KEYS if k not in d]
        if missing:
            raise ValueError(f"label-guided request {d.get('name', '')} has no {missing}")
        names = {k: getattr(d[k], "meta", {}).get("filename_or_obj") or d.get(k + "_file") or k for k in LABEL_KEYS}
        check_label_set(d["label"], d["artery"], d["vein"], self.spatial_size, names)
        label = d["label"]
        affine = torch.as_tensor(_affine4(getattr(label, "affine", np.eye(4))))
        d[self.ref_key] = MetaTensor(torch.zeros((1, *self.spatial_size), dtype=torch.uint8), affine=affine)
        return d


class SaveSyntheticPaird(MapTransform):
    """Write the synthetic volume ``keys`` (1, D, H, W) in [-1, 1] and its label set into the Decathlon folder
    ``output_dir`` under the request's ``name`` (``bundle.data.decathlon.pair_files``): the labels first, the
    image last (a pair counts as complete once its image exists), each atomically with its own affine (the
    image takes the layer map's), a preview PNG in ``previews/``, then ``dataset.json`` rewritten."""

    def __init__(self, keys, output_dir: str | os.PathLike, output_ext: str = ".nii.gz", name_key: str = "name"):
        super().__init__(keys)
        self.output_dir, self.ext, self.name_key = Path(output_dir), check_output_ext(output_ext), name_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        check_output_dir(self.output_dir)
        name = d[self.name_key]
        name = name[0] if isinstance(name, (list, tuple)) else str(name)
        files = pair_files(name, self.ext)
        for k in LABEL_KEYS:
            arr = np.asarray(torch.as_tensor(d[k]).cpu())
            arr = arr[0] if arr.shape[0] == 1 else arr
            save_volume(np.round(arr).astype(np.uint8), self.output_dir / files[k], _affine4(d[k].affine))
        for key in self.keys:
            affine = _affine4(d["label"].affine)
            u8 = to_uint8(torch.as_tensor(d[key])[0])
            save_png(volume_preview(u8), self.output_dir / "previews" / f"{name}.png")
            save_volume(u8, self.output_dir / files["image"], affine)
            d[key] = MetaTensor(torch.from_numpy(u8)[None], affine=torch.as_tensor(affine))
            d[f"{key}_file"] = str(self.output_dir / files["image"])
        write_decathlon_index(self.output_dir)
        return d
