import json

import numpy as np
import pytest
from scipy import ndimage

from bundle.data import LAYER_NAMES, SURFACE_NAMES, generate_oct_phantom

SIZE = (48, 64, 48)


@pytest.fixture(scope="module")
def normal():
    return generate_oct_phantom(SIZE, seed=3, pathology="normal")


def test_same_seed_repeats_exactly_and_chunking_does_not_matter(normal):
    again = generate_oct_phantom(SIZE, seed=3, pathology="normal", chunk=5)
    for name in ("image", "layers", "surfaces", "artery", "vein", "lesions"):
        np.testing.assert_array_equal(getattr(normal, name), getattr(again, name), err_msg=name)
    assert json.dumps(normal.params, sort_keys=True) == json.dumps(again.params, sort_keys=True)


def test_different_seeds_differ(normal):
    other = generate_oct_phantom(SIZE, seed=4, pathology="normal")
    assert np.abs(other.image - normal.image).mean() > 0.05
    assert not np.array_equal(other.artery, normal.artery)


def test_shapes_dtypes_and_ranges():
    ph = generate_oct_phantom((16, 40, 24), seed=0)
    assert ph.image.shape == (16, 40, 24) and ph.image.dtype == np.float32
    assert ph.layers.shape == ph.lesions.shape == (16, 40, 24)
    assert ph.surfaces.shape == (len(SURFACE_NAMES), 16, 24)
    assert ph.artery.shape == ph.vein.shape == (16, 24)
    assert 0.0 <= ph.image.min() and ph.image.max() <= 1.0
    assert ph.layers.max() <= len(LAYER_NAMES) + 1
    json.dumps(ph.params)  # serialisable


@pytest.mark.parametrize("pathology", ["normal", "drusen", "irf", "srf"])
def test_layer_order_everywhere(pathology):
    ph = generate_oct_phantom(SIZE, seed=11, pathology=pathology)
    assert (np.diff(ph.surfaces, axis=0) >= 0).all(), "boundary surfaces cross"
    assert (np.diff(ph.layers.astype(int), axis=1) >= 0).all(), "labels must not decrease with depth"
    # the label map agrees with the surfaces: voxel k is below surface s iff k >= surfaces[s]
    k = np.arange(SIZE[1])[None, :, None]
    expected = sum((k >= ph.surfaces[s][:, None, :]) for s in range(len(SURFACE_NAMES)))
    assert (expected == ph.layers).mean() > 0.999
    assert ph.surfaces[0].min() > 0 and ph.surfaces[-1].max() < SIZE[1], "retina and choroid stay in the window"


def test_inner_layers_thinnest_at_the_fovea(normal):
    p = normal.params
    D, _, W = SIZE
    inner = normal.surfaces[4] - normal.surfaces[0]  # ILM -> INL/OPL: RNFL+GCL+IPL+INL
    y = (np.arange(D) + 0.5) * p["fov_mm"][0] / D - p["fov_mm"][0] / 2
    x = (np.arange(W) + 0.5) * p["fov_mm"][2] / W - p["fov_mm"][2] / 2
    fy, fx = p["fovea_mm"]
    r = np.hypot(y[:, None] - fy, x[None, :] - fx)
    assert inner[r < 0.15].mean() < 0.2 * np.median(inner)
    iy, ix = np.unravel_index(np.argmin(inner), inner.shape)
    assert r[iy, ix] < 0.5, "thinnest inner retina must be at the foveal pit"
    onl = normal.surfaces[6] - normal.surfaces[5]
    assert onl[r < 0.15].mean() > 1.2 * np.median(onl), "ONL thickens at the fovea"


def test_vessel_masks_nonempty_disjoint_and_shadowing(normal):
    a, v = normal.artery.astype(bool), normal.vein.astype(bool)
    assert a.sum() > 20 and v.sum() > 20
    assert not (a & v).any()
    vessel = a | v
    far = ~ndimage.binary_dilation(vessel, iterations=3)
    outer = (normal.layers >= 6) & (normal.layers <= 10)  # ONL .. RPE, below the vessels
    intensity = np.where(outer, normal.image, 0).sum(1) / np.maximum(outer.sum(1), 1)
    assert intensity[vessel].mean() < 0.9 * intensity[far].mean(), "A-scans under vessels must be darker"
    enface = normal.image.mean(axis=1)
    assert enface[vessel].mean() < enface[far].mean(), "the en-face projection shows the vessel tree"


def test_reflectivity_order(normal):
    img, lab = normal.image, normal.layers
    vitreous, rnfl, onl, rpe = (img[lab == k].mean() for k in (0, 1, 6, 10))
    assert vitreous < onl < rnfl < rpe


@pytest.mark.parametrize("pathology,value", [("drusen", 1), ("irf", 2), ("srf", 3)])
def test_pathology_labels(pathology, value):
    ph = generate_oct_phantom(SIZE, seed=5, pathology=pathology)
    assert ph.params["category"] == pathology
    assert (ph.lesions == value).sum() > 10
    assert set(np.unique(ph.lesions)) <= {0, value}


def test_normal_has_no_lesions(normal):
    assert normal.params["category"] == "normal"
    assert not normal.lesions.any()


@pytest.mark.parametrize("kwargs,match", [
    ({"size": (4, 64, 64)}, ">= 8"),
    ({"size": (64, 64)}, "D, H, W"),
    ({"pathology": "glaucoma"}, "pathology"),
    ({"fov_mm": (6, 0, 6)}, "fov_mm"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_oct_phantom(**kwargs)
