import numpy as np
import pytest
import torch

from bundle.metrics import evaluate_reconstruction, slice_jitter


def test_slice_jitter_known_values():
    v = np.zeros((4, 3, 3), np.float32)
    v[1] += 1.0
    v[3] += 3.0  # slice means 0, 1, 0, 3 -> |1| + |1| + |3| over 3 gaps
    assert slice_jitter(v) == pytest.approx(5 / 3)
    assert slice_jitter(np.ones((5, 4, 4))) == 0.0
    assert slice_jitter(torch.zeros(1, 3, 2, 2)) == 0.0
    with pytest.raises(ValueError, match="D >= 2"):
        slice_jitter(np.zeros((1, 4, 4)))


def test_evaluate_reconstruction_orders_methods():
    torch.manual_seed(0)
    vols = [torch.rand(1, 1, 16, 16, 16) * 2 - 1 for _ in range(2)]  # SSIM window is 11
    res = evaluate_reconstruction({"identity": lambda v: v, "noisy": lambda v: v + 0.3 * torch.randn_like(v)}, vols)
    assert res["identity"]["ssim"][0] == pytest.approx(1.0, abs=1e-4)
    assert res["identity"]["psnr"][0] > 60 and res["noisy"]["psnr"][0] < 20
    assert res["identity"]["jitter"] == pytest.approx(res["real"]["jitter"])
