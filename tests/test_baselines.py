"""Table-1 baselines (LDM3D, Medical Diffusion) as stage lists, the DDIM step and refiner noise, \
the memory benchmark."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from bundle.benchmarks import run_in_fresh_process
from bundle.inferers import CorrelatedNoise, WhiteNoise, correlated_noise, ddim_step, refiner_noise
from bundle.networks import save_weights

from tiny import AE3D_TINY, TINY, messages, parser, perturb

ROOT = Path(__file__).resolve().parents[1]
BASELINE = {"ldm3d": "baselines/inference_ldm3d.json",
            "medical_diffusion": "baselines/inference_medical_diffusion.json"}


def _baseline(name, **over):
    p = parser(("inference.json", BASELINE[name]), **over)
    torch.manual_seed(0)
    net = p.get_parsed_content("network_def").eval()
    perturb(net.diffusion.unet)
    net.diffusion.scale_factor.fill_(0.8)
    return p, net


def test_baseline_stage_lists_shapes_seeds_and_errors():
    p, net = _baseline("ldm3d", eta=1.0)
    inf = p.get_parsed_content("inferer")
    assert [type(s).__name__ for s in inf.stages] == ["GlobalLatentSampler", "DecodeSlices"]
    assert inf.output_size == (16, 32, 32) and p.get_parsed_content("latent_shape") == [4, 16, 4, 4]
    a, b, c = (inf.sample(net, seed=s) for s in (3, 3, 4))
    assert a.shape == (1, 16, 32, 32) and torch.equal(a, b) and (a.float() - c.float()).abs().mean() > 0.1
    assert a.dtype == torch.uint8  # quantised as decoded
    # the latent is divided by the diffusion model's stored scale factor before decoding
    net.diffusion.scale_factor.fill_(0.4)
    assert (inf.sample(net, seed=3).float() - a.float()).abs().mean() > 0.1
    p, net = _baseline("medical_diffusion", **{"autoencoderkl3d_def": AE3D_TINY})
    inf = p.get_parsed_content("inferer")
    assert [type(s).__name__ for s in inf.stages] == ["GlobalLatentSampler", "DecodeVolume"]
    assert inf.output_size == (16, 32, 32) and inf.sample(net, seed=0).shape == (1, 16, 32, 32)
    with pytest.raises(ValueError, match="needs the network part 'diffusion'"):
        inf.sample(parser().get_parsed_content("network_def"), seed=0)  # a CA-LDM network has no 'diffusion' part
    with pytest.raises(Exception, match="num_inference_steps"):
        parser(("inference.json", BASELINE["ldm3d"]), ddim_steps=0).get_parsed_content("inferer")


def test_baseline_overlays_write_their_volumes(tmp_path):
    """Both overlays as workflows: network from model.pt's nhae part (LDM3D) or the 3D autoencoder file, \
prefix in the name."""
    models = tmp_path / "models"
    torch.manual_seed(0)
    for name in BASELINE:
        p, net = _baseline(name, **{"autoencoderkl3d_def": AE3D_TINY})
        if name == "ldm3d":
            save_weights(net.autoencoder, models / "model.pt", prefix="nhae")
        else:
            save_weights(net.autoencoder, models / "baselines" / "autoencoderkl3d.pt")
        save_weights(net.diffusion, models / "baselines" / f"{name}.pt")
        wf = ConfigWorkflow(config_file=[str(ROOT / "configs" / c) for c in ("inference.json", BASELINE[name])],
                            workflow_type="inference",
                            **{**TINY, "autoencoderkl3d_def": AE3D_TINY, "models_dir": str(models),
                               "output_dir": str(tmp_path / name), "num_samples": 2, "seed": 7})
        wf.initialize()
        assert wf.check_properties() == []
        wf.run()
        img = nib.load(tmp_path / name / f"{name}_seed7.nii.gz")
        assert img.shape == (16, 32, 32) and img.get_data_dtype() == np.uint8
        expected = p.get_parsed_content("inferer").sample(net, seed=8)
        got = np.asarray(nib.load(tmp_path / name / f"{name}_seed8.nii.gz").dataobj)
        if expected.dtype != torch.uint8:  # Medical Diffusion decodes in one piece: quantised by the writer
            expected = torch.from_numpy(np.round((expected.numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8))
        np.testing.assert_array_equal(got, expected[0].numpy())
    with pytest.raises(Exception) as info:
        wf = ConfigWorkflow(config_file=[str(ROOT / "configs" / c) for c in ("inference.json", BASELINE["ldm3d"])],
                            workflow_type="inference", **{**TINY, "models_dir": str(tmp_path / "none")})
        wf.initialize()
        wf.run()
    assert "not found" in messages(info.value)


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
        assert (r["status"] == "ok" and r["output_shape"] == [1, 32, 32, 32] and r["peak_rss_mb"] > 0
                and r["ddim_steps"] == 1), r
    out = capsys.readouterr().out
    assert "| caldm |" in out and "ldm3d / caldm peak RSS at 32^3" in out
    assert (tmp_path / "m.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="unknown model"):
        script.memory(sizes="32", models="lvd")
    # the holistic 3D decoder of a 128^3 volume needs more than 1.2 GB: reported, not raised
    r = run_in_fresh_process(["synthesis", "128,128,128", "medical_diffusion", "1"], memory_limit_gb=1.2)
    assert r["status"] == "out_of_memory" and "allocate" in r["error"], r


def test_ddim_step_matches_monai_bitwise_and_correlated_noise_statistics():
    sched = parser().get_parsed_content("scheduler")
    for steps in (200, 10):
        sched.set_timesteps(steps)
        for t in (int(sched.timesteps[0]), int(sched.timesteps[len(sched.timesteps) // 2]), int(sched.timesteps[-1])):
            x, eps = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
            ref, _ = sched.step(eps, t, x, eta=0.0)
            assert torch.equal(ddim_step(sched, eps, t, x, 0.0, None), ref)
            g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
            ref, _ = sched.step(eps, t, x, eta=1.0, generator=g1)
            assert torch.equal(ddim_step(sched, eps, t, x, 1.0, torch.randn(x.shape, generator=g2)), ref)
    n = correlated_noise((64, 2000), 2.0, torch.Generator().manual_seed(0))
    assert n.std(1).mean().item() == pytest.approx(1.0, abs=0.05)
    rho = (n[1:] * n[:-1]).mean().item()
    assert rho == pytest.approx(np.exp(-1 / 16), abs=0.05)  # exp(-k^2 / (4 sigma^2)) at k = 1
    assert correlated_noise((4, 3), 0.0, torch.Generator().manual_seed(1)).shape == (4, 3)
    assert isinstance(refiner_noise(0), WhiteNoise) and not isinstance(refiner_noise(0), CorrelatedNoise)
    assert refiner_noise("2").sigma == 2.0
    for bad in (-1, "x", float("nan")):
        with pytest.raises(ValueError, match="noise correlation"):
            refiner_noise(bad)


def test_correlated_refiner_noise_reduces_slice_to_slice_change():
    torch.manual_seed(0)
    net = parser().get_parsed_content("network_def").eval()
    perturb(net.diffusion3d)
    perturb(net.refiner)
    step = {}
    for sigma in (0.0, 3.0):
        inf = parser(noise_correlation=sigma, slice_batch=5).get_parsed_content("inferer")  # several batches per volume
        vol = inf.sample(net, seed=4)
        assert torch.equal(vol, inf.sample(net, seed=4))
        vol = vol.float()
        step[sigma] = (vol[0, 1:] - vol[0, :-1]).abs().mean().item()
    assert step[3.0] < 0.7 * step[0.0], step
