"""Procedural OCT macular-cube phantom with ground-truth labels (spec: ``specs/phantoms.md``).

Axis order is (D, H, W) = (B-scan / slow axis, depth / axial, lateral / fast axis). The default
field is OCTA-500's 6 mm subset: 6 mm (D) x 2 mm (H) x 6 mm (W), so a phantom of any size covers
the same anatomy; the same seed gives the same eye at 64^3 or 512^3 (only speckle, motion and
per-B-scan brightness are drawn per B-scan).

Pipeline:
1. en-face geometry (mm): Bruch's membrane (tilt, curvature, wobble), layer thicknesses with a
   foveal pit, parafoveal rim, nasal RNFL, foveal ONL and outer-segment thickening; optional drusen,
   subretinal fluid and intraretinal cysts; per-B-scan axial motion;
2. vessel tree (``vessels.py``) placed just under the ILM, casting shadows on every layer below;
3. per chunk of B-scans: layer labels -> mean reflectivity (dB) with textures -> depth attenuation
   -> speckle from complex Gaussian phasors convolved with an anisotropic PSF -> additive noise ->
   per-B-scan gain -> log compression to a ~50 dB display range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .fields import SmoothField
from .vessels import VesselTreeGrower, VesselTreeParams, rasterize

LAYER_NAMES = ("RNFL", "GCL", "IPL", "INL", "OPL", "ONL", "ELM", "EZ", "IZ", "RPE", "Choroid")
"""Layer label k (1..11) is LAYER_NAMES[k-1]; 0 is the vitreous above the ILM, 12 the sclera below."""
SURFACE_NAMES = ("ILM", "RNFL-GCL", "GCL-IPL", "IPL-INL", "INL-OPL", "OPL-ONL",
                 "ELM", "MZ-EZ", "EZ-IZ", "IZ-RPE", "BM", "CSI")
"""Boundary s is the top of layer s+1. ``ELM`` layer = ELM line + myoid zone; ``IZ`` = outer segments + IZ."""
OCTA500_SURFACES = {"ILM": 0, "IPL": 3, "OPL": 5, "ISOS": 7, "RPE": 9, "BM": 10}
"""Index into the surfaces array of each of OCTA-500's six labelled layer boundaries."""
LESION_NAMES = {0: "none", 1: "drusen", 2: "intraretinal_fluid", 3: "subretinal_fluid"}
CATEGORIES = ("normal", "drusen", "irf", "srf")
"""Category of a phantom (for stratified splits): its pathology, or 'normal'."""

# Mean backscatter per label in dB relative to the RPE (vitreous .. sclera), before jitter.
_LAYER_DB = np.array([-60.0, -7.0, -15.0, -11.0, -20.0, -11.0, -23.0, -14.0, -3.5, -13.0, 0.0, -9.0, -19.0])
# Normal thickness (mm) of RNFL..RPE outside the fovea and of the choroid.
_THICKNESS = np.array([0.025, 0.040, 0.035, 0.032, 0.028, 0.060, 0.026, 0.012, 0.028, 0.018, 0.24])


@dataclass
class OCTPhantom:
    """One phantom volume and its labels.

    image: float32 (D, H, W) in [0, 1] (log-compressed OCT intensity).
    layers: uint8 (D, H, W) layer label map (0 above ILM, 1..11 ``LAYER_NAMES``, 12 below CSI).
    surfaces: float32 (12, D, W) boundary depths in voxel-index units: voxel k is below boundary s
        when k >= surfaces[s]. Names in ``SURFACE_NAMES``.
    artery, vein: uint8 (D, W) disjoint en-face masks.
    lesions: uint8 (D, H, W) with ``LESION_NAMES`` values.
    params: JSON-serialisable record of every drawn parameter.
    """

    image: np.ndarray
    layers: np.ndarray
    surfaces: np.ndarray
    artery: np.ndarray
    vein: np.ndarray
    lesions: np.ndarray
    params: dict = field(default_factory=dict)


