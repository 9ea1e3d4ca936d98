from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from bundle.data.latents import load_latents, neighbour_condition, slice_items, volume_items
from bundle.data.prepare import prepare_phantoms
from bundle.networks import SpeckleModel, load_weights, save_weights

from test_inference import TINY, _parser

ROOT = Path(__file__).resolve().parents[1]


def test_neighbour_condition():
    cond = torch.arange(2 * 5 * 1 * 1, dtype=torch.float32).reshape(2, 5, 1, 1)
    out = neighbour_condition(cond, 1)
    assert out.shape == (5, 6, 1, 1)
    # slice 0: neighbours (0, 0, 1) replicated at the start, channel-major blocks per neighbour
    assert out[0, :, 0, 0].tolist() == [0.0, 5.0, 0.0, 5.0, 1.0, 6.0]
    assert out[4, :, 0, 0].tolist() == [3.0, 8.0, 4.0, 9.0, 4.0, 9.0]
    assert torch.equal(neighbour_condition(cond, 0)[:, :, 0, 0], cond[:, :, 0, 0].T)


def _wf(tmp_path, configs, **over):
    cfg = [str(ROOT / "configs" / c) for c in configs]
    base = {**TINY, "bundle_root": str(tmp_path), "dataset_dir": str(tmp_path / "data"), "models_dir": str(tmp_path / "models"),
            "output_dir": str(tmp_path / "out")}
    wf = ConfigWorkflow(config_file=cfg, workflow_type=None, **{**base, **over})
    wf.initialize()
    wf.run()
    return wf


def test_latents_then_both_diffusion_stages_then_inference(tmp_path):
    prepare_phantoms(tmp_path / "data", num=3, size="16,32,32", seed=0, test_fraction=0.34)
    p = _parser()
    nhae = p.get_parsed_content("nhae_def")
    save_weights(nhae, tmp_path / "models" / "nhae.pt")
    with pytest.raises(Exception) as info:  # untrained stage 2: refuse to make latents
        _wf(tmp_path, ["inference.json", "common.json", "prepare_latents.json"])
    assert "scale factors" in str(info.value.__cause__ or info.value.__context__)
    nhae.scale_factor.fill_(2.0)
    nhae.slice_scale_factor.fill_(0.5)
    save_weights(nhae, tmp_path / "models" / "nhae.pt")

    _wf(tmp_path, ["inference.json", "common.json", "prepare_latents.json"])
    lat = load_latents(tmp_path / "data" / "latents" / "latents.pt")
    n_train = 2 * 4  # two training volumes x four flips
    assert lat["z"].shape == (n_train, 4, 2, 4, 4)
    assert lat["cond"].shape == lat["target"].shape == (n_train, 4, 16, 4, 4)
    with torch.no_grad():  # the stored latents are the scaled network outputs
        x0 = lat["z"][0] / 2.0
        assert torch.allclose(lat["cond"][0], nhae.f_sr(x0[None])[0] * 0.5, atol=1e-5)
    assert len(volume_items(tmp_path / "data" / "latents" / "latents.pt")) == n_train
    items = slice_items(tmp_path / "data" / "latents" / "latents.pt", neighbours=1)
    assert len(items) == n_train * 16 and items[0]["cond"].shape == (12, 4, 4) and items[0]["image"].shape == (4, 4, 4)

    # more Diff_3D data: a z-only latent file of the same volumes, trained on together with the full one
    extra = tmp_path / "data" / "latents" / "volumes_extra.pt"
    _wf(tmp_path, ["inference.json", "common.json", "prepare_latents.json"], volume_only=True, latents_file=str(extra))
    lat_extra = load_latents(extra)
    assert set(lat_extra) == {"z", "scale_factor", "slice_scale_factor"} and torch.allclose(lat_extra["z"], lat["z"], atol=1e-6)
    both = [str(tmp_path / "data" / "latents" / "latents.pt"), str(extra)]
    assert len(volume_items(both)) == 2 * n_train
    torch.save({**lat_extra, "scale_factor": torch.tensor(3.0)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt has scale_factor 3.0000"):
        volume_items([both[0], str(tmp_path / "other.pt")])

    diff = ["inference.json", "common.json", "train_diffusion_base.json"]
    _wf(tmp_path, diff + ["train_diffusion3d.json"], max_epochs=1, batch_size=2, volume_latents_files=both,
        ema_momentum=0.01, ema_warmup_iterations=2)
    ckpt = torch.load(next((tmp_path / "runs" / "diffusion3d").glob("*epoch=1.pt")), map_location="cpu", weights_only=True)
    exported = torch.load(tmp_path / "models" / "diffusion3d.pt", map_location="cpu", weights_only=True)
    key = next(k for k in exported if k.endswith("weight"))
    assert torch.equal(exported[key], ckpt["ema"][key]) and not torch.equal(exported[key], ckpt["network"][key])
    _wf(tmp_path, diff + ["train_refiner.json"], max_epochs=1, batch_size=16)
    for name in ("diffusion3d", "refiner"):
        assert (tmp_path / "models" / f"{name}.pt").is_file()
        assert list((tmp_path / "runs" / name).glob(f"{name}_checkpoint_epoch=1.pt"))
    load_weights(p.get_parsed_content("refiner_def"), tmp_path / "models" / "refiner.pt")

    _wf(tmp_path, ["inference.json", "common.json", "fit_speckle.json"], speckle_volumes=2)
    assert load_weights(SpeckleModel(), tmp_path / "models" / "speckle.pt").fitted
    _wf(tmp_path, ["inference.json"], num_samples=1)
    assert (tmp_path / "out" / "synthetic_oct_seed0.nii.gz").is_file()
