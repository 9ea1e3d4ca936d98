import math

import pytest
import torch

from bundle.networks import SpeckleModel, load_weights, save_weights


def _smooth_noise(shape, sigma, gen):
    """Unit-variance white noise filtered in (H, W) by a Gaussian of ``sigma`` voxels."""
    m = SpeckleModel()
    m.sigma.fill_(sigma)
    return m.field(shape, gen)


def synthetic_pairs(n=48, sigma=1.0, seed=0):
    """Decoded = a depth ramp; residual = a level-dependent scale times correlated Gaussian noise."""
    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(-0.8, 0.6, 64)[:, None].expand(64, 64)
    d = ramp.expand(n, 64, 64).clone()
    scale = 0.05 + 0.1 * (d + 1)
    e = scale * _smooth_noise((n, 64, 64), sigma, gen)
    return d, d + e, scale


def test_fit_recovers_correlation_scale_and_gain():
    d, x, scale = synthetic_pairs()
    m = SpeckleModel(num_bins=8).fit([(d[:24], x[:24]), (d[24:], x[24:])])
    assert bool(m.fitted)
    assert m.sigma.tolist() == pytest.approx([1.0, 1.0], abs=0.15)
    # pure-noise residuals are already as rough as the real data: no damping needed
    assert 0.85 < m.gain.item() < 1.15
    # each bin's quantile table is the residual distribution at that level: std 0.05 + 0.1 * (level + 1)
    q = m.quantiles
    iqr = (q[:, 48] - q[:, 16]) / (2 * 0.6745)  # interquartile range of a normal / std
    want = 0.05 + 0.1 * (m.bin_centres + 1)
    assert torch.allclose(iqr, want, rtol=0.12)


def test_sampling_is_seeded_independent_per_bscan_and_level_dependent(tmp_path):
    d, x, scale = synthetic_pairs()
    m = SpeckleModel(num_bins=8).fit([(d, x)])
    save_weights(m, tmp_path / "speckle.pt")
    m = load_weights(SpeckleModel(num_bins=8), tmp_path / "speckle.pt")
    vol = d[None, :32]
    a = m(vol, torch.Generator().manual_seed(3), chunk=5)
    b = m(vol, torch.Generator().manual_seed(3), chunk=5)
    c = m(vol, torch.Generator().manual_seed(4), chunk=5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    inplace = vol.clone()
    same = m(inplace, torch.Generator().manual_seed(3), chunk=5, inplace=True)
    assert (same is inplace and torch.equal(same, a)
            and torch.equal(vol, d[None, :32])), "the copy leaves its input alone"
    assert a.shape == vol.shape and a.min() >= -1 and a.max() <= 1
    r = (a - vol)[0]
    # B-scans are independent, pixels inside a B-scan are correlated like the fitted field
    across = float((r[1:] * r[:-1]).mean() / r.var())
    within = float((r[:, :, 1:] * r[:, :, :-1]).mean() / r.var())
    assert abs(across) < 0.05 and within == pytest.approx(math.exp(-1 / 4), abs=0.08)
    # the drawn spread follows the intensity level (0.06 at the top rows, 0.21 at the bottom)
    gain = m.gain.item()
    assert r[:, :8].std().item() == pytest.approx(gain * scale[0, :8].mean().item(), rel=0.15)
    assert r[:, -8:].std().item() == pytest.approx(gain * scale[0, -8:].mean().item(), rel=0.15)


def test_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        SpeckleModel()(torch.zeros(1, 2, 8, 8), torch.Generator())
    with pytest.raises(ValueError, match="same shape"):
        SpeckleModel().fit([(torch.zeros(2, 8, 8), torch.zeros(2, 8, 9))])
    with pytest.raises(ValueError, match="no \\(decoded, real\\) pairs"):
        SpeckleModel().fit([])


def test_add_speckle_script(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np

    from bundle.io import load_nifti, save_nifti

    root = Path(__file__).resolve().parents[1]
    d, x, _ = synthetic_pairs(n=8)
    save_weights(SpeckleModel().fit([(d, x)]), tmp_path / "speckle.pt", prefix="speckle")  # as in models/model.pt
    smooth = np.full((4, 64, 64), 128, np.uint8)
    save_nifti(smooth, tmp_path / "in" / "v_seed1.nii.gz", (1.0, 2.0, 3.0))
    cmd = [sys.executable, str(root / "scripts" / "add_speckle.py"), "--input", str(tmp_path / "in"), "--output",
           str(tmp_path / "out"), "--weights", str(tmp_path / "speckle.pt")]
    subprocess.run(cmd, check=True, capture_output=True)
    out, spacing = load_nifti(tmp_path / "out" / "v_seed1.nii.gz")
    assert out.shape == smooth.shape and spacing == pytest.approx((1.0, 2.0, 3.0))
    assert out.astype(float).std() > 3 and abs(out.astype(float).mean() - 128) < 5
    assert (tmp_path / "out" / "v_seed1_preview.png").is_file()
    again = subprocess.run(cmd[:3] + [str(tmp_path / "nothing")] + cmd[4:], capture_output=True, text=True)
    assert again.returncode != 0 and "holds no .nii.gz volumes" in again.stderr
