"""Preview images of OCT volumes: en-face mean, middle B-scan and middle inter-slice plane.

This is the layout of the CA-LDM paper's Fig. 2; every stage of the bundle (phantoms, training
handlers, inference) writes its previews with :func:`volume_preview`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _to_uint8(plane: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scaled = (plane.astype(np.float32) - lo) / max(hi - lo, 1e-8)
    return (np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8)


def volume_planes(volume: np.ndarray) -> dict[str, np.ndarray]:
    """The three preview planes of a (D, H, W) or (1, D, H, W) volume.

    Returns ``enface`` (D, W) mean over depth, ``bscan`` (H, W) at D/2, and ``interslice`` (H, D)
    at W/2 (transposed so depth is vertical as in a B-scan).
    """
    v = np.asarray(volume)
    if v.ndim == 4 and v.shape[0] == 1:
        v = v[0]
    if v.ndim != 3:
        raise ValueError(f"expected a (D, H, W) volume, got shape {tuple(np.shape(volume))}")
    D, _, W = v.shape
    return {"enface": v.mean(axis=1), "bscan": v[D // 2], "interslice": v[:, :, W // 2].T}


def volume_preview(volume: np.ndarray, height: int = 256, titles: bool = True, gap: int = 4) -> np.ndarray:
    """One uint8 image with the three planes side by side, each resized to ``height`` rows.

    The B-scan and inter-slice planes share one intensity window (0.5-99.5 percentile of the
    volume); the en-face projection gets its own, since averaging compresses its range.
    """
    from PIL import Image, ImageDraw

    planes = volume_planes(volume)
    lo, hi = np.percentile(np.asarray(volume), [0.5, 99.5])
    tiles = []
    for name, plane in planes.items():
        if name == "enface":
            plo, phi = np.percentile(plane, [0.5, 99.5])
            img8 = _to_uint8(plane, plo, phi)
        else:
            img8 = _to_uint8(plane, lo, hi)
        aspect = img8.shape[1] / img8.shape[0]
        tile = Image.fromarray(img8).resize((max(int(round(height * aspect)), 1), height), Image.BILINEAR)
        tiles.append((name, tile))
    strip = 14 if titles else 0
    width = sum(t.width for _, t in tiles) + gap * (len(tiles) - 1)
    canvas = Image.new("L", (width, height + strip), 0)
    draw = ImageDraw.Draw(canvas)
    x = 0
    for name, tile in tiles:
        canvas.paste(tile, (x, strip))
        if titles:
            draw.text((x + 2, 1), {"enface": "en-face mean", "bscan": "B-scan D/2", "interslice": "inter-slice W/2"}[name], fill=255)
        x += tile.width + gap
    return np.asarray(canvas)


def preview_grid(rows: Sequence[np.ndarray], gap: int = 6) -> np.ndarray:
    """Stack preview images (uint8, possibly different widths) vertically, left-aligned."""
    width = max(r.shape[1] for r in rows)
    out = np.zeros((sum(r.shape[0] for r in rows) + gap * (len(rows) - 1), width), np.uint8)
    y = 0
    for r in rows:
        out[y : y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0] + gap
    return out