def _validate(size: Sequence[int], fov_mm: Sequence[float], pathology: str) -> tuple[int, int, int]:
    if len(size) != 3:
        raise ValueError(f"size must be (D, H, W), got {tuple(size)}")
    size = tuple(int(s) for s in size)
    if min(size) < 8:
        raise ValueError(f"every phantom dimension must be >= 8 voxels, got size={size}")
    if len(fov_mm) != 3 or min(fov_mm) <= 0:
        raise ValueError(f"fov_mm must be three positive extents (D, H, W) in mm, got {tuple(fov_mm)}")
    if pathology not in ("random",) + CATEGORIES:
        raise ValueError(f"pathology must be 'random' or one of {CATEGORIES}, got {pathology!r}")
    return size


class _Geometry:
    """En-face anatomy in mm, resolution independent apart from the per-B-scan draws."""

    def __init__(self, seed: int, size: tuple[int, int, int], fov: tuple[float, float, float], pathology: str):
        D, H, W = size
        rng = np.random.default_rng([seed, 0])
        self.fov = fov
        self.y = (np.arange(D) + 0.5) * fov[0] / D - fov[0] / 2  # B-scan positions (mm)
        self.x = (np.arange(W) + 0.5) * fov[2] / W - fov[2] / 2  # lateral positions (mm)
        Y, X = np.meshgrid(self.y, self.x, indexing="ij")
        p: dict = {}
        eye = "OD" if rng.random() < 0.5 else "OS"
        nasal = 1.0 if eye == "OD" else -1.0
        fovea = rng.normal(0.0, 0.15, 2).clip(-0.4, 0.4)
        p.update(eye=eye, fovea_mm=fovea.round(4).tolist())
        r = np.hypot(Y - fovea[0], X - fovea[1])

        pit_sigma = rng.uniform(0.33, 0.45)
        pit = 1.0 - 0.97 * np.exp(-(r**2) / (2 * pit_sigma**2))
        rim = 1.0 + rng.uniform(0.25, 0.45) * np.exp(-(((r - 1.1) / 0.7) ** 2))
        ecc = np.exp(-np.clip(r - 1.5, 0, None) / 6.0)
        thick = _THICKNESS * rng.uniform(0.85, 1.15, len(_THICKNESS))
        ext2 = (fov[0], fov[2])
        th = np.empty((len(_THICKNESS),) + Y.shape)
        for k in range(len(_THICKNESS)):
            wobble = 1.0 + 0.08 * SmoothField(rng, ext2, 1.5).at(Y + fov[0] / 2, X + fov[2] / 2)
            th[k] = thick[k] * wobble
        towards_disc = 1.0 / (1.0 + np.exp(-nasal * (X - fovea[1]) / 0.8))
        arcade_band = np.exp(-(((np.abs(Y - fovea[0]) - 2.0) / 0.8) ** 2))
        rnfl_pit = 1.0 - np.exp(-(r**2) / (2 * (pit_sigma * 1.5) ** 2))
        th[0] *= (0.5 + 1.4 * towards_disc + 0.5 * arcade_band) * rnfl_pit
        for k in (1, 2, 3):  # GCL, IPL, INL thin to ~0 at the foveola, thickest on the rim
            th[k] *= pit * rim * ecc
        th[4] *= 0.3 + 0.7 * pit  # OPL thins too, less
        th[5] *= 1.0 + rng.uniform(0.5, 0.9) * np.exp(-(r**2) / (2 * 0.5**2))  # ONL thicker at fovea
        th[8] *= 1.0 + 0.4 * np.exp(-(r**2) / (2 * 0.4**2))  # outer segments: foveal bulge
        th[10] *= 1.0 + 0.15 * np.exp(-(r**2) / (2 * 1.5**2))  # subfoveal choroid thickest
        p.update(pit_sigma_mm=round(pit_sigma, 4), thickness_mm=dict(zip(LAYER_NAMES, thick.round(4).tolist())))

        # Pathology: drusen lift RPE and everything above; SRF lifts the retina off the RPE; IRF swells INL/ONL.
        category = pathology if pathology != "random" else str(rng.choice(CATEGORIES, p=[0.55, 0.15, 0.15, 0.15]))
        p["category"] = category
        self.drusen = np.zeros_like(Y)
        self.srf = np.zeros_like(Y)
        self.cysts: list[dict] = []
        if category == "drusen":
            for _ in range(int(rng.integers(4, 13))):
                c = fovea + rng.normal(0, 0.7, 2)
                self.drusen = np.maximum(
                    self.drusen,
                    rng.uniform(0.03, 0.09)
                    * np.exp(-((Y - c[0]) ** 2 + (X - c[1]) ** 2) / (2 * rng.uniform(0.08, 0.2) ** 2)),
                )
        elif category == "srf":
            c = fovea + rng.normal(0, 0.3, 2)
            rad, height = rng.uniform(0.5, 1.1), rng.uniform(0.08, 0.22)
            self.srf = height * np.clip(1 - ((Y - c[0]) ** 2 + (X - c[1]) ** 2) / rad**2, 0, None) ** 1.5
            p["srf"] = {"centre_mm": c.round(4).tolist(), "radius_mm": round(rad, 4), "height_mm": round(height, 4)}
        elif category == "irf":
            for _ in range(int(rng.integers(3, 9))):
                c = fovea + rng.normal(0, 0.5, 2)
                layer = 5 if rng.random() < 0.6 else 3  # ONL or INL
                cyst = {"centre_mm": c, "radius_mm": rng.uniform(0.08, 0.3), "half_height_mm": rng.uniform(0.02, 0.07),
                        "layer": layer}
                bump = np.clip(1 - ((Y - c[0]) ** 2 + (X - c[1]) ** 2) / cyst["radius_mm"] ** 2, 0, None)
                th[layer] += 2.2 * cyst["half_height_mm"] * np.sqrt(bump)  # the layer swells around the cyst
                self.cysts.append(cyst)
            p["cysts"] = [
                {"centre_mm": c["centre_mm"].round(4).tolist(), "radius_mm": round(c["radius_mm"], 4),
                 "half_height_mm": round(c["half_height_mm"], 4), "layer": LAYER_NAMES[c["layer"]]}
                for c in self.cysts
            ]
        p["lesion_volume_fraction_hint"] = float(np.mean(self.drusen > 0.005) + np.mean(self.srf > 0.005))

        # Bruch's membrane: tilt + curvature + wobble; then stack the layers above and the choroid below.
        tilt = rng.normal(0, 0.03, 2)
        curv = rng.uniform(-0.005, 0.02)
        bm = tilt[0] * Y + tilt[1] * X + curv * (Y**2 + X**2)
        bm += 0.02 * SmoothField(rng, ext2, 2.0).at(Y + fov[0] / 2, X + fov[2] / 2)
        above = th[:10].copy()  # RNFL .. RPE
        above[9] += self.drusen  # drusen material sits between the RPE band and BM
        above[8] += self.srf  # fluid sits between the outer segments and the RPE
        cum = np.cumsum(above[::-1], axis=0)[::-1]  # distance of each layer's top above BM
        surf = np.concatenate([bm[None] - cum, bm[None], bm[None] + th[10][None]])  # (12, D, W)
        self.band = {7: th[6] * 0.3, 9: th[8], 10: th[9]}  # ELM line, IZ (above SRF), RPE (above drusen)
        self.thickness = th

        # Place the retina in depth: BM at 45-60 % of the scan, then keep everything inside the window.
        depth = fov[1]
        motion = self._motion(seed, D, depth)
        surf += rng.uniform(0.45, 0.6) * depth - np.median(bm)
        surf += motion[None, :, None]
        top_gap, bottom_gap = surf[0].min() - 0.05 * depth, 0.97 * depth - surf[-1].max()
        if top_gap < 0:
            surf -= top_gap
        elif bottom_gap < 0:
            surf += max(bottom_gap, -top_gap)
        self.surf_mm = surf
        p.update(tilt=tilt.round(5).tolist(), curvature_per_mm=round(curv, 5),
                 motion_std_mm=round(float(motion.std()), 5))

        # Vessels in the en-face plane; disc lies outside the cube on the nasal side.
        disc = np.array([fovea[0] + rng.uniform(0.1, 0.4), fovea[1] + nasal * rng.uniform(3.8, 4.4)])
        vp = VesselTreeParams(fovea=tuple(fovea), disc=tuple(disc), arcade_radius=rng.uniform(1.9, 2.4),
                              faz_radius=rng.uniform(0.25, 0.35), half_extent=(fov[0] / 2, fov[2] / 2))
        branches = VesselTreeGrower(rng, vp).grow()
        self.vessels = rasterize(branches, (D, W), (fov[0], fov[2]))
        p.update(disc_mm=disc.round(4).tolist(), arcade_radius_mm=round(vp.arcade_radius, 4),
                 faz_radius_mm=round(vp.faz_radius, 4), n_vessel_branches=len(branches))

        # Image formation parameters (per volume).
        self.layer_db = _LAYER_DB + rng.normal(0, 1.0, len(_LAYER_DB))
        self.vessel_db = rng.uniform(-8, -4)
        self.shadow_min = rng.uniform(0.3, 0.6)
        self.mu_retina, self.mu_choroid = rng.uniform(0.2, 0.6), rng.uniform(4.0, 6.0)
        self.noise_db = rng.uniform(-38, -35)
        self.display = (rng.uniform(-34, -31), rng.uniform(6, 9))
        self.psf_sigma = (rng.uniform(0.7, 1.0), rng.uniform(1.0, 1.5))  # voxels: axial, lateral
        self.choroid_fine = SmoothField(rng, fov, 0.05, order=1)
        self.choroid_coarse = SmoothField(rng, fov, 0.12, order=1)
        p.update(layer_db=self.layer_db.round(3).tolist(), vessel_db=round(self.vessel_db, 3),
                 shadow_min=round(self.shadow_min, 3), mu_per_mm=[round(self.mu_retina, 3), round(self.mu_choroid, 3)],
                 noise_db=round(self.noise_db, 3), display_db=[round(v, 3) for v in self.display],
                 psf_sigma_vox=[round(v, 3) for v in self.psf_sigma])

        # Per-B-scan gain and a slow lateral brightness field.
        g = np.random.default_rng([seed, 2])
        self.gain = np.exp(ndimage.gaussian_filter1d(g.normal(0, 0.25, D), 2.0, mode="nearest"))
        self.lateral = np.exp(0.15 * SmoothField(rng, ext2, 1.5).at(Y + fov[0] / 2, X + fov[2] / 2))
        self.lateral *= np.exp(-((X / (0.9 * fov[2])) ** 2))  # vignetting towards the scan edges
        self.params = p

    @staticmethod
    def _motion(seed: int, n: int, depth: float) -> np.ndarray:
        """Axial offset (mm) per B-scan: slow drift + small jitter, as in real acquisitions."""
        g = np.random.default_rng([seed, 1])
        drift = ndimage.gaussian_filter1d(np.cumsum(g.normal(0, 0.004, n)), max(n / 64, 1.0), mode="nearest")
        return drift - drift.mean() + g.normal(0, 0.003, n)


