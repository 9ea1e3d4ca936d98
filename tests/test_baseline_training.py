"""Training of the Table-1 baselines (LDM3D, Medical Diffusion): scaled UNet, latents, training configs."""

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from bundle.data.latents import latent_scale_factor, load_latents, precompute_baseline_latents, volume_items
from bundle.data.prepare import prepare_phantoms
from bundle.networks import ScaledDiffusionUNet, load_weights, save_weights
from tiny import AE3D_TINY, TINY
from tiny import parser as _parser
from tiny import perturb as _perturb

ROOT = Path(__file__).resolve().parents[1]


def test_scaled_unet_is_the_unet_plus_a_stored_scale(tmp_path):
    p = _parser()
    torch.manual_seed(0)
    unet = _perturb(p.get_parsed_content("diffusion3d_def")).eval()
    net = ScaledDiffusionUNet(unet, 2.5).eval()
    x, t = torch.randn(1, 4, 2, 4, 4), torch.tensor([10])
    assert torch.equal(net(x, timesteps=t), unet(x, timesteps=t))
    save_weights(net, tmp_path / "w.pt")
    other = load_weights(ScaledDiffusionUNet(_parser().get_parsed_content("diffusion3d_def")), tmp_path / "w.pt")
    assert float(other.scale_factor) == 2.5
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale_factor"):
            ScaledDiffusionUNet(unet, bad)


def test_baseline_latents_have_unit_std_and_the_right_shapes(tmp_path):
    p = _parser()
    torch.manual_seed(0)
    nhae = p.get_parsed_content("nhae_def")
    ae = ConfigParser({"ae": AE3D_TINY}).get_parsed_content("ae")
    vols = [{"image": torch.rand(1, 16, 32, 32) * 2 - 1} for _ in range(2)]
    def ident(d):
        return d

    lat = precompute_baseline_latents("ldm3d", nhae, vols, ident, tmp_path / "l.pt")
    assert lat["z"].shape == (8, 4, 16, 4, 4)  # 2 volumes x 4 flips, every B-scan kept
    assert lat["z"].std().item() == pytest.approx(1.0, rel=1e-4)
    with torch.no_grad():
        direct = nhae.encode_slices(vols[0]["image"][None]) * latent_scale_factor(tmp_path / "l.pt")
    assert torch.allclose(lat["z"][0], direct[0], atol=1e-5)
    lat = precompute_baseline_latents("medical_diffusion", ae, vols, ident, tmp_path / "m.pt", flips=False)
    assert lat["z"].shape == (2, 4, 2, 4, 4)
    assert len(volume_items(tmp_path / "m.pt")) == 2 and load_latents(tmp_path / "m.pt")["scale_factor"] > 0
    with pytest.raises(ValueError, match="baseline must be one of"):
        precompute_baseline_latents("lvd", ae, vols, ident, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="empty"):
        precompute_baseline_latents("ldm3d", nhae, [], ident, tmp_path / "x.pt")


def _wf(tmp_path, stage, **over):
    """Run stages/<stage>.json on inference.json + train.json at tiny sizes in tmp_path."""
    files = [str(ROOT / "configs" / c) for c in ("inference.json", "train.json", f"stages/{stage}.json")]
    wf = ConfigWorkflow(config_file=files, workflow_type=None, **{**TINY, "bundle_root": str(tmp_path), **over})
    wf.initialize()
    wf.run()
    return wf


@pytest.mark.parametrize("baseline", ["ldm3d", "medical_diffusion"])
def test_baseline_configs_train_and_export(tmp_path, baseline):
    prepare_phantoms(tmp_path / "data" / "phantoms", num=3, size="16,32,32", seed=0, test_fraction=0.34)
    torch.manual_seed(0)
    p = _parser()
    nhae = p.get_parsed_content("nhae_def")
    nhae.slice_scale_factor.fill_(0.5)
    save_weights(nhae, tmp_path / "models" / "model.pt", prefix="nhae")
    save_weights(p.get_parsed_content("autoencoderkl3d_def"), tmp_path / "models" / "baselines" / "autoencoderkl3d.pt")
    model_before = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    extra = {"crop_slices": 8} if baseline == "ldm3d" else {}
    wf = _wf(tmp_path, f"baselines/{baseline}", max_epochs=1, batch_size=2, **extra)
    lat = load_latents(tmp_path / "data" / "latents" / f"{baseline}.pt")
    assert lat["z"].shape[0] == 8 and lat["z"].std().item() == pytest.approx(1.0, rel=1e-4)
    if baseline == "ldm3d":  # every B-scan's Enc2D latent, from the NHAE part of model.pt
        assert lat["z"].shape[2] == 16
    weights = tmp_path / "models" / "baselines" / f"{baseline}.pt"
    state = torch.load(weights, weights_only=True)
    assert float(state["scale_factor"]) == pytest.approx(float(lat["scale_factor"]))
    assert list((tmp_path / "runs" / baseline).glob(f"{baseline}_checkpoint_epoch=1.pt"))
    # the export is baseline_diffusion_def's state dict (what inference loads), and model.pt is left alone
    net = load_weights(_parser().get_parsed_content("baseline_diffusion_def"), weights)
    assert torch.equal(net.scale_factor, state["scale_factor"])
    trained = wf.parser.get_parsed_content("network").state_dict()
    assert all(torch.equal(trained[k], v) for k, v in state.items())
    after = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert after.keys() == model_before.keys() and all(torch.equal(after[k], v) for k, v in model_before.items())
