"""What the fundus loading chain adds to MONAI's ``LoadImaged`` + ``PILReader`` (``configs/fundus_common.json``):
the RGB conversion (the reader's ``converter``) and the square check."""

from __future__ import annotations

from collections.abc import Mapping

from monai.transforms import MapTransform


def to_rgb(image):
    """A PIL image as RGB: grayscale is replicated to three channels and RGBA / palette images are
    composited on black (documented conversions), so every fundus file loads as (3, H, W)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, (0, 0, 0, 255)), image)
    return image.convert("RGB")


class CheckSquared(MapTransform):
    """Raise ``ValueError`` naming the file when an image at ``keys`` (C, H, W) is not square.

    The fundus chain resizes every photograph to ``fundus_size`` x ``fundus_size``; resizing a
    non-square image would distort the round field of view, so it is refused
    (``scripts/prepare_data.py aptos`` crops and pads photographs to squares).
    """

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            h, w = d[key].shape[-2:]
            if h != w:
                name = getattr(d[key], "meta", {}).get("filename_or_obj", key)
                raise ValueError(f"{name}: image is {w} x {h} pixels; fundus images must be square "
                                 f"(crop / pad it, e.g. with scripts/prepare_data.py aptos)")
        return d
