import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundle.io import save_nifti

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_figure", ROOT / "scripts" / "make_figure.py")
make_figure = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_figure)


def test_enface_grid_shows_a_pit_as_a_dark_centre(tmp_path):
    yy, xx = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    pit = (np.hypot(yy - 8, xx - 8) > 3).astype(np.uint8) * 200  # en-face: dark disc in the middle
    for k in range(3):
        vol = np.repeat(pit[:, None, :], 8, axis=1)  # (D, H, W)
        save_nifti(vol, tmp_path / "a" / f"v{k}.nii.gz", (1.0, 1.0, 1.0))
    out = tmp_path / "f.png"
    make_figure.enface(str(tmp_path / "a"), "set a", str(out), num=3, per_row=2, depth="0,8")
    img = np.asarray(Image.open(out))
    # a label band of 18 rows, then two rows of tiles (16 + 2 * 2 padding), the second padded with a blank tile
    assert img.shape == (18 + 2 * 20, 2 * 20)
    tile = img[18 + 2 : 18 + 18, 2:18]
    assert tile[8, 8] < 50 and tile[1, 1] > 200
    assert img[18 + 20 :, 20:].max() == 0
    with pytest.raises(SystemExit, match="2 sets but 1 labels"):
        make_figure.enface(f"{tmp_path / 'a'};{tmp_path / 'a'}", "one", str(out))
    with pytest.raises(SystemExit, match="holds no .nii.gz volumes"):
        make_figure.enface(str(tmp_path / "empty"), "none", str(out))


def test_uint8_percentiles_from_the_histogram_equal_numpy():
    from bundle.preview import percentiles

    rng = np.random.default_rng(0)
    for shape in [(7, 5, 3), (40, 33, 17), (1, 1, 1)]:
        for k in range(6):
            v = (rng.integers(0, 256, size=shape) if k % 2 else rng.binomial(255, 0.3, size=shape)).astype(np.uint8)
            q = [0.5, 99.5, 50, 0, 100, float(rng.uniform(0, 100))]
            assert np.array_equal(percentiles(v, q), np.percentile(v, q)), (shape, k)
    f = rng.normal(size=(4, 5, 6))
    assert np.array_equal(percentiles(f, [1, 99]), np.percentile(f, [1, 99]))
