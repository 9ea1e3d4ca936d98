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


def percentiles(volume: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """``np.percentile(volume, q)`` (linear interpolation); for uint8 volumes computed from a histogram built
    B-scan chunk by chunk, so no float copy of the whole volume is made (the same values)."""
    v = np.asarray(volume)
    if v.dtype != np.uint8:
        return np.percentile(v, q)
    flat = v.reshape(-1, v.shape[-1]) if v.ndim > 1 else v[None]
    counts = np.zeros(256, dtype=np.int64)
    step = max(1, (1 << 22) // max(flat.shape[1], 1))
    for a in range(0, flat.shape[0], step):
        counts += np.bincount(flat[a : a + step].ravel(), minlength=256)
    cum, n = np.cumsum(counts), int(counts.sum())

    def order_stat(k: int) -> float:  # the k-th smallest value (0-based)
        return float(np.searchsorted(cum, k, side="right"))

    out = []
    for qq in np.atleast_1d(q):
        pos = float(qq) / 100 * (n - 1)
        lo = int(np.floor(pos))
        t = pos - lo
        a, b = order_stat(lo), order_stat(min(lo + 1, n - 1))
        # numpy's _lerp: a + (b - a) * t, and b - (b - a) * (1 - t) where t >= 0.5
        out.append(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)
    return np.asarray(out)


def volume_preview(volume: np.ndarray, height: int = 256, titles: bool = True, gap: int = 4) -> np.ndarray:
    """One uint8 image with the three planes side by side, each resized to ``height`` rows.

    The B-scan and inter-slice planes share one intensity window (0.5-99.5 percentile of the
    volume); the en-face projection gets its own, since averaging compresses its range.
    """
    from PIL import Image, ImageDraw

    planes = volume_planes(volume)
    lo, hi = percentiles(volume, [0.5, 99.5])
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
            draw.text((x + 2, 1), {"enface": "en-face mean", "bscan": "B-scan D/2",
                                   "interslice": "inter-slice W/2"}[name], fill=255)
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


def image_grid(images, nrow: int = 8, gap: int = 2) -> np.ndarray:
    """(N, C, H, W) images in [-1, 1] (tensor or array) -> one uint8 (rows, cols, C) or (rows, cols) grid."""
    x = images.detach().cpu().float().numpy() if hasattr(images, "detach") else np.asarray(images, np.float32)
    if x.ndim != 4:
        raise ValueError(f"image_grid expects (N, C, H, W), got shape {x.shape}")
    n, c, h, w = x.shape
    ncol = min(nrow, n)
    rows = -(-n // ncol)
    grid = np.zeros((rows * h + gap * (rows - 1), ncol * w + gap * (ncol - 1), c), np.uint8)
    from monai.transforms import ScaleIntensityRange

    scaled = np.asarray(ScaleIntensityRange(a_min=-1.0, a_max=1.0, b_min=0.0, b_max=255.0, clip=True)(x), np.float32)
    u8 = np.round(scaled).astype(np.uint8).transpose(0, 2, 3, 1)
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[r * (h + gap) : r * (h + gap) + h, q * (w + gap) : q * (w + gap) + w] = u8[i]
    return grid[..., 0] if c == 1 else grid


def line_plot(series: dict, width: int = 640, height: int = 360, title: str = "", x_labels: list[str] | None = None,
              x_title: str = "epoch") -> np.ndarray:
    """A small RGB line plot (uint8) of ``{name: [y per epoch]}`` with axes, ticks and a legend,
    drawn with PIL (the bundle does not depend on matplotlib). ``x_labels`` names every x position
    (default: 1, the middle and the last epoch); NaN values are gaps."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    dr = ImageDraw.Draw(img)
    left, right, top, bottom = 56, 16, 28, 36
    vals = [v for ys in series.values() for v in ys if np.isfinite(v)]
    n = max((len(ys) for ys in series.values()), default=0)
    if not vals or n == 0:
        dr.text((left, top), "no data", fill="black")
        return np.asarray(img)
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    px = lambda i: left + (width - left - right) * (i / max(n - 1, 1))  # noqa: E731
    py = lambda v: top + (height - top - bottom) * (1 - (v - lo) / (hi - lo))  # noqa: E731
    dr.rectangle([left, top, width - right, height - bottom], outline="black")
    for t in np.linspace(lo, hi, 5):
        dr.line([left - 4, py(t), left, py(t)], fill="black")
        dr.text((4, py(t) - 6), f"{t:.3g}", fill="black")
    ticks = {i: str(i + 1) for i in sorted({0, n - 1, (n - 1) // 2})} if x_labels is None else dict(enumerate(x_labels))
    for i, lab in ticks.items():
        dr.text((px(i) - 3 * len(lab), height - bottom + 6), lab, fill="black")
    dr.text((width // 2 - 3 * len(x_title), height - 16), x_title, fill="black")
    dr.text((left, 8), title, fill="black")
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
    for k, (name, ys) in enumerate(series.items()):
        col = colours[k % len(colours)]
        pts = [(px(i), py(v)) for i, v in enumerate(ys) if np.isfinite(v)]
        if len(pts) > 1:
            dr.line(pts, fill=col, width=2)
        for p in pts:
            dr.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=col)
        dr.text((width - right - 150, top + 6 + 14 * k), f"- {name}", fill=col)
    return np.asarray(img)
