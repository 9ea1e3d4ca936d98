import pytest
import torch
import torch.nn.functional as F

from bundle.metrics import frechet_distance, laplacian_pyramid, mean_pairwise_distance, sliced_wasserstein_distance, swd
from bundle.networks import FundusFeatureNet


def _images(n, seed):
    """Smooth random colour images in [-1, 1]: a learnable, non-trivial distribution."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    return F.interpolate(low, size=64, mode="bilinear", align_corners=False)


def test_sliced_wasserstein_matches_hand_computed_values():
    a, b = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [3.0]])
    assert sliced_wasserstein_distance(a, b, torch.tensor([[1.0]])) == pytest.approx(1.5)  # (|0-1| + |1-3|) / 2
    a2, b2 = torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    # direction x: sorted (0, 1) vs (0, 2) -> 0.5; direction y: (0, 1) vs (1, 2) -> 1.0; mean 0.75
    assert sliced_wasserstein_distance(a2, b2, torch.eye(2)) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="same shape"):
        sliced_wasserstein_distance(a, b2, torch.eye(1))


def test_laplacian_pyramid_levels_and_constant_image():
    levels = laplacian_pyramid(torch.full((2, 3, 64, 64), 0.3), min_size=16)
    assert [lv.shape[-1] for lv in levels] == [64, 32, 16]
    assert all(lv.abs().max() < 1e-5 for lv in levels[:-1]) and torch.allclose(levels[-1], torch.tensor(0.3))


def test_swd_grows_with_noise_and_blur():
    real, other = _images(40, 0), _images(40, 1)
    floor = swd(real, other)["mean"]
    noisy = [swd(real, other + s * torch.randn_like(other))["mean"] for s in (0.1, 0.4)]
    blurred = swd(real, F.avg_pool2d(other, 5, 1, 2))["mean"]
    assert floor < noisy[0] < noisy[1]
    assert blurred > floor
    r = swd(real, other)
    assert len(r["levels"]) == 3 and r == swd(real, other), "seeded: the same inputs give the same value"
    with pytest.raises(ValueError, match="same image shape"):
        swd(real, real[:, :1])


def test_frechet_distance_is_zero_on_itself_and_grows_with_noise_and_blur():
    torch.manual_seed(0)
    net = FundusFeatureNet(channels=(8, 16, 32)).eval()
    real, other = _images(120, 0), _images(120, 1)
    with torch.no_grad():
        f = net.features
        fr = f(real)
        assert frechet_distance(fr, fr) == pytest.approx(0.0, abs=1e-6)
        floor = frechet_distance(fr, f(other))
        noisy = [frechet_distance(fr, f(other + s * torch.randn_like(other))) for s in (0.2, 0.6)]
        blur = frechet_distance(fr, f(F.avg_pool2d(other, 7, 1, 3)))
    assert floor < noisy[0] < noisy[1] and blur > floor
    with pytest.raises(ValueError, match="same F"):
        frechet_distance(fr, fr[:, :3])


def test_diversity_detects_collapse():
    x = _images(10, 0)
    assert mean_pairwise_distance(x[:1].repeat(10, 1, 1, 1)) == pytest.approx(0.0, abs=1e-9)
    assert mean_pairwise_distance(x) > 0.1


def test_evaluate_fundus_sets_from_datalist_and_folder(tmp_path):
    import numpy as np
    from PIL import Image

    from bundle.data.prepare_fundus import prepare_fundus
    from bundle.evaluation import evaluate_fundus, list_images, load_images

    prepare_fundus(tmp_path / "d", num=6, size=32, seed=0, test_fraction=0.5)
    (tmp_path / "fake").mkdir()
    for i in range(4):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            tmp_path / "fake" / f"x_{i}.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "fake" / "x_grid.png")
    fakes = list_images(tmp_path / "fake")
    assert len(fakes) == 4, "grids are not samples"
    real = load_images(list_images(tmp_path / "d" / "datalist.json", "test"), 32)
    fake = load_images(fakes, 32)
    assert fake.shape == (4, 3, 32, 32) and -1.0 <= float(fake.min()) and float(fake.max()) <= 1.0
    torch.manual_seed(0)
    res = evaluate_fundus(real, fake, FundusFeatureNet(channels=(8, 16)))
    same = evaluate_fundus(real, real, FundusFeatureNet(channels=(8, 16)))
    assert res["fd_domain"] > same["fd_domain"] and "domain features" in res["features"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no PNG"):
        list_images(tmp_path / "empty")


def test_volume_slices_total_variation_and_kid():
    from bundle.metrics.volumes import inter_slices, intra_slices, kernel_distance, total_variation

    v = torch.arange(4 * 3 * 5, dtype=torch.float32).reshape(4, 3, 5)
    assert intra_slices(v).shape == (4, 1, 3, 5) and torch.equal(intra_slices(v)[2, 0], v[2])
    assert inter_slices(v[None]).shape == (5, 1, 4, 3) and torch.equal(inter_slices(v)[1, 0], v[:, :, 1])
    assert total_variation(torch.full((4, 6, 6), 0.7))["total"] == 0.0
    tv = total_variation(v)  # steps of 15 along D, 5 along H, 1 along W
    assert (tv["D"], tv["H"], tv["W"], tv["total"]) == (15.0, 5.0, 1.0, 21.0)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g)
    same, _ = kernel_distance(a, b, subsets=20, subset_size=100)
    near, _ = kernel_distance(a, b + 0.5, subsets=20, subset_size=100)
    far, _ = kernel_distance(a, b + 1.0, subsets=20, subset_size=100)
    assert abs(same) < 0.2 < near < far
    with pytest.raises(ValueError, match="volume"):
        total_variation(torch.zeros(2, 3))


def test_batch_norm_recalibration_on_data_matches_eval_to_train_mode():
    from bundle.handlers import RecalibrateBatchNormOnData

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 2, 3))
    net[1].running_mean.fill_(5.0)  # stale statistics, as after fast-moving training
    net[1].running_var.fill_(0.01)
    x = torch.randn(64, 1, 12, 12) * 3 + 1
    with torch.no_grad():
        train_out = net.train()(x)
        stale = net.eval()(x)
    assert (stale - train_out).abs().max() > 1
    far = torch.full((64, 1, 12, 12), 100.0)  # a batch past max_batches must not enter the statistics
    RecalibrateBatchNormOnData(net, [{"image": x}, {"image": far}], max_batches=1)()
    assert not net.training and net[1].momentum == 0.1 and int(net[1].num_batches_tracked) == 1
    with torch.no_grad():
        assert torch.allclose(net(x), train_out, atol=2e-2)
        conv = net[0](x)
    assert torch.allclose(net[1].running_mean, conv.mean(dim=(0, 2, 3)), atol=1e-5), "the plain mean over the data"
