from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from bundle.networks import SpeckleModel, save_weights

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "image_size": [16, 32, 32], "ddim_steps": 2, "slice_batch": 8, "decoder_chunk": 8, "device": "$torch.device('cpu')",
    "nhae_def#channels_2d": [8, 8, 16, 16], "nhae_def#channels_3d": [8, 8, 16], "nhae_def#sr_channels": 8,
    "nhae_def#num_res_blocks": 1, "nhae_def#norm_num_groups": 4,
    "diffusion3d_def#channels": [8, 16], "diffusion3d_def#attention_levels": [False, True],
    "diffusion3d_def#num_head_channels": 8, "diffusion3d_def#norm_num_groups": 4, "diffusion3d_def#num_res_blocks": 1,
    "refiner_def#channels": [8, 16], "refiner_def#attention_levels": [False, True], "refiner_def#num_head_channels": 8,
    "refiner_def#norm_num_groups": 4, "refiner_def#num_res_blocks": 1,
    "use_speckle": False,  # tests that load speckle.pt use the models fixture's (see _run)
}


def _parser(configs=("inference.json",), **over) -> ConfigParser:
    p = ConfigParser()
    p.read_config([str(ROOT / "configs" / c) for c in configs])
    for k, v in {**TINY, **over}.items():
        p[k] = v
    return p


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Random (untrained) weights of the tiny networks, saved as the bundle would save trained ones."""
    d = tmp_path_factory.mktemp("models")
    p = _parser()
    torch.manual_seed(0)
    nhae = p.get_parsed_content("nhae_def")
    for a in nhae.dec_m.adaptors:
        torch.nn.init.normal_(a.conv.weight, std=0.05)
    nhae.scale_factor.fill_(1.5)
    nhae.slice_scale_factor.fill_(0.7)
    save_weights(nhae, d / "nhae.pt")
    for name in ("diffusion3d", "refiner"):
        net = p.get_parsed_content(f"{name}_def")
        with torch.no_grad():  # MONAI zero-initialises the output layer; random weights must predict something
            for w in net.parameters():
                w.add_(0.05 * torch.randn_like(w))
        save_weights(net, d / f"{name}.pt")
    from test_speckle import synthetic_pairs

    save_weights(SpeckleModel().fit([synthetic_pairs(n=8)[:2]]), d / "speckle.pt")
    return d


def _run(models, out, configs=("inference.json",), **over):
    cfg = [str(ROOT / "configs" / c) for c in configs]
    wf = ConfigWorkflow(config_file=cfg, workflow_type=None,
                        **{**TINY, "models_dir": str(models), "output_dir": str(out), "use_speckle": True, **over})
    wf.initialize()
    wf.run()
    return wf


def test_inference_writes_volume_and_preview_and_repeats_with_seed(models, tmp_path):
    _run(models, tmp_path / "a", num_samples=2, seed=5)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["synthetic_oct_seed5.nii.gz", "synthetic_oct_seed5_preview.png",
                     "synthetic_oct_seed6.nii.gz", "synthetic_oct_seed6_preview.png"]
    img = nib.load(tmp_path / "a" / "synthetic_oct_seed5.nii.gz")
    assert img.shape == (16, 32, 32) and img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.header.get_zooms(), (6 / 16, 2 / 32, 6 / 32))
    _run(models, tmp_path / "b", num_samples=1, seed=5)
    a = np.asarray(img.dataobj)
    b = np.asarray(nib.load(tmp_path / "b" / "synthetic_oct_seed5.nii.gz").dataobj)
    np.testing.assert_array_equal(a, b)
    c = np.asarray(nib.load(tmp_path / "a" / "synthetic_oct_seed6.nii.gz").dataobj)
    assert np.abs(a.astype(int) - c).mean() > 1, "different seeds give different volumes"


def test_ablations_change_the_output(models):
    vols = {}
    for name, over in {"full": {}, "no_refiner": {"use_refiner": False}, "no_dec_m": {"use_dec_m": False},
                       "window": {"decoder_mode": "window"}}.items():
        p = _parser(models_dir=str(models), **{"use_speckle": True, **over})
        inf = p.get_parsed_content("inferer")
        vols[name] = inf.sample(p.get_parsed_content("nhae"), p.get_parsed_content("diffusion3d"),
                                p.get_parsed_content("refiner"), seed=1)
        assert vols[name].shape == (1, 16, 32, 32)
    for name in ("no_refiner", "no_dec_m", "window"):
        assert (vols[name] - vols["full"]).abs().mean() > 1e-3, name
    # the speckle model only adds texture: same anatomy (same mean), rougher, independent of the diffusion streams
    p = _parser(models_dir=str(models), use_speckle=False)
    smooth = p.get_parsed_content("inferer").sample(p.get_parsed_content("nhae"), p.get_parsed_content("diffusion3d"),
                                                    p.get_parsed_content("refiner"), seed=1)
    diff = vols["full"] - smooth
    assert diff.abs().mean() > 1e-2 and abs(diff.mean().item()) < 0.02
    assert vols["full"].diff(dim=-1).abs().mean() > smooth.diff(dim=-1).abs().mean()
    # without the refiner the Diff_3D latent is decoded directly: same global anatomy source, other detail
    p = _parser(models_dir=str(models), use_refiner=False)
    assert p.get_parsed_content("refiner") is None
    # the CLI passes "--use_refiner false" as the string "false": it must switch the refiner off too
    p = _parser(models_dir=str(models), use_refiner="false", use_speckle="False")
    assert p.get_parsed_content("refiner") is None and p.get_parsed_content("speckle") is None
    inf = p.get_parsed_content("inferer")
    assert inf.use_refiner is False
    q = _parser(models_dir=str(models), use_refiner=False, use_speckle=False)
    nhae, d3 = q.get_parsed_content("nhae"), q.get_parsed_content("diffusion3d")
    assert torch.equal(inf.sample(nhae, d3, None, seed=1), q.get_parsed_content("inferer").sample(nhae, d3, None, seed=1))
    with pytest.raises(Exception) as info:
        _parser(models_dir=str(models), use_dec_m="maybe").get_parsed_content("inferer")
    assert "use_dec_m must be true or false, got 'maybe'" in _messages(info.value)


@pytest.mark.parametrize("over,match", [
    ({"num_samples": 0}, "num_samples"),
    ({"num_samples": -2}, "num_samples"),
    ({"image_size": [16, 30, 32]}, "image_size"),
])
def test_bad_settings_fail_before_sampling(models, tmp_path, over, match):
    with pytest.raises(Exception) as info:
        _run(models, tmp_path / "o", **over)
    assert match in _messages(info.value)
    assert not list((tmp_path / "o").glob("*.nii.gz")) if (tmp_path / "o").exists() else True


def _messages(e) -> str:
    out = []
    while e is not None:
        out.append(str(e))
        e = e.__cause__ or e.__context__
    return " | ".join(out)


def test_missing_and_wrong_weights(models, tmp_path):
    with pytest.raises(Exception) as info:
        _run(tmp_path / "empty", tmp_path / "o", use_speckle=False)
    assert "nhae.pt not found" in _messages(info.value) and "train it first" in _messages(info.value)
    with pytest.raises(Exception) as info:
        _run(models, tmp_path / "o", speckle_weights=str(tmp_path / "none.pt"))
    assert "none.pt not found" in _messages(info.value) and "fit_speckle.json" in _messages(info.value)
    with pytest.raises(Exception) as info:
        _run(models, tmp_path / "o", **{"refiner_def#channels": [16, 16]})
    assert "refiner.pt does not match" in _messages(info.value)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_unwritable_output_dir(models, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(Exception) as info:
        _run(models, blocker / "out")
    assert "not writable" in _messages(info.value)


def test_interrupted_run_leaves_no_partial_nifti(models, tmp_path, monkeypatch):
    import nibabel

    calls = {"n": 0}
    orig = nibabel.save

    def flaky(img, path):
        calls["n"] += 1
        orig(img, path)  # the temporary file is complete ...
        if calls["n"] == 2:
            raise KeyboardInterrupt  # ... but the run dies before the rename
    monkeypatch.setattr(nibabel, "save", flaky)
    with pytest.raises(KeyboardInterrupt):
        _run(models, tmp_path / "o", num_samples=3)
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == ["synthetic_oct_seed0.nii.gz", "synthetic_oct_seed0_preview.png"], names


def test_paper512_overlay_runs_a_ddim_step_on_tiny_weights(models, tmp_path):
    p = ConfigParser()
    p.read_config([str(ROOT / "configs" / c) for c in ("inference.json", "inference_paper512.json")])
    assert p["image_size"] == [512, 512, 512] and p["latent_shape"] != TINY
    assert p.get_parsed_content("latent_shape") == [4, 64, 64, 64]
    _run(models, tmp_path / "o", configs=("inference.json", "inference_paper512.json"), ddim_steps=1)
    assert (tmp_path / "o" / "synthetic_oct_seed0.nii.gz").is_file()


def test_label_condition_channels_are_concatenated():
    p = _parser(label_channels=2)
    torch.manual_seed(0)
    nhae, d3, ref = (p.get_parsed_content(k) for k in ("nhae_def", "diffusion3d_def", "refiner_def"))
    with torch.no_grad():  # MONAI zero-initialises the UNets' output layer: make them predict something
        for w in list(d3.parameters()) + list(ref.parameters()):
            w.add_(0.05 * torch.randn_like(w))
    inf = p.get_parsed_content("inferer")
    lab3 = torch.zeros(1, 2, 2, 4, 4)
    labs = torch.zeros(16, 2, 4, 4)
    a = inf.sample(nhae, d3, ref, seed=0, label_3d=lab3, label_slices=labs)
    b = inf.sample(nhae, d3, ref, seed=0, label_3d=lab3 + 1, label_slices=labs + 1)
    assert a.shape == b.shape == (1, 16, 32, 32)
    assert (a - b).abs().mean() > 1e-4, "the label condition changes the sample"
    with pytest.raises(RuntimeError):
        inf.sample(nhae, d3, ref, seed=0)  # networks built for labels need them
