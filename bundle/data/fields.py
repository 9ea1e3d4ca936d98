"""Smooth random fields defined in physical units (mm).

The phantoms draw their low-frequency variation (layer thickness, brightness, choroid texture)
from these fields. Each field is a coarse grid of white noise whose spacing is set in mm and which
is interpolated at the requested points, so the same seed gives the same anatomy at any voxel size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


class SmoothField:
    """Band-limited random field over a box ``[0, extent_mm]`` of any dimension.

    Args:
        rng: random generator the grid values are drawn from.
        extent_mm: size of the box per axis, in mm.
        corr_mm: grid spacing (about the correlation length), in mm.
        order: spline order used to interpolate the grid (1 = linear, 3 = cubic).
    """

    def __init__(self, rng: np.random.Generator, extent_mm: Sequence[float], corr_mm: float, order: int = 3):
        if corr_mm <= 0:
            raise ValueError(f"corr_mm must be positive, got {corr_mm}")
        self.corr_mm = float(corr_mm)
        self.order = order
        shape = [int(np.ceil(e / corr_mm)) + 4 for e in extent_mm]
        self.grid = rng.standard_normal(shape).astype(np.float32)
        if order > 1:
            self.grid = ndimage.spline_filter(self.grid, order=order).astype(np.float32)

    def at(self, *coords_mm: np.ndarray) -> np.ndarray:
        """Field values at points given by one array of mm coordinates per axis (broadcast)."""
        coords = np.broadcast_arrays(*coords_mm)
        idx = np.stack([c.ravel() / self.corr_mm + 1.5 for c in coords]).astype(np.float32)
        out = ndimage.map_coordinates(self.grid, idx, order=self.order, mode="nearest", prefilter=False)
        return out.reshape(coords[0].shape)

    def on_grid(self, *axes_mm: np.ndarray) -> np.ndarray:
        """Field values on the tensor grid spanned by 1D coordinate arrays (one per axis)."""
        mesh = np.meshgrid(*axes_mm, indexing="ij")
        return self.at(*mesh)
