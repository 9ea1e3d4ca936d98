"""The main job (configs/inference.json) as a MONAI inference workflow: properties, outputs, seeds, stages, errors."""

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.data import MetaTensor
from monai.transforms import LoadImage

from bundle.networks import SpeckleModel, save_weights
from tiny import ROOT, TINY, messages, parser, perturb


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Random (untrained) tiny weights of the composed network, saved as models/model.pt would be."""
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    net = parser().get_parsed_content("network_def")
    for a in net.nhae.dec_m.adaptors:
        torch.nn.init.normal_(a.conv.weight, std=0.05)
    net.nhae.scale_factor.fill_(1.5)
    net.nhae.slice_scale_factor.fill_(0.7)
    perturb(net.diffusion3d)
    perturb(net.refiner)
    from test_speckle import synthetic_pairs

    net.speckle = SpeckleModel().fit([synthetic_pairs(n=8)[:2]])
    save_weights(net, d / "model.pt")
    return d


def _run(models, out, configs=("inference.json",), **over):
    cfg = [str(ROOT / "configs" / c) for c in configs]
    wf = ConfigWorkflow(config_file=cfg, workflow_type="inference",
                        **{**TINY, "models_dir": str(models), "output_dir": str(out), "use_speckle": True, **over})
    wf.initialize()
    wf.run()
    return wf


def _volume(path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def test_inference_properties_and_model_file():
    for overlay in ((), ("ablation_no_refiner.json",), ("baselines/inference_ldm3d.json",),
                    ("baselines/inference_medical_diffusion.json",)):  # paper512: no shipped weights to build it with
        wf = ConfigWorkflow(config_file=[str(ROOT / "configs" / c) for c in ("inference.json", *overlay)],
                            meta_file=str(ROOT / "configs" / "metadata.json"), workflow_type="inference",
                            bundle_root=str(ROOT))
        wf.initialize()
        assert wf.check_properties() == [], overlay
    # models/model.pt is network_def's state dict, loadable strictly with weights_only=True
    p = ConfigParser()
    p.read_config(str(ROOT / "configs" / "inference.json"))
    net = p.get_parsed_content("network_def")
    state = torch.load(ROOT / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert net.load_state_dict(state, strict=True).missing_keys == []
    assert {k.split(".")[0] for k in state} == {"nhae", "diffusion3d", "refiner", "speckle"}
    assert bool(state["speckle.fitted"]) and float(state["nhae.scale_factor"]) != 1.0


def test_inference_writes_volume_and_preview_and_repeats_with_seed(models, tmp_path):
    _run(models, tmp_path / "a", num_samples=2, seed=5)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["synthetic_oct_seed5.nii.gz", "synthetic_oct_seed5_preview.png",
                     "synthetic_oct_seed6.nii.gz", "synthetic_oct_seed6_preview.png"]
    img = nib.load(tmp_path / "a" / "synthetic_oct_seed5.nii.gz")
    assert img.shape == (16, 32, 32) and img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.header.get_zooms(), (6 / 16, 2 / 32, 6 / 32))
    _run(models, tmp_path / "b", num_samples=1, seed=6)  # a request alone gives the same volume as within a run
    a6, b6 = (_volume(tmp_path / "a" / "synthetic_oct_seed6.nii.gz"),
              _volume(tmp_path / "b" / "synthetic_oct_seed6.nii.gz"))
    np.testing.assert_array_equal(a6, b6)
    a5 = _volume(tmp_path / "a" / "synthetic_oct_seed5.nii.gz")
    assert np.abs(a5.astype(int) - a6).mean() > 1, "different seeds give different volumes"


@pytest.mark.parametrize("ext", [".nrrd", ".mha", ".nii.gz"])
def test_output_formats_round_trip_with_spacing(models, tmp_path, ext):
    wf = _run(models, tmp_path / "o", num_samples=1, seed=3, output_ext=ext, decoder_mode="slice2d", use_speckle=False)
    path = tmp_path / "o" / f"synthetic_oct_seed3{ext}"
    img = LoadImage(image_only=True)(str(path))
    assert tuple(img.shape) == (16, 32, 32)
    np.testing.assert_allclose(img.pixdim[:3].numpy(), (6 / 16, 2 / 32, 6 / 32), rtol=1e-5)
    if ext != ".nii.gz":  # same voxels as the NIfTI writer
        _run(models, tmp_path / "n", num_samples=1, seed=3, decoder_mode="slice2d", use_speckle=False)
        np.testing.assert_array_equal(np.asarray(img), _volume(tmp_path / "n" / "synthetic_oct_seed3.nii.gz"))
    assert wf.parser["output_ext"] == ext
    with pytest.raises(Exception) as info:
        _run(models, tmp_path / "x", output_ext=".png")
    assert "output_ext must be one of" in messages(info.value)


def test_monai_label_style_call_takes_the_reference_shape_and_affine(models, tmp_path):
    """MONAI Label's BundleInferTask: preprocessing on {"image": path}, then inferer(image[None], network)."""
    affine = np.diag([0.375, 0.0625, 0.1875, 1.0])
    affine[:3, 3] = (10.0, -4.0, 2.5)
    ref = tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 32, 32), np.uint8), affine), str(ref))
    p = parser(models_dir=str(models), output_dir=str(tmp_path / "o"))
    data = p.get_parsed_content("preprocessing")({"image": str(ref)})
    network = p.get_parsed_content("network")
    out = p.get_parsed_content("inferer")(data["image"][None], network)
    assert isinstance(out, MetaTensor) and tuple(out.shape) == (1, 1, 16, 32, 32)
    np.testing.assert_allclose(out.affine.numpy(), affine)
    assert out.dtype == torch.uint8  # quantised chunk by chunk as decoded (configs/inference.json "quantize")
    # same volume as the workflow writes for the config's seed
    seeded = p.get_parsed_content("inferer").sample(network, seed=p.get_parsed_content("seed"))
    assert torch.equal(out[0], seeded)
    bad = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 32, 40), np.uint8), affine), str(bad))
    with pytest.raises(Exception) as info:
        p.get_parsed_content("preprocessing")({"image": str(bad)})
    assert "bad.nii.gz" in messages(info.value) and "(1, 16, 32, 32)" in messages(info.value)


