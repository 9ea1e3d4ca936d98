"""Retinal vessel trees in the en-face plane, grown by recursive branching and rasterised.

Coordinates are (y, x) in mm with the origin at the centre of the scanned field. For OCT the
en-face plane is (D, W) (slow axis, fast axis); for fundus photographs it is (rows, columns).
The same tree renders at any resolution: geometry lives in mm, pixels only at rasterisation.

Growth: arteries and veins leave the optic disc as four arcades (superior and inferior, one
artery and one vein each) that curve around the fovea at an arcade radius; side branches split
off at intervals, turn towards or away from the fovea, taper at each bifurcation and stop at the
foveal avascular zone (FAZ), at a minimum radius or outside the field. A few small papillomacular
vessels run straight from the disc towards the fovea.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

ARTERY, VEIN = 0, 1


@dataclass
class Branch:
    """One vessel segment: polyline ``points`` (N, 2) in mm (y, x), ``radii`` (N,) in mm, ``kind``."""

    points: np.ndarray
    radii: np.ndarray
    kind: int


@dataclass
class VesselTreeParams:
    """Geometry of one tree; every length in mm."""

    fovea: tuple[float, float]
    disc: tuple[float, float]
    arcade_radius: float = 2.2
    faz_radius: float = 0.3
    artery_radius: float = 0.055
    vein_radius: float = 0.07
    min_radius: float = 0.008
    half_extent: tuple[float, float] = (3.0, 3.0)
    step: float = 0.03
    max_depth: int = 3


def _rotate(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.hypot(v[0], v[1])
    return v / n if n > 0 else v


class VesselTreeGrower:
    """Grows arteries and veins from the disc; call :meth:`grow` for the list of branches."""

    def __init__(self, rng: np.random.Generator, params: VesselTreeParams):
        self.rng = rng
        self.p = params
        self.fovea = np.asarray(params.fovea, dtype=np.float64)
        self.disc = np.asarray(params.disc, dtype=np.float64)
        self.branches: list[Branch] = []

    def _outside(self, pos: np.ndarray, margin: float) -> bool:
        hy, hx = self.p.half_extent
        return abs(pos[0]) > hy + margin or abs(pos[1]) > hx + margin

    def _spawn_children(self, pts: list, rads: list, heading_at: list, kind: int, depth: int, spacing: tuple):
        """Side branches at random arc-length intervals along a finished parent."""
        if depth >= self.p.max_depth or len(pts) < 3:
            return
        pts_a = np.asarray(pts)
        seg = np.hypot(*np.diff(pts_a, axis=0).T)
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        s = self.rng.uniform(*spacing) * 0.5
        while s < arc[-1]:
            i = int(np.searchsorted(arc, s))
            i = min(i, len(pts) - 1)
            pos = pts_a[i]
            if not self._outside(pos, 0.0):
                to_fovea = self.fovea - pos
                heading = heading_at[i]
                cross = heading[0] * to_fovea[1] - heading[1] * to_fovea[0]
                inward = self.rng.random() < 0.6
                sign = -np.sign(cross) if inward else np.sign(cross)
                sign = sign if sign != 0 else 1.0
                angle = sign * np.deg2rad(self.rng.uniform(35, 75))
                child_r = rads[i] * self.rng.uniform(0.45, 0.7)
                if child_r >= self.p.min_radius:
                    self._grow_free(pos, _rotate(heading, angle), child_r, kind, depth + 1)
            s += self.rng.uniform(*spacing)

    def _grow_free(self, start: np.ndarray, heading: np.ndarray, radius: float, kind: int, depth: int):
        """A side branch: persistent random walk that tapers and stops at the FAZ or the field edge."""
        length = self.rng.uniform(0.8, 1.6) * (radius / 0.02) ** 0.7
        pts, rads, heads = [start.copy()], [radius], [heading.copy()]
        pos, r, travelled = start.copy(), radius, 0.0
        while travelled < length:
            heading = _unit(heading + self.rng.normal(0.0, 0.12, 2))
            to_f = self.fovea - pos
            dist_f = np.hypot(*to_f)
            if dist_f < self.p.faz_radius * 2.0:  # bend away from the avascular zone
                heading = _unit(heading - 0.3 * to_f / max(dist_f, 1e-6))
            pos = pos + self.p.step * heading
            travelled += self.p.step
            r = r * np.exp(-self.p.step / 3.0)
            if r < self.p.min_radius or self._outside(pos, 0.2) or np.hypot(*(self.fovea - pos)) < self.p.faz_radius:
                break
            pts.append(pos.copy())
            rads.append(r)
            heads.append(heading.copy())
        if len(pts) >= 2:
            self.branches.append(Branch(np.asarray(pts), np.asarray(rads), kind))
            self._spawn_children(pts, rads, heads, kind, depth, spacing=(0.25, 0.6))

    def _grow_arcade(self, side: float, kind: int, radius: float):
        """Main vessel from the disc around the fovea at the arcade radius (side +1 / -1: sup / inf)."""
        p = self.p
        r_arc = p.arcade_radius * self.rng.uniform(0.9, 1.1) + (0.12 if kind == VEIN else 0.0)
        to_f = _unit(self.fovea - self.disc)
        heading = _rotate(to_f, side * np.deg2rad(self.rng.uniform(35, 50)))
        start_angle = np.arctan2(*(self.disc - self.fovea))
        pos, r = self.disc.copy(), radius
        pts, rads, heads = [pos.copy()], [r], [heading.copy()]
        wobble = self.rng.normal(0, 0.04)
        for _ in range(int(12.0 / p.step)):
            v = pos - self.fovea
            dist = np.hypot(*v)
            tangent = _unit(np.array([-v[1], v[0]]))
            if np.dot(tangent, heading) < 0:
                tangent = -tangent
            swept = np.angle(np.exp(1j * (np.arctan2(*v) - start_angle)))
            target = r_arc * (1.0 + 0.35 * max(abs(swept) - np.pi / 2, 0.0))  # spiral out towards the raphe
            desired = _unit(tangent - 1.5 * (dist - target) / target * v / max(dist, 1e-6))
            wobble = 0.9 * wobble + self.rng.normal(0, 0.03)
            heading = _unit(heading + 0.12 * (desired - heading) + wobble * tangent * 0.1)
            pos = pos + p.step * heading
            r = r * np.exp(-p.step / 10.0)
            swept = np.angle(np.exp(1j * (np.arctan2(*(pos - self.fovea)) - start_angle)))
            pts.append(pos.copy())
            rads.append(r)
            heads.append(heading.copy())
            if abs(swept) > np.deg2rad(150) or (self._outside(pos, 0.5) and abs(swept) > np.deg2rad(60)):
                break
        self.branches.append(Branch(np.asarray(pts), np.asarray(rads), kind))
        self._spawn_children(pts, rads, heads, kind, 0, spacing=(0.3, 0.7))

    def grow(self) -> list[Branch]:
        p = self.p
        for side in (1.0, -1.0):
            self._grow_arcade(side, ARTERY, p.artery_radius * self.rng.uniform(0.85, 1.15))
            self._grow_arcade(side, VEIN, p.vein_radius * self.rng.uniform(0.85, 1.15))
        to_f = _unit(self.fovea - self.disc)
        for i in range(int(self.rng.integers(2, 5))):
            heading = _rotate(to_f, np.deg2rad(self.rng.normal(0, 8)))
            kind = ARTERY if i % 2 == 0 else VEIN
            self._grow_free(self.disc.copy(), heading, self.rng.uniform(0.018, 0.028), kind, 1)
        return self.branches


@dataclass
class EnfaceVessels:
    """Rasterised vessels on a (rows, cols) grid.

    ``artery``/``vein``: disjoint boolean masks; ``radius``: radius (mm) of the nearest vessel;
    ``chord``: half-chord fraction sqrt(1 - (d/r)^2) in [0, 1] (0 outside vessels), i.e. how much
    of the vessel's diameter a ray through that pixel crosses; ``kind``: 0 artery, 1 vein.
    """

    artery: np.ndarray
    vein: np.ndarray
    radius: np.ndarray
    chord: np.ndarray
    kind: np.ndarray


def _densify(points: np.ndarray, radii: np.ndarray, max_step: float) -> tuple[np.ndarray, np.ndarray]:
    seg = np.hypot(*np.diff(points, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(int(np.ceil(arc[-1] / max_step)) + 1, 2)
    s = np.linspace(0.0, arc[-1], n)
    pts = np.stack([np.interp(s, arc, points[:, 0]), np.interp(s, arc, points[:, 1])], axis=1)
    return pts, np.interp(s, arc, radii)


def rasterize(branches: list[Branch], shape: tuple[int, int], extent_mm: tuple[float, float]) -> EnfaceVessels:
    """Render branches onto a grid of ``shape`` pixels covering ``extent_mm`` centred on the origin."""
    spacing = (extent_mm[0] / shape[0], extent_mm[1] / shape[1])
    per_kind = []
    for kind in (ARTERY, VEIN):
        centre_r = np.zeros(shape, dtype=np.float64)
        for b in branches:
            if b.kind != kind:
                continue
            pts, rad = _densify(b.points, b.radii, 0.4 * min(spacing))
            iy = np.floor((pts[:, 0] + extent_mm[0] / 2) / spacing[0]).astype(np.int64)
            ix = np.floor((pts[:, 1] + extent_mm[1] / 2) / spacing[1]).astype(np.int64)
            ok = (iy >= 0) & (iy < shape[0]) & (ix >= 0) & (ix < shape[1])
            np.maximum.at(centre_r, (iy[ok], ix[ok]), rad[ok])
        if not centre_r.any():
            per_kind.append((np.full(shape, np.inf), np.zeros(shape)))
            continue
        dist, idx = ndimage.distance_transform_edt(centre_r == 0, sampling=spacing, return_indices=True)
        per_kind.append((dist, centre_r[idx[0], idx[1]]))
    (d_a, r_a), (d_v, r_v) = per_kind
    # A vessel labels a pixel only where it covers about half of it: sub-pixel vessels vanish at
    # coarse resolutions instead of inflating the masks to whole pixels.
    half_pix = 0.25 * min(spacing)
    ratio_a = np.where(r_a >= half_pix, d_a / np.maximum(r_a, 1e-9), np.inf)
    ratio_v = np.where(r_v >= half_pix, d_v / np.maximum(r_v, 1e-9), np.inf)
    artery = (ratio_a <= 1.0) & (ratio_a <= ratio_v)
    vein = (ratio_v <= 1.0) & ~artery
    ratio = np.where(artery, ratio_a, np.where(vein, ratio_v, np.inf))
    radius = np.where(artery, r_a, np.where(vein, r_v, 0.0))
    chord = np.sqrt(np.clip(1.0 - ratio**2, 0.0, 1.0))
    kind = np.where(vein, VEIN, ARTERY)
    return EnfaceVessels(artery, vein, radius.astype(np.float32), chord.astype(np.float32), kind.astype(np.uint8))
