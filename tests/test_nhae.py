import pytest
import torch

from bundle.inferers import SlidingSliceDecoder
from bundle.networks import NonHolisticAutoencoder

TINY = dict(channels_2d=(8, 8, 16, 16), channels_3d=(8, 8, 16), sr_channels=8, latent_channels=4, num_res_blocks=1,
            norm_num_groups=4)


def _net(seed=0, random_adaptors=True):
    torch.manual_seed(seed)
    net = NonHolisticAutoencoder(**TINY).eval()
    if random_adaptors:  # make the adaptors non-trivial (they start as the identity)
        for a in net.dec_m.adaptors:
            torch.nn.init.normal_(a.conv.weight, std=0.05)
            torch.nn.init.normal_(a.conv.bias, std=0.05)
    return net


def test_shapes():
    net = _net()
    x = torch.randn(2, 1, 16, 32, 24)
    z_mu, z_sigma = net.encode_volume(x)
    assert z_mu.shape == z_sigma.shape == (2, 4, 2, 4, 3)
    assert net.f_sr(z_mu).shape == (2, 4, 16, 4, 3)
    assert net.encode_slices(x).shape == (2, 4, 16, 4, 3)
    assert net.reconstruct(x).shape == (2, 1, 16, 32, 24)
    assert net.dec_m.receptive_radius == 4  # one residual block per level (no mid block without attention)


def test_adaptors_start_as_identity():
    net = _net(random_adaptors=False)
    z = torch.randn(1, 4, 7, 4, 4)
    with torch.no_grad():
        np_ = net.dec_m(z)
        plain = net.dec_m(z, use_adaptors=False)
        per_slice = torch.stack([net.slice_ae.decode(z[:, :, i]) for i in range(7)], dim=2)
    torch.testing.assert_close(np_, plain)
    torch.testing.assert_close(plain, per_slice, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("D,chunk", [(23, 5), (16, 16), (9, 4), (30, 7)])
def test_stack_mode_equals_one_shot(D, chunk):
    net = _net()
    z = torch.randn(4, D, 4, 4)
    with torch.no_grad():
        one_shot = net.dec_m(z[None])[0]
    out = SlidingSliceDecoder("stack", chunk_size=chunk)(z, net.dec_m)
    assert out.shape == (1, D, 32, 32)
    torch.testing.assert_close(out, one_shot, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        no_adapt = net.dec_m(z[None], use_adaptors=False)[0]
    assert (one_shot - no_adapt).abs().max() > 1e-3, "the test must exercise non-trivial adaptors"


@pytest.mark.parametrize("D,chunk,k", [(11, 4, 5), (6, 6, 5), (7, 3, 3)])
def test_window_mode_equals_naive_loop(D, chunk, k):
    net = _net()
    z = torch.randn(4, D, 4, 4)
    out = SlidingSliceDecoder("window", chunk_size=chunk, window=k)(z, net.dec_m)
    half = k // 2
    with torch.no_grad():
        for i in range(D):
            idx = [min(max(j, 0), D - 1) for j in range(i - half, i + half + 1)]
            ref = net.dec_m(z[None, :, idx])[0, :, half]
            torch.testing.assert_close(out[:, i], ref, atol=1e-5, rtol=1e-4)


def test_slice2d_mode_is_plain_decoder():
    net = _net()
    z = torch.randn(4, 5, 4, 4)
    out = SlidingSliceDecoder("slice2d", chunk_size=2)(z, net.dec_m)
    with torch.no_grad():
        ref = torch.cat([net.slice_ae.decode(z[:, i : i + 1].transpose(0, 1)) for i in range(5)])
    torch.testing.assert_close(out, ref.transpose(0, 1), atol=1e-5, rtol=1e-4)


def test_bad_latents_are_rejected():
    net = _net()
    dec = SlidingSliceDecoder("stack", chunk_size=4)
    with pytest.raises(ValueError, match="3 channels"):
        dec(torch.randn(3, 8, 4, 4), net.dec_m)
    bad = torch.randn(4, 8, 4, 4)
    bad[0, 3, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        dec(bad, net.dec_m)
    with pytest.raises(ValueError, match=r"\(c, D, h, w\)"):
        dec(torch.randn(4, 4, 4), net.dec_m)
    with pytest.raises(ValueError, match="mode"):
        SlidingSliceDecoder("holistic")
    with pytest.raises(ValueError, match="odd"):
        SlidingSliceDecoder("window", window=4)


def test_training_stack_drops_the_halo():
    net = _net()
    z = torch.randn(2, 4, 16, 4, 4)
    out = net.dec_m(z, pad_front=False, pad_back=False)
    assert out.shape == (2, 1, 16 - 2 * 4, 32, 32)
    with pytest.raises(ValueError, match="too short"):
        net.dec_m(torch.randn(1, 4, 8, 4, 4), pad_front=False, pad_back=False)
