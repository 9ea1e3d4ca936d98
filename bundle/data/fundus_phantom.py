"""Procedural colour fundus photographs with diabetic-retinopathy lesions and every mask.

Geometry lives in mm on a square field centred on the image (rows = y, columns = x); pixels
appear only at rendering, so one seed gives the same eye at any size. The field of view is a
circle of ``FOV_RADIUS_MM`` (a 45-degree camera sees about 12 mm of retina). A right eye (OD)
has its optic disc on the right (nasal) side; a left eye (OS) is the mirror image.

Image formation (all vectorised; loops run over lesions, never over pixels), rendered at
``supersample`` x the output size and box-averaged down so sub-pixel vessels and microaneurysms
still leave a faint trace, as in a real downsampled photograph:

1. orange-red background with per-image colour jitter, choroidal texture (smooth random fields)
   and a darker macula with a darker fovea about 2.5 disc diameters temporal to the disc;
2. optic disc: a bright yellowish ellipse (~1/6 of the FOV diameter) with a paler cup;
3. artery / vein trees grown from the disc (``bundle.data.vessels``): arteries lighter and thinner
   with a central light reflex, veins darker and wider, arcades around the macula, no vessels in
   the foveal avascular zone;
4. DR lesions drawn from per-grade priors (:data:`GRADE_PRIORS`): microaneurysms (MA),
   haemorrhages (HE, dot/blot and flame), hard exudates (EX, clusters and circinate rings),
   soft exudates / cotton-wool spots (SE), laser photocoagulation scars (laser) and
   neovascularisation with fibrous membranes (NV). Lesions avoid the disc;
5. radial illumination fall-off, dark surround outside the FOV, sensor noise, slight blur.

The grade follows the international scale: 0 no lesions; 1 microaneurysms only; 2 more than
microaneurysms but less than 3; 3 many haemorrhages (>= ``SEVERE_HE`` in the image) and usually
soft exudates; 4 neovascularisation and / or laser scars. Lesion counts are Poisson draws whose
means overlap between neighbouring grades, so grades are learnable but not trivially separable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .fields import SmoothField
from .vessels import VesselTreeGrower, VesselTreeParams, rasterize

FOV_RADIUS_MM = 6.0
FIELD_MM = 2 * FOV_RADIUS_MM * 1.04
LESIONS = ("ma", "he", "ex", "se", "laser", "nv")
"""Lesion mask names: microaneurysms, haemorrhages, hard exudates, soft exudates, laser scars,
neovascularisation / proliferative membranes."""
GRADES = (0, 1, 2, 3, 4)
GRADE_PRIORS = {  # Poisson means per grade: MA count, HE count, EX clusters, SE count
    "ma": (0.0, 4.0, 8.0, 12.0, 10.0),
    "he": (0.0, 0.0, 3.0, 16.0, 9.0),
    "ex": (0.0, 0.0, 1.2, 1.6, 1.6),
    "se": (0.0, 0.0, 0.5, 2.5, 1.5),
}
SEVERE_HE = 10
VERSION = 1
"""Bumped whenever the rendering changes, so prepared datasets know they are stale."""


@dataclass
class FundusPhantom:
    """One synthetic fundus photograph and its labels (all (H, W) masks are boolean).

    ``image``: (H, W, 3) float32 in [0, 1]; ``vessels``: uint8 label map (0 background, 1 artery,
    2 vein); ``lesions``: name -> mask for every entry of :data:`LESIONS`; ``grade``: 0-4;
    ``params``: every drawn parameter (JSON-serialisable).
    """

    image: np.ndarray
    fov: np.ndarray
    vessels: np.ndarray
    disc: np.ndarray
    lesions: dict[str, np.ndarray]
    grade: int
    params: dict = field(default_factory=dict)


class _Canvas:
    """A supersampled (n, n) grid in mm with helpers that stamp soft shapes into alpha maps."""

    def __init__(self, n: int):
        self.n = n
        self.spacing = FIELD_MM / n
        c = (np.arange(n) + 0.5) * self.spacing - FIELD_MM / 2
        self.y, self.x = c[:, None], c[None, :]

    def window(self, cy: float, cx: float, reach: float) -> tuple[slice, slice]:
        def lo(v: float) -> int:
            return int(np.clip(np.floor((v - reach + FIELD_MM / 2) / self.spacing), 0, self.n))

        def hi(v: float) -> int:
            return int(np.clip(np.ceil((v + reach + FIELD_MM / 2) / self.spacing) + 1, 0, self.n))

        return slice(lo(cy), hi(cy)), slice(lo(cx), hi(cx))

    def ellipse(self, target: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0,
                soft: float = 0.15, gaussian: bool = False, strength: float = 1.0) -> None:
        """Max-combine an ellipse (radii in mm, rotated by ``angle``) into ``target``.

        Profile: a disk with a soft rim of relative width ``soft``, or a Gaussian bump."""
        sy, sx = self.window(cy, cx, 2.2 * max(ry, rx) + 2 * self.spacing)
        if sy.start >= sy.stop or sx.start >= sx.stop:
            return
        dy, dx = self.y[sy] - cy, self.x[:, sx] - cx
        c, s = np.cos(angle), np.sin(angle)
        u, v = (dx * c + dy * s) / rx, (-dx * s + dy * c) / ry
        rho = np.sqrt(u * u + v * v)
        # never thinner than a pixel, so tiny lesions keep their area when box-averaged
        pix = self.spacing / max(min(ry, rx), 1e-6)
        a = np.exp(-2.0 * rho**2) if gaussian else np.clip((1.0 - rho) / max(soft, pix) + 0.5, 0.0, 1.0)
        np.maximum(target[sy, sx], strength * a, out=target[sy, sx])

    def polyline(self, target: np.ndarray, points: np.ndarray, radius: float, strength: float = 1.0) -> None:
        """Max-combine a tube of ``radius`` mm along ``points`` (N, 2) (y, x) into ``target``."""
        seg = np.hypot(*np.diff(points, axis=0).T)
        n = max(int(np.ceil(seg.sum() / (0.5 * self.spacing))), 2)
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        s = np.linspace(0.0, arc[-1], n)
        py, px = np.interp(s, arc, points[:, 0]), np.interp(s, arc, points[:, 1])
        for cy, cx in zip(py, px):
            self.ellipse(target, cy, cx, max(radius, 0.5 * self.spacing), max(radius, 0.5 * self.spacing), soft=0.5,
                         strength=strength)


def _poisson(rng: np.random.Generator, mean: float, at_least: int = 0) -> int:
    return max(int(rng.poisson(mean)) if mean > 0 else 0, at_least)


def _lesion_counts(rng: np.random.Generator, grade: int) -> dict:
    """Draw lesion counts consistent with ``grade`` (see the module docstring)."""
    g = grade
    n = {k: _poisson(rng, GRADE_PRIORS[k][g]) for k in ("ma", "he", "ex", "se")}
    n["laser"] = n["nv"] = 0
    if g == 1:
        n["ma"] = max(n["ma"], 1)
    if g == 2 and n["he"] + n["ex"] + n["se"] == 0:
        n[("he", "ex", "se")[int(rng.integers(3))]] = 1
    if g == 2:
        n["he"] = min(n["he"], SEVERE_HE - 1)
    if g == 3:
        n["he"] = max(n["he"], SEVERE_HE)
    if g == 4:
        n["laser"] = int(rng.random() < 0.45)
        n["nv"] = _poisson(rng, 1.0, at_least=0 if n["laser"] else 1)
    return n


def _place(rng: np.random.Generator, fovea: np.ndarray, disc: np.ndarray, disc_r: float, r_min: float,
           r_max: float) -> np.ndarray:
    """A random point at a distance in [r_min, r_max] from the fovea, inside the FOV, off the disc."""
    for _ in range(100):
        ang, rad = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(r_min**2, r_max**2))
        p = fovea + rad * np.array([np.sin(ang), np.cos(ang)])
        if np.hypot(*p) < FOV_RADIUS_MM - 0.3 and np.hypot(*(p - disc)) > disc_r + 0.35:
            return p
    return fovea + np.array([r_min, 0.0])


def _draw_lesions(cv: _Canvas, rng: np.random.Generator, counts: dict, fovea: np.ndarray, disc: np.ndarray,
                  disc_r: float) -> tuple[dict, list]:
    """Alpha maps per lesion type (supersampled) and a record of every lesion drawn."""
    alpha = {k: np.zeros((cv.n, cv.n), np.float32) for k in LESIONS}
    record = []
    for _ in range(counts["ma"]):
        p = _place(rng, fovea, disc, disc_r, 0.3, 4.0)
        r = rng.uniform(0.035, 0.065)
        cv.ellipse(alpha["ma"], *p, r, r, soft=0.3)
        record.append({"type": "ma", "centre_mm": p.round(3).tolist(), "radius_mm": round(r, 3)})
    for _ in range(counts["he"]):
        p = _place(rng, fovea, disc, disc_r, 0.4, 5.0)
        if rng.random() < 0.3:  # flame: elongated along the nerve fibres (roughly radial from the disc)
            ang = np.arctan2(p[0] - disc[0], p[1] - disc[1])
            ry, rx, kind = rng.uniform(0.05, 0.09), rng.uniform(0.2, 0.4), "flame"
        else:
            ang, kind = rng.uniform(0, np.pi), "blot"
            ry = rng.uniform(0.07, 0.28)
            rx = ry * rng.uniform(1.0, 1.6)
        cv.ellipse(alpha["he"], *p, ry, rx, ang, soft=0.35, strength=rng.uniform(0.7, 0.95))
        record.append({"type": "he", "kind": kind, "centre_mm": p.round(3).tolist(),
                       "radii_mm": [round(ry, 3), round(rx, 3)]})
    for _ in range(counts["ex"]):
        c = _place(rng, fovea, disc, disc_r, 0.6, 3.8)
        ring = rng.random() < 0.3
        m = int(rng.integers(6, 26))
        spread = rng.uniform(0.3, 0.8)
        for _ in range(m):
            if ring:  # circinate: exudates around a leaking centre
                t = rng.uniform(0, 2 * np.pi)
                q = c + spread * rng.uniform(0.8, 1.15) * np.array([np.sin(t), np.cos(t)])
            else:
                q = c + rng.normal(0, spread / 2, 2)
            if np.hypot(*q) > FOV_RADIUS_MM - 0.2 or np.hypot(*(q - disc)) < disc_r + 0.3:
                continue
            r = rng.uniform(0.03, 0.11)
            cv.ellipse(alpha["ex"], *q, r, r * rng.uniform(1.0, 1.5), rng.uniform(0, np.pi), soft=0.15)
        record.append({"type": "ex", "kind": "ring" if ring else "cluster", "centre_mm": c.round(3).tolist(),
                       "members": m})
    for _ in range(counts["se"]):
        p = _place(rng, fovea, disc, disc_r, 1.2, 3.8)
        r = rng.uniform(0.18, 0.42)
        cv.ellipse(alpha["se"], *p, r, r * rng.uniform(1.0, 1.6), rng.uniform(0, np.pi), gaussian=True,
                   strength=rng.uniform(0.6, 0.9))
        record.append({"type": "se", "centre_mm": p.round(3).tolist(), "radius_mm": round(r, 3)})
    if counts["laser"]:  # panretinal photocoagulation: a patchy hexagonal array outside the arcades
        r, gap = rng.uniform(0.12, 0.2), rng.uniform(2.6, 3.4)
        step = r * gap
        ys = np.arange(-FOV_RADIUS_MM, FOV_RADIUS_MM, step * np.sqrt(3) / 2)
        n = 0
        for j, y in enumerate(ys):
            for x in np.arange(-FOV_RADIUS_MM, FOV_RADIUS_MM, step) + (step / 2 if j % 2 else 0.0):
                p = np.array([y, x]) + rng.normal(0, 0.03, 2)
                if (np.hypot(*(p - fovea)) < 3.6 or np.hypot(*p) > FOV_RADIUS_MM - 0.3
                        or np.hypot(*(p - disc)) < disc_r + 0.6 or rng.random() < 0.45):
                    continue
                cv.ellipse(alpha["laser"], *p, r, r, soft=0.25)
                n += 1
        record.append({"type": "laser", "spots": n, "radius_mm": round(r, 3)})
    for _ in range(counts["nv"]):
        near_disc = rng.random() < 0.5
        c = disc + rng.normal(0, 0.3, 2) if near_disc else _place(rng, fovea, disc, disc_r, 2.4, 3.6)
        size = rng.uniform(0.4, 0.9)
        cv.ellipse(alpha["nv"], *c, size, size * rng.uniform(1.0, 1.5), rng.uniform(0, np.pi), gaussian=True,
                   strength=0.35)  # fibrous membrane
        for _ in range(int(rng.integers(4, 9))):  # tangle of fine new vessels
            pts, pos, head = [], c + rng.normal(0, size / 3, 2), rng.uniform(0, 2 * np.pi)
            for _ in range(int(rng.integers(10, 25))):
                head += rng.normal(0, 0.6)
                pos = pos + 0.05 * np.array([np.sin(head), np.cos(head)])
                pts.append(pos.copy())
            cv.polyline(alpha["nv"], np.asarray(pts), rng.uniform(0.012, 0.022))
        record.append({"type": "nv", "site": "disc" if near_disc else "elsewhere", "centre_mm": c.round(3).tolist()})
    return alpha, record


def _blend(img: np.ndarray, alpha: np.ndarray, colour, mode: str = "over") -> None:
    a = alpha[..., None]
    col = np.asarray(colour, np.float32)
    if mode == "multiply":
        img *= 1.0 - a + a * col
    else:
        img *= 1.0 - a
        img += a * col


def _downsample(a: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return a
    n = a.shape[0] // f
    return a.reshape(n, f, n, f, *a.shape[2:]).mean(axis=(1, 3))


def generate_fundus_phantom(size: int = 128, seed: int = 0, grade: int | None = None,
                            supersample: int | None = None) -> FundusPhantom:
    """Render one fundus phantom of ``size`` x ``size`` pixels; ``grade`` None draws it.

    Grades are drawn with probabilities (0.35, 0.2, 0.2, 0.125, 0.125): all grades are well
    represented (real screening data are dominated by grade 0; resample if you need that).
    ``supersample`` (default 2 up to 512 px, else 1) sets the rendering factor.
    """
    size = int(size)
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    if grade is not None and grade not in GRADES:
        raise ValueError(f"grade must be one of {GRADES} or None, got {grade!r}")
    ss = int(supersample or (2 if size <= 512 else 1))
    rng = np.random.default_rng(int(seed))
    g = int(rng.choice(5, p=[0.35, 0.2, 0.2, 0.125, 0.125])) if grade is None else int(grade)
    eye = "OD" if rng.random() < 0.5 else "OS"
    cv = _Canvas(size * ss)
    yy, xx = cv.y, cv.x

    # --- anatomy (right-eye coordinates; OS is mirrored at the end)
    fovea = np.array([rng.normal(0, 0.2), -0.7 + rng.normal(0, 0.25)])
    disc_r = rng.uniform(0.85, 1.05)
    disc = fovea + np.array([rng.normal(-0.25, 0.15), 4.5 * rng.uniform(0.93, 1.07)])
    cup = rng.uniform(0.3, 0.55)
    r_fov = np.hypot(yy, xx)

    base = np.array([0.80, 0.36, 0.15]) * rng.uniform(0.85, 1.1) + rng.normal(0, 0.025, 3)
    chor = SmoothField(rng, (FIELD_MM, FIELD_MM), 0.45).on_grid(yy[:, 0] + FIELD_MM / 2, xx[0] + FIELD_MM / 2)
    fine = SmoothField(rng, (FIELD_MM, FIELD_MM), 0.15, order=1).on_grid(yy[:, 0] + FIELD_MM / 2, xx[0] + FIELD_MM / 2)
    img = np.empty((cv.n, cv.n, 3), np.float32)
    tex = 1.0 + 0.035 * chor + 0.025 * fine
    for ch in range(3):
        img[..., ch] = base[ch] * tex ** (1.0 + 0.5 * (ch == 0))
    d_f = np.hypot(yy - fovea[0], xx - fovea[1])
    macula = (1.0 - rng.uniform(0.18, 0.3) * np.exp(-(d_f**2) / (2 * 1.3**2))
              - rng.uniform(0.12, 0.22) * np.exp(-(d_f**2) / (2 * 0.3**2)))
    img *= macula[..., None].astype(np.float32)

    disc_a = np.zeros((cv.n, cv.n), np.float32)
    cv.ellipse(disc_a, *disc, disc_r * 1.08, disc_r, soft=0.12)
    cup_a = np.zeros_like(disc_a)
    cv.ellipse(cup_a, disc[0], disc[1] + 0.15 * disc_r, disc_r * cup * 1.1, disc_r * cup, soft=0.5)
    _blend(img, 0.92 * disc_a, (0.96, 0.72, 0.42))
    _blend(img, 0.75 * cup_a, (1.0, 0.90, 0.72))

    vp = VesselTreeParams(fovea=tuple(fovea), disc=tuple(disc), arcade_radius=rng.uniform(2.7, 3.3), faz_radius=0.35,
                          artery_radius=0.06 * rng.uniform(0.9, 1.1), vein_radius=0.08 * rng.uniform(0.9, 1.1),
                          min_radius=0.01, half_extent=(FOV_RADIUS_MM, FOV_RADIUS_MM), max_depth=4)
    branches = VesselTreeGrower(rng, vp).grow()
    ves = rasterize(branches, (cv.n, cv.n), (FIELD_MM, FIELD_MM))
    thin = np.clip(ves.radius / 0.04, 0.35, 1.0)
    a_art = np.where(ves.artery, np.sqrt(ves.chord) * thin, 0.0).astype(np.float32)
    a_vein = np.where(ves.vein, np.sqrt(ves.chord) * thin, 0.0).astype(np.float32)
    _blend(img, 0.9 * a_art, (0.80, 0.36, 0.34), "multiply")
    _blend(img, 0.9 * a_vein, (0.52, 0.22, 0.26), "multiply")
    reflex = np.where(ves.artery & (ves.radius > 0.03), np.clip((ves.chord - 0.85) / 0.15, 0, 1),
                      0.0).astype(np.float32)
    _blend(img, 0.25 * reflex, (0.95, 0.75, 0.65))

    counts = _lesion_counts(rng, g)
    alpha, record = _draw_lesions(cv, rng, counts, fovea, disc, disc_r)
    _blend(img, 0.85 * alpha["se"], (0.93, 0.90, 0.80))
    _blend(img, 0.92 * alpha["ex"], (0.96, 0.86, 0.34))
    _blend(img, alpha["he"], (0.42, 0.07, 0.04), "multiply")
    _blend(img, 0.9 * alpha["ma"], (0.45, 0.08, 0.05), "multiply")
    rim = np.clip(ndimage.maximum_filter(alpha["laser"], size=max(ss, 3)) - alpha["laser"], 0, 1)
    _blend(img, 0.75 * rim, (0.22, 0.13, 0.07))
    _blend(img, 0.55 * alpha["laser"], (0.86, 0.72, 0.50))
    nv_membrane = np.minimum(alpha["nv"], 0.35)
    _blend(img, nv_membrane, (0.92, 0.90, 0.85))
    _blend(img, np.clip((alpha["nv"] - 0.35) / 0.65, 0, 1), (0.70, 0.12, 0.08))

    illum = 1.0 - rng.uniform(0.35, 0.55) * (r_fov / FOV_RADIUS_MM) ** rng.uniform(2.0, 3.0)
    shift = rng.normal(0, 0.6, 2)
    illum *= 1.0 + 0.08 * np.exp(-((yy - shift[0]) ** 2 + (xx - shift[1]) ** 2) / (2 * 3.0**2))
    img *= illum[..., None].astype(np.float32) * rng.uniform(0.9, 1.1)
    fov_a = np.clip((FOV_RADIUS_MM - r_fov) / (2 * cv.spacing) + 0.5, 0, 1).astype(np.float32)
    img = img * fov_a[..., None] + 0.02 * (1 - fov_a[..., None])

    # --- down to the output grid, then blur and sensor noise
    img = _downsample(img, ss)
    img = ndimage.gaussian_filter(img, sigma=(0.5, 0.5, 0))
    img += rng.normal(0, 0.008, img.shape).astype(np.float32)
    img = np.clip(img, 0, 1).astype(np.float32)
    fov = _downsample(fov_a, ss) >= 0.5
    vessels = np.zeros((size, size), np.uint8)
    vessels[_downsample(ves.artery.astype(np.float32), ss) >= 0.5] = 1
    vessels[_downsample(ves.vein.astype(np.float32), ss) >= 0.5] = 2
    disc_m = _downsample(disc_a, ss) >= 0.5
    # a lesion labels every pixel it covers by a quarter or more, so small lesions keep a mask
    lesions = {k: (_downsample(v, ss) >= 0.25) & fov for k, v in alpha.items()}
    out = [img, fov, vessels, disc_m] + [lesions[k] for k in LESIONS]
    if eye == "OS":
        out = [np.ascontiguousarray(a[:, ::-1]) for a in out]
    img, fov, vessels, disc_m = out[:4]
    lesions = dict(zip(LESIONS, out[4:]))
    params = {
        "version": VERSION, "seed": int(seed), "size": size, "grade": g, "grade_requested": grade, "eye": eye,
        "supersample": ss, "field_mm": FIELD_MM, "fov_radius_mm": FOV_RADIUS_MM, "fovea_mm": fovea.round(3).tolist(),
        "disc_mm": disc.round(3).tolist(), "disc_radius_mm": round(float(disc_r), 3), "cup_ratio": round(float(cup), 3),
        "base_rgb": base.round(3).tolist(),
        "arcade_radius_mm": round(vp.arcade_radius, 3), "vessel_branches": len(branches),
        "lesion_counts": {k: int(v) for k, v in counts.items()}, "lesions": record,
        "vessel_fraction_of_fov": round(float((vessels > 0).sum() / max(fov.sum(), 1)), 4),
        "coordinates": "right-eye mm, origin at the image centre, (y, x); OS images are mirrored",
    }
    return FundusPhantom(img, fov, vessels, disc_m, lesions, g, params)