def test_stage_lists_are_the_ablations(models):
    """Composed stages: no refiner, plain Dec2D, window decoding and speckle each change the output; \
speckle only adds texture."""
    vols = {}
    cases = {"full": ((), {}), "no_refiner": (("ablation_no_refiner.json",), {}),
             "no_dec_m": ((), {"decoder_mode": "slice2d"}), "window": ((), {"decoder_mode": "window"}),
             "smooth": ((), {"use_speckle": "false"})}
    for name, (overlay, over) in cases.items():
        p = parser(("inference.json", *overlay), models_dir=str(models), **{"use_speckle": True, **over})
        u8 = p.get_parsed_content("inferer").sample(p.get_parsed_content("network"), seed=1)
        assert u8.shape == (1, 16, 32, 32) and u8.dtype == torch.uint8
        vols[name] = u8.float() / 127.5 - 1
    for name in ("no_refiner", "no_dec_m", "window"):
        assert (vols[name] - vols["full"]).abs().mean() > 1e-3, name
    diff = vols["full"] - vols["smooth"]
    assert diff.abs().mean() > 1e-2 and abs(diff.mean().item()) < 0.02
    assert vols["full"].diff(dim=-1).abs().mean() > vols["smooth"].diff(dim=-1).abs().mean()
    p = parser(("inference.json", "ablation_no_refiner.json"), models_dir=str(models))
    assert [type(s).__name__ for s in p.get_parsed_content("stages")] == [
        "GlobalLatentSampler", "UniaxialSuperResolution", "DecodeSlices"]


@pytest.mark.parametrize("over,match", [
    ({"num_samples": 0}, "num_samples"),
    ({"num_samples": -2}, "num_samples"),
    ({"num_samples": "many"}, "num_samples"),
    ({"image_size": [16, 30, 32]}, "image_size"),
    ({"eta": -0.5}, "eta must be >= 0"),
    ({"ddim_steps": 0}, "num_inference_steps"),
    ({"decoder_mode": "cube"}, "mode must be one of"),
    ({"noise_correlation": -1}, "noise correlation"),
    ({"use_speckle": "maybe"}, "use_speckle must be true or false, got 'maybe'"),
])
def test_bad_settings_fail_before_sampling(models, tmp_path, over, match):
    with pytest.raises(Exception) as info:
        _run(models, tmp_path / "o", **over)
    assert match in messages(info.value)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_missing_corrupt_and_wrong_weights(models, tmp_path):
    with pytest.raises(Exception) as info:
        _run(tmp_path / "empty", tmp_path / "o")
    assert "model.pt not found" in messages(info.value) and "train it first" in messages(info.value)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception) as info:
        _run(corrupt, tmp_path / "o")
    assert "cannot read weights file" in messages(info.value) and "model.pt" in messages(info.value)
    with pytest.raises(Exception) as info:
        _run(models, tmp_path / "o", **{"refiner_def#channels": [16, 16]})
    assert "model.pt does not match CascadedLDM" in messages(info.value) and "refiner." in messages(info.value)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_unwritable_output_dir(models, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(Exception) as info:
        _run(models, blocker / "out")
    assert "not writable" in messages(info.value)


def test_interrupted_run_leaves_no_partial_nifti(models, tmp_path, monkeypatch):
    calls = {"n": 0}
    orig = nib.save

    def flaky(img, path):
        calls["n"] += 1
        orig(img, path)  # the temporary file is complete ...
        if calls["n"] == 2:
            raise KeyboardInterrupt  # ... but the run dies before the rename
    monkeypatch.setattr(nib, "save", flaky)
    with pytest.raises(KeyboardInterrupt):
        _run(models, tmp_path / "o", num_samples=3)
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == ["synthetic_oct_seed0.nii.gz", "synthetic_oct_seed0_preview.png"], names


def test_paper512_overlay_builds_the_paper_widths_and_runs_on_tiny_weights(models, tmp_path):
    raw = ConfigParser()
    raw.read_config([str(ROOT / "configs" / c) for c in ("inference.json", "inference_paper512.json")])
    assert raw["image_size"] == [512, 512, 512] and raw["nhae_def"]["channels_2d"] == [128, 256, 512, 512]
    assert raw.get_parsed_content("latent_shape") == [4, 64, 64, 64]
    _run(models, tmp_path / "o", configs=("inference.json", "inference_paper512.json"), ddim_steps=1,
         models_dir=str(models))
    assert _volume(tmp_path / "o" / "synthetic_oct_seed0.nii.gz").shape == (16, 32, 32)


def test_runs_from_outside_the_bundle_folder(models, tmp_path):
    """`python -m monai.bundle run inference --config_file BUNDLE/configs/inference.json --bundle_root BUNDLE` \
from elsewhere."""
    import json
    import os

    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps({k: v for k, v in TINY.items()}))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inference",
           "--config_file", f"['{ROOT / 'configs' / 'inference.json'}','{tiny}']",
           "--meta_file", str(ROOT / "configs" / "metadata.json"), "--bundle_root", str(ROOT),
           "--models_dir", str(models), "--output_dir", str(tmp_path / "out"), "--num_samples", "1", "--seed", "4"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "wrote" in r.stdout + r.stderr and (tmp_path / "out" / "synthetic_oct_seed4.nii.gz").is_file()
