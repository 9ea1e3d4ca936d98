from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from bundle.data.latents import load_latents, neighbour_condition, precompute_latents, slice_items, volume_items
from bundle.data.prepare import prepare_phantoms
from bundle.engines import CascadeDiffusionIteration
from bundle.networks import SpeckleModel, load_weights, save_weights
from tiny import TINY, messages
from tiny import parser as _parser

ROOT = Path(__file__).resolve().parents[1]


def test_neighbour_condition():
    cond = torch.arange(2 * 5 * 1 * 1, dtype=torch.float32).reshape(2, 5, 1, 1)
    out = neighbour_condition(cond, 1)
    assert out.shape == (5, 6, 1, 1)
    # slice 0: neighbours (0, 0, 1) replicated at the start, channel-major blocks per neighbour
    assert out[0, :, 0, 0].tolist() == [0.0, 5.0, 0.0, 5.0, 1.0, 6.0]
    assert out[4, :, 0, 0].tolist() == [3.0, 8.0, 4.0, 9.0, 4.0, 9.0]
    assert torch.equal(neighbour_condition(cond, 0)[:, :, 0, 0], cond[:, :, 0, 0].T)


STACK = ["inference.json", "train.json"]


def _wf(tmp_path, stage, **over):
    """Run stages/<stage>.json on inference.json + train.json at tiny sizes in tmp_path."""
    wf = ConfigWorkflow(config_file=[str(ROOT / "configs" / c) for c in STACK + [f"stages/{stage}.json"]],
                        workflow_type=None, **{**TINY, "bundle_root": str(tmp_path), **over})
    wf.initialize()
    wf.run()
    return wf


def _part(path, prefix):
    return {k[len(prefix) + 1:]: v for k, v in torch.load(path, map_location="cpu", weights_only=True).items()
            if k.startswith(prefix + ".")}


def test_latents_then_both_diffusion_stages_then_speckle_compose_model_pt(tmp_path):
    prepare_phantoms(tmp_path / "data" / "phantoms", num=3, size="16,32,32", seed=0, test_fraction=0.34)
    p = _parser()
    model = tmp_path / "models" / "model.pt"
    nhae = p.get_parsed_content("nhae_def")
    save_weights(nhae, model, prefix="nhae")
    with pytest.raises(Exception) as info:  # untrained stage 2: refuse to make latents
        _wf(tmp_path, "latents")
    assert "scale factors" in messages(info.value)
    nhae.scale_factor.fill_(2.0)
    nhae.slice_scale_factor.fill_(0.5)
    save_weights(nhae, model, prefix="nhae")

    _wf(tmp_path, "latents")
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
    _wf(tmp_path, "latents", volume_only=True, latents_file=str(extra))
    lat_extra = load_latents(extra)
    assert (set(lat_extra) == {"z", "scale_factor", "slice_scale_factor"}
            and torch.allclose(lat_extra["z"], lat["z"], atol=1e-6))
    both = [str(tmp_path / "data" / "latents" / "latents.pt"), str(extra)]
    assert len(volume_items(both)) == 2 * n_train
    torch.save({**lat_extra, "scale_factor": torch.tensor(3.0)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt has scale_factor 3.0000"):
        volume_items([both[0], str(tmp_path / "other.pt")])

    _wf(tmp_path, "diffusion3d", max_epochs=1, batch_size=2, volume_latents_files=both, ema_momentum=0.01,
        ema_warmup_iterations=2)
    ckpt = torch.load(next((tmp_path / "runs" / "diffusion3d").glob("*epoch=1.pt")), map_location="cpu",
                      weights_only=True)
    exported = _part(model, "diffusion3d")
    key = next(k for k in exported if k.endswith("weight"))
    assert torch.equal(exported[key], ckpt["ema"][key]) and not torch.equal(exported[key], ckpt["network"][key])
    assert all(torch.equal(v, nhae.state_dict()[k]) for k, v in _part(model, "nhae").items()), "the nhae part is kept"
    _wf(tmp_path, "refiner", max_epochs=1, batch_size=16)
    for name in ("diffusion3d", "refiner"):
        assert list((tmp_path / "runs" / name).glob(f"{name}_checkpoint_epoch=1.pt"))
    refiner = torch.load(next((tmp_path / "runs" / "refiner").glob("*epoch=1.pt")), map_location="cpu",
                         weights_only=True)
    assert all(torch.equal(v, refiner["network"][k]) for k, v in _part(model, "refiner").items())
    assert torch.equal(_part(model, "diffusion3d")[key], exported[key]), "the refiner stage keeps the diffusion3d part"

    _wf(tmp_path, "speckle", speckle_volumes=2)
    assert load_weights(SpeckleModel(), model, prefix="speckle").fitted
    assert (sorted({k.split(".")[0] for k in torch.load(model, weights_only=True)})
            == ["diffusion3d", "nhae", "refiner", "speckle"])
    load_weights(p.get_parsed_content("network_def"), model)  # the stages compose a model.pt network_def loads strictly


def test_fine_tune_latents_are_the_precomputed_ones(tmp_path):
    torch.manual_seed(0)
    net = _parser(neighbours=1).get_parsed_content("network_def").eval()
    net.nhae.scale_factor.fill_(2.0)
    net.nhae.slice_scale_factor.fill_(0.5)
    x = torch.rand(1, 1, 16, 32, 32) * 2 - 1
    lat = precompute_latents(net.nhae, [{"image": x[0]}], lambda d: d, tmp_path / "l.pt", flips=False)
    it = CascadeDiffusionIteration(slices=16)
    volumes, slices = it.latents(net, x)
    assert torch.allclose(volumes["image"], lat["z"], atol=1e-6)
    # all 16 B-scans drawn, in random order: match each against the stored slice latents and conditions
    stored = {i: (lat["target"][0, :, i], neighbour_condition(lat["cond"][0], 1)[i]) for i in range(16)}
    for img, cond in zip(slices["image"], slices["cond"]):
        i = next(i for i, (t, c) in stored.items() if torch.allclose(t, img, atol=1e-5))
        assert torch.allclose(cond, stored[i][1], atol=1e-6)
    assert slices["cond"].shape == (16, 12, 4, 4) and slices["image"].shape == (16, 4, 4, 4)
    with pytest.raises(ValueError, match="slices"):
        CascadeDiffusionIteration(slices=0)
