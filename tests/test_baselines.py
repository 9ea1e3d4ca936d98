"""Table-1 baselines (LDM3D, Medical Diffusion), the shared-pass ablation sampler and the memory benchmark."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from bundle.benchmarks import run_in_fresh_process
from bundle.data.latents import latent_scale_factor, load_latents, precompute_baseline_latents, volume_items
from bundle.data.prepare import prepare_phantoms
from bundle.inferers import LatentDiffusion3DInferer
from bundle.networks import ScaledDiffusionUNet, load_weights, save_weights

from test_inference import TINY, _parser

ROOT = Path(__file__).resolve().parents[1]
AE3D_TINY = {"_target_": "AutoencoderKL", "spatial_dims": 3, "in_channels": 1, "out_channels": 1, "channels": [8, 8, 16, 16],
             "latent_channels": 4, "num_res_blocks": 1, "norm_num_groups": 4, "attention_levels": [False] * 4,
             "with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False}
BASELINE = {"ldm3d": "baselines/inference_ldm3d.json", "medical_diffusion": "baselines/inference_medical_diffusion.json"}


def _perturb(net):
    with torch.no_grad():  # MONAI zero-initialises the UNet's output layer; random weights must predict something
        for w in net.parameters():
            w.add_(0.05 * torch.randn_like(w))
    return net


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
    ident = lambda d: d  # noqa: E731
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


def test_baseline_inferer_shapes_seeds_and_errors():
    p = _parser()
    torch.manual_seed(0)
    nhae = p.get_parsed_content("nhae_def").eval()
    diff = ScaledDiffusionUNet(_perturb(p.get_parsed_content("diffusion3d_def")), 0.8).eval()
    sched = p.get_parsed_content("scheduler")
    ldm = LatentDiffusion3DInferer(sched, (4, 16, 4, 4), decode="slices", num_inference_steps=2, eta=1.0, chunk_size=8)
    assert ldm.output_size == (16, 32, 32)
    a, b, c = (ldm.sample(nhae, diff, seed=s) for s in (3, 3, 4))
    assert a.shape == (1, 16, 32, 32) and torch.equal(a, b) and (a - c).abs().mean() > 1e-3
    assert a.min() >= -1 and a.max() <= 1
    ae = ConfigParser({"ae": AE3D_TINY}).get_parsed_content("ae").eval()
    md = LatentDiffusion3DInferer(sched, (4, 2, 4, 4), decode="volume", num_inference_steps=2)
    assert md.output_size == (16, 32, 32) and md.sample(ae, diff, seed=0).shape == (1, 16, 32, 32)
    with pytest.raises(ValueError, match="no refiner"):
        md.sample(ae, diff, refiner=diff)
    with pytest.raises(ValueError, match="decode must be"):
        LatentDiffusion3DInferer(sched, (4, 2, 4, 4), decode="patches")
    with pytest.raises(ValueError, match="num_inference_steps"):
        LatentDiffusion3DInferer(sched, (4, 2, 4, 4), num_inference_steps=0)


def _wf(tmp_path, configs, **over):
    base = {**TINY, "bundle_root": str(tmp_path), "dataset_dir": str(tmp_path / "data"), "models_dir": str(tmp_path / "models"),
            "output_dir": str(tmp_path / "out"), "autoencoderkl3d_def": AE3D_TINY}
    wf = ConfigWorkflow(config_file=[str(ROOT / "configs" / c) for c in configs], workflow_type=None, **{**base, **over})
    wf.initialize()
    wf.run()
    return wf


@pytest.mark.parametrize("baseline", ["ldm3d", "medical_diffusion"])
def test_baseline_configs_train_export_and_sample(tmp_path, baseline):
    prepare_phantoms(tmp_path / "data", num=3, size="16,32,32", seed=0, test_fraction=0.34)
    torch.manual_seed(0)
    p = _parser()
    nhae = p.get_parsed_content("nhae_def")
    nhae.slice_scale_factor.fill_(0.5)
    save_weights(nhae, tmp_path / "models" / "nhae.pt")
    save_weights(ConfigParser({"ae": AE3D_TINY}).get_parsed_content("ae"), tmp_path / "models" / "baselines" / "autoencoderkl3d.pt")
    train = ["inference.json", "common.json", BASELINE[baseline], "train_diffusion_base.json", f"baselines/train_{baseline}.json"]
    extra = {"crop_slices": 8} if baseline == "ldm3d" else {}
    _wf(tmp_path, train, max_epochs=1, batch_size=2, **extra)
    lat = load_latents(tmp_path / "data" / "latents" / f"{baseline}.pt")
    assert lat["z"].shape[0] == 8 and lat["z"].std().item() == pytest.approx(1.0, rel=1e-4)
    weights = tmp_path / "models" / "baselines" / f"{baseline}.pt"
    state = torch.load(weights, weights_only=True)
    assert float(state["scale_factor"]) == pytest.approx(float(lat["scale_factor"]))
    assert list((tmp_path / "runs" / baseline).glob(f"{baseline}_checkpoint_epoch=1.pt"))
    _wf(tmp_path, ["inference.json", BASELINE[baseline]], num_samples=2, seed=7)
    img = nib.load(tmp_path / "out" / f"{baseline}_seed7.nii.gz")
    assert img.shape == (16, 32, 32) and img.get_data_dtype() == np.uint8
    assert (tmp_path / "out" / f"{baseline}_seed8_preview.png").is_file()
    with pytest.raises(Exception) as info:
        _wf(tmp_path, ["inference.json", BASELINE[baseline]], models_dir=str(tmp_path / "none"))
    assert "not found" in str(info.value.__cause__ or info.value.__context__ or info.value)


def test_medical_diffusion_reads_the_autoencoder_definition_of_its_training_config(monkeypatch):
    monkeypatch.chdir(ROOT)  # bundle configs are run from the bundle root
    p = ConfigParser()
    p.read_config([str(ROOT / "configs" / c) for c in ("inference.json", BASELINE["medical_diffusion"])])
    p.parse()
    train = json.loads((ROOT / "configs" / "baselines" / "train_autoencoderkl3d.json").read_text())
    assert p.get("autoencoderkl3d_def") == train["autoencoderkl3d_def"]


def test_ablation_pass_equals_separate_runs():
    p = _parser()
    torch.manual_seed(0)
    nhae = p.get_parsed_content("nhae_def").eval()
    for a in nhae.dec_m.adaptors:
        torch.nn.init.normal_(a.conv.weight, std=0.05)
    d3 = _perturb(p.get_parsed_content("diffusion3d_def")).eval()
    ref = _perturb(p.get_parsed_content("refiner_def")).eval()
    vols = p.get_parsed_content("inferer").sample_ablations(nhae, d3, ref, seed=2)
    for name, over in {"nhae_diff3d": {"use_refiner": False, "use_dec_m": False}, "diff_slice": {"use_dec_m": False},
                       "caldm": {}}.items():
        single = _parser(**over).get_parsed_content("inferer").sample(nhae, d3, ref, seed=2)
        assert torch.equal(vols[name], single), name
    assert (vols["caldm"] - vols["diff_slice"]).abs().mean() > 1e-3


def test_memory_benchmark_reports_every_model_writes_figure_and_out_of_memory(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark_script", ROOT / "scripts" / "benchmark.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.memory(sizes="32", models="caldm,ldm3d,medical_diffusion", steps=1, out_png=str(tmp_path / "m.png"),
                  out_jsonl=str(tmp_path / "m.jsonl"))
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["model"] for r in rows] == ["caldm", "ldm3d", "medical_diffusion"]
    for r in rows:
        assert r["status"] == "ok" and r["output_shape"] == [1, 32, 32, 32] and r["peak_rss_mb"] > 0 and r["ddim_steps"] == 1, r
    out = capsys.readouterr().out
    assert "| caldm |" in out and "ldm3d / caldm peak RSS at 32^3" in out
    assert (tmp_path / "m.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="unknown model"):
        script.memory(sizes="32", models="lvd")
    # the holistic 3D decoder of a 128^3 volume needs more than 1.2 GB: reported, not raised
    r = run_in_fresh_process(["synthesis", "128,128,128", "medical_diffusion", "1"], memory_limit_gb=1.2)
    assert r["status"] == "out_of_memory" and "allocate" in r["error"], r


def test_ddim_step_matches_monai_and_correlated_noise_statistics():
    from bundle.inferers.cascade import correlated_noise, ddim_step

    sched = _parser().get_parsed_content("scheduler")
    sched.set_timesteps(10)
    x, eps = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    for t in (int(sched.timesteps[0]), int(sched.timesteps[-1])):
        ref, _ = sched.step(eps, t, x, eta=0.0)
        assert torch.allclose(ddim_step(sched, eps, t, x, 0.0, None), ref, atol=1e-6)
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        ref, _ = sched.step(eps, t, x, eta=1.0, generator=g1)
        assert torch.allclose(ddim_step(sched, eps, t, x, 1.0, torch.randn(x.shape, generator=g2)), ref, atol=1e-6)
    n = correlated_noise((64, 2000), 2.0, torch.Generator().manual_seed(0))
    assert n.std(1).mean().item() == pytest.approx(1.0, abs=0.05)
    rho = (n[1:] * n[:-1]).mean().item()
    assert rho == pytest.approx(np.exp(-1 / 16), abs=0.05)  # exp(-k^2 / (4 sigma^2)) at k = 1
    assert correlated_noise((4, 3), 0.0, torch.Generator().manual_seed(1)).shape == (4, 3)


def test_correlated_refiner_noise_reduces_slice_to_slice_change():
    p = _parser()
    torch.manual_seed(0)
    nhae = p.get_parsed_content("nhae_def").eval()
    d3 = _perturb(p.get_parsed_content("diffusion3d_def")).eval()
    ref = _perturb(p.get_parsed_content("refiner_def")).eval()
    step = {}
    for sigma in (0.0, 3.0):
        inf = _parser(noise_correlation=sigma, slice_batch=5).get_parsed_content("inferer")  # several batches
        vol = inf.sample(nhae, d3, ref, seed=4)
        assert torch.equal(vol, inf.sample(nhae, d3, ref, seed=4))
        step[sigma] = (vol[0, 1:] - vol[0, :-1]).abs().mean().item()
    assert step[3.0] < 0.7 * step[0.0], step
    with pytest.raises(ValueError, match="noise_correlation"):
        type(inf)(inf.scheduler, inf.decoder, inf.latent_shape, noise_correlation=-1)
