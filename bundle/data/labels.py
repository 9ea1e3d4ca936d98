"""Label sets that guide conditional CA-LDM: a layer map and the artery / vein en-face masks.

A label set is what the OCT phantom (``oct_phantom.py``) and OCTA-500 provide: ``label`` (D, H, W)
integers 0..12 (0 vitreous, 1..11 ``LAYER_NAMES``, 12 sclera), ``artery`` and ``vein`` (D, W) binary
en-face masks. The diffusion models see it at their latent's resolution as **label fractions**: the
fraction of each 8 x 8 (x 8) cell that belongs to each layer class and to an artery / vein, so that a
boundary or a 1-3 voxel vessel survives the x8 downsampling as a fraction instead of vanishing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

NUM_LAYER_CLASSES = 13
"""Layer label values 0..12."""
VESSEL_KEYS = ("artery", "vein")
LABEL_KEYS = ("label",) + VESSEL_KEYS
"""The keys of a label set in requests, datalists and batches."""


def label_channels(num_classes: int = NUM_LAYER_CLASSES) -> int:
    """Channels of the label fractions: one per layer class plus artery and vein."""
    return int(num_classes) + len(VESSEL_KEYS)


def _squeeze(x, ndim: int) -> torch.Tensor:
    """Drop a leading channel axis of size 1 (MONAI's channel-first) down to ``ndim`` dimensions."""
    x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(np.asarray(x))
    while x.ndim > ndim and x.shape[0] == 1:
        x = x[0]
    return x


def label_fractions(label, artery, vein, factor: int = 8, num_classes: int = NUM_LAYER_CLASSES) -> torch.Tensor:
    """Diff_3D's condition: (num_classes + 2, D/f, H/f, W/f) float32 fractions of each f^3 cell.

    ``label`` (D, H, W) (or (1, D, H, W)), ``artery`` / ``vein`` (D, W) (or (1, D, W)); the vessel
    fractions of each en-face f x f cell are repeated along depth."""
    lab = _squeeze(label, 3)
    d, h, w = lab.shape
    chans = [F.avg_pool3d((lab == k).float()[None, None], factor)[0, 0] for k in range(num_classes)]
    for m in (artery, vein):
        en = F.avg_pool2d(_squeeze(m, 2).float()[None, None], factor)[0, 0]  # (D/f, W/f)
        chans.append(en[:, None, :].expand(d // factor, h // factor, w // factor))
    return torch.stack(chans)


def slice_label_fractions(label, artery, vein, factor: int = 8, num_classes: int = NUM_LAYER_CLASSES) -> torch.Tensor:
    """The refiner's condition, one per B-scan: (D, num_classes + 2, H/f, W/f) float32 fractions of each
    f x f cell of B-scan i; the vessel fractions of row i of the en-face masks (f voxels wide) are repeated
    along depth."""
    lab = _squeeze(label, 3)
    d, h, w = lab.shape
    out = torch.empty((d, num_classes + len(VESSEL_KEYS), h // factor, w // factor))
    for k in range(num_classes):
        out[:, k] = F.avg_pool2d((lab == k).float()[:, None], factor)[:, 0]
    for j, m in enumerate((artery, vein)):
        row = F.avg_pool1d(_squeeze(m, 2).float()[:, None], factor)[:, 0]  # (D, W/f)
        out[:, num_classes + j] = row[:, None, :]
    return out


def check_label_set(label, artery, vein, size: Sequence[int] | None = None, names: dict | None = None,
                    num_classes: int = NUM_LAYER_CLASSES) -> None:
    """Raise ``ValueError`` naming the file when a label set cannot guide the model: a layer map of another
    spatial size than ``size``, non-integer or out-of-range label values, or vessel masks that are not
    binary (D, W) arrays matching the layer map's B-scan count and lateral size."""
    names = names or {}
    lab = _squeeze(label, 3)
    lname = names.get("label", "the label volume")
    if lab.ndim != 3:
        raise ValueError(f"label {lname} has shape {tuple(lab.shape)}; expected a (D, H, W) layer map")
    if size is not None and tuple(lab.shape) != tuple(int(s) for s in size):
        raise ValueError(f"label {lname} has size {tuple(lab.shape)}, but the model synthesizes "
                         f"{tuple(int(s) for s in size)} volumes (D, H, W)")
    values = lab.float()
    if not torch.isfinite(values).all() or not torch.equal(values, values.round()):
        raise ValueError(f"label {lname} holds non-integer values; a layer map has integers 0..{num_classes - 1}")
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"label {lname} holds values {lo}..{hi}; a layer map has integers 0..{num_classes - 1}")
    for key, m in (("artery", artery), ("vein", vein)):
        mname = names.get(key, f"the {key} mask")
        mm = _squeeze(m, 2)
        if mm.ndim != 2 or tuple(mm.shape) != (lab.shape[0], lab.shape[2]):
            raise ValueError(f"{key} mask {mname} has shape {tuple(mm.shape)}; it must be the en-face (D, W) = "
                             f"({lab.shape[0]}, {lab.shape[2]}) of label {lname}")
        if not torch.isin(mm.float().unique(), torch.tensor([0.0, 1.0])).all():
            raise ValueError(f"{key} mask {mname} is not binary (values other than 0 and 1)")


def phantom_label_set(seed: int, size: Sequence[int]) -> dict:
    """A fresh label set drawn from the OCT phantom generator: {"label", "artery", "vein"} as uint8 arrays
    ((D, H, W) and (D, W)); the same seed and size give the same labels."""
    from .oct_phantom import generate_oct_phantom

    ph = generate_oct_phantom(tuple(int(s) for s in size), seed=int(seed))
    return {"label": ph.layers, "artery": ph.artery, "vein": ph.vein, "spacing": ph.params["spacing_mm"]}