def _psf_energy(sigma_z: float, sigma_x: float) -> float:
    delta = np.zeros((33, 33), np.float64)
    delta[16, 16] = 1.0
    h = ndimage.gaussian_filter1d(ndimage.gaussian_filter1d(delta, sigma_z, axis=0), sigma_x, axis=1)
    return float((h**2).sum())


def _render_chunk(g: _Geometry, seed: int, d0: int, d1: int, H: int, pz: float):
    """Image, layer labels and lesion labels of B-scans d0..d1-1."""
    n = d1 - d0
    W = g.surf_mm.shape[2]
    z = ((np.arange(H) + 0.5) * pz).astype(np.float32)[None, :, None]
    S = g.surf_mm[:, d0:d1, None, :].astype(np.float32)  # (12, n, 1, W)
    labels = np.zeros((n, H, W), np.uint8)
    for s in range(S.shape[0]):
        labels += z >= S[s]
    ext = np.concatenate([np.full((1,) + S.shape[1:], -np.inf, np.float32), S])  # top of each label
    top = np.take_along_axis(ext[:, :, 0, :].transpose(1, 0, 2), labels.astype(np.intp), axis=1)
    depth_in = z - top  # (n, H, W) mm below the top of the voxel's layer
    db = g.layer_db[labels].astype(np.float32)
    lesions = np.zeros((n, H, W), np.uint8)

    # Sub-bands: ELM line over the dark myoid zone; IZ band over subretinal fluid; RPE band over drusen.
    fills = {7: (g.layer_db[6], 0), 9: (-33.0, 3), 10: (-12.0, 1)}
    for lab, band in g.band.items():
        m = (labels == lab) & (depth_in > band[d0:d1, None, :] + 1e-4)
        fill_db, lesion = fills[lab]
        db[m] = fill_db
        if lesion:
            lesions[m] = lesion

    # Choroid: stroma with dark vessel lumens, larger lumens deeper (Haller's layer); sclera texture.
    yy = np.broadcast_to((g.y[d0:d1] + g.fov[0] / 2)[:, None, None], (n, H, W))
    xx = np.broadcast_to((g.x + g.fov[2] / 2)[None, None, :], (n, H, W))
    zz = np.broadcast_to(z, (n, H, W))
    m = labels == 11
    if m.any():
        rel = depth_in[m] / np.maximum(g.thickness[10][d0:d1, None, :].repeat(H, 1)[m], 1e-3)
        noise = np.where(rel > 0.4, g.choroid_coarse.at(yy[m], zz[m], xx[m]), g.choroid_fine.at(yy[m], zz[m], xx[m]))
        db[m] += -14.0 / (1.0 + np.exp(-(noise - 0.2) / 0.12)) + 2.0 * np.exp(-rel / 0.1)
    m = labels == 12
    if m.any():
        db[m] += 2.0 * g.choroid_coarse.at(yy[m], zz[m], xx[m])

    # Intraretinal cysts: dark ellipsoids centred in their (swollen) layer.
    for c in g.cysts:
        cy, cx = c["centre_mm"]
        iy = int(np.argmin(np.abs(g.y - cy)))
        ix = int(np.argmin(np.abs(g.x - cx)))
        zc = 0.5 * (g.surf_mm[c["layer"], iy, ix] + g.surf_mm[c["layer"] + 1, iy, ix])
        rho = ((yy - g.fov[0] / 2 - cy) ** 2 + (xx - g.fov[2] / 2 - cx) ** 2) / c["radius_mm"] ** 2
        m = rho + ((zz - zc) / c["half_height_mm"]) ** 2 < 1.0
        m &= (labels >= 3) & (labels <= 7)
        db[m] = -32.0
        lesions[m] = 2

    # Vessels: bright cross-section just under the ILM, shadow in every voxel below it.
    v = g.vessels
    chord = v.chord[d0:d1, None, :]
    half = (v.radius[d0:d1, None, :] * chord).astype(np.float32)
    zc = S[0] + v.radius[d0:d1, None, :] + 0.005
    inside = (chord > 0) & (np.abs(z - zc) < half)
    db[inside] = g.vessel_db
    pix = min(g.fov[0] / len(g.y), g.fov[2] / len(g.x))
    strength = chord * np.clip(2 * v.radius[d0:d1, None, :] / pix, 0, 1)
    shadow = np.where((z > zc + half) & (chord > 0), 1.0 - (1.0 - g.shadow_min) * strength, 1.0)

    # Mean intensity (linear), attenuation with depth, shadows (on amplitude), brightness fields.
    att = np.exp(-2 * (g.mu_retina * np.clip(z - S[0], 0, None)
                       + (g.mu_choroid - g.mu_retina) * np.clip(z - S[10], 0, None)))
    gain = (g.gain[d0:d1, None, None] * g.lateral[d0:d1, None, :]).astype(np.float32)
    intensity = np.power(10.0, db / 10.0, dtype=np.float32) * att * shadow**2 * gain

    # Speckle: complex Gaussian phasors x amplitude, convolved with the PSF within each B-scan.
    phasor = np.empty((2, n, H, W), np.float32)
    noise = np.empty((2, n, H, W), np.float32)
    for i in range(n):
        r = np.random.default_rng([seed, 3, d0 + i])
        phasor[:, i] = r.standard_normal((2, H, W), dtype=np.float32)
        noise[:, i] = r.standard_normal((2, H, W), dtype=np.float32)
    amp = np.sqrt(intensity / (2 * _psf_energy(*g.psf_sigma)))
    phasor *= amp[None]
    phasor = ndimage.gaussian_filter1d(phasor, g.psf_sigma[0], axis=2, truncate=3.0)
    phasor = ndimage.gaussian_filter1d(phasor, g.psf_sigma[1], axis=3, truncate=3.0)
    phasor += noise * np.float32(np.sqrt(10 ** (g.noise_db / 10) / 2))
    power = phasor[0] ** 2 + phasor[1] ** 2
    lo, hi = g.display
    image = (10.0 * np.log10(power + 1e-12) - lo) / (hi - lo)
    return np.clip(image, 0.0, 1.0).astype(np.float32), labels, lesions


def generate_oct_phantom(
    size: Sequence[int] = (128, 128, 128),
    seed: int = 0,
    pathology: str = "random",
    fov_mm: Sequence[float] = (6.0, 2.0, 6.0),
    chunk: int = 16,
) -> OCTPhantom:
    """Generate one phantom OCT volume.

    Args:
        size: (D, H, W) in voxels, each >= 8.
        seed: the same seed gives the same phantom, bit for bit.
        pathology: "random" (55 % normal) or one of ``CATEGORIES``.
        fov_mm: physical extent (D, H, W); voxel spacing is fov_mm / size.
        chunk: B-scans rendered at once (memory / speed trade-off; the result does not depend on it).
    """
    D, H, W = _validate(size, fov_mm, pathology)
    seed = int(seed)
    fov = tuple(float(f) for f in fov_mm)
    g = _Geometry(seed, (D, H, W), fov, pathology)
    pz = fov[1] / H
    image = np.empty((D, H, W), np.float32)
    layers = np.empty((D, H, W), np.uint8)
    lesions = np.empty((D, H, W), np.uint8)
    for d0 in range(0, D, max(int(chunk), 1)):
        d1 = min(d0 + max(int(chunk), 1), D)
        image[d0:d1], layers[d0:d1], lesions[d0:d1] = _render_chunk(g, seed, d0, d1, H, pz)
    params = dict(g.params, seed=seed, size=[D, H, W], fov_mm=list(fov),
                  spacing_mm=[f / s for f, s in zip(fov, (D, H, W))],
                  layer_names=list(LAYER_NAMES), surface_names=list(SURFACE_NAMES), octa500_surfaces=OCTA500_SURFACES,
                  lesion_names={str(k): v for k, v in LESION_NAMES.items()})
    surfaces = (g.surf_mm / pz - 0.5).astype(np.float32)
    return OCTPhantom(image, layers, surfaces, g.vessels.artery.astype(np.uint8), g.vessels.vein.astype(np.uint8),
                      lesions, params)
