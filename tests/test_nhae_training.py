from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow
from monai.networks.nets import PatchDiscriminator

from bundle.data.prepare import prepare_phantoms
from bundle.engines import NHAEIteration
from bundle.handlers import latest_checkpoint
from bundle.inferers import NHAEReconstructionInferer
from bundle.networks import NonHolisticAutoencoder, load_weights, save_weights
from tiny import TINY as CONFIG_TINY
from tiny import messages

ROOT = Path(__file__).resolve().parents[1]
TINY = {"channels_2d": (8, 8, 16, 16), "channels_3d": (8, 8, 16), "sr_channels": 8, "latent_channels": 4,
        "num_res_blocks": 1, "norm_num_groups": 4}


def _engine(net, stage, iteration=1):
    opt = torch.optim.Adam(net.trainable_parameters(stage), lr=1e-3)
    return SimpleNamespace(network=net, optimizer=opt, non_blocking=False,
                           state=SimpleNamespace(device=torch.device("cpu"), iteration=iteration))


@pytest.mark.parametrize("stage,shape,trained,frozen", [
    ("autoencoder2d", (4, 1, 32, 32), "dec_m.autoencoder.decoder", "thumbnail_encoder"),
    ("nhae", (1, 1, 16, 32, 32), "f_sr", "dec_m.autoencoder.decoder"),
    ("adaptors", (1, 1, 12, 32, 32), "dec_m.adaptors", "dec_m.autoencoder.encoder"),
])
def test_one_step_per_stage_updates_only_its_modules(stage, shape, trained, frozen):
    torch.manual_seed(0)
    net = NonHolisticAutoencoder(**TINY)
    disc = PatchDiscriminator(spatial_dims=2, num_layers_d=2, channels=8, in_channels=1, out_channels=1)
    it = NHAEIteration(stage, disc, torch.optim.Adam(disc.parameters(), 1e-3), adv_weight=0.1, adv_start_iteration=1,
                       slices_per_volume=2, latent_slices=4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    d_before = [p.clone() for p in disc.parameters()]
    out = it(_engine(net, stage), {"image": torch.rand(shape) * 2 - 1})
    assert ({"loss", "loss_l1", "loss_adv_g", "loss_d"} <= set(out)
            and all(torch.isfinite(torch.tensor(v)) for v in out.values()))
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith(trained) for k in changed), f"{trained} must be trained in stage {stage}"
    assert not any(k.startswith(frozen) for k in changed), f"{frozen} must stay frozen in stage {stage}"
    assert any(not torch.equal(a, b) for a, b in zip(d_before, disc.parameters())), "discriminator is trained"


def test_stage_losses_go_down():
    torch.manual_seed(0)
    net = NonHolisticAutoencoder(**TINY)
    it = NHAEIteration("autoencoder2d")
    eng = _engine(net, "autoencoder2d")
    yy, xx = torch.meshgrid(torch.linspace(0, 3, 32), torch.linspace(0, 3, 32), indexing="ij")
    x = torch.stack([torch.sin(yy * (i + 1) + xx) for i in range(4)])[:, None] * 0.8  # smooth, learnable images
    losses = [it(eng, {"image": x})["loss_l1"] for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0]


def test_bad_stage_and_input_shape():
    with pytest.raises(ValueError, match="stage"):
        NHAEIteration("holistic")
    with pytest.raises(ValueError, match="B-scans"):
        NHAEIteration("autoencoder2d").losses(NonHolisticAutoencoder(**TINY), torch.zeros(1, 1, 8, 32, 32))


def test_weights_errors(tmp_path):
    net = NonHolisticAutoencoder(**TINY)
    with pytest.raises(FileNotFoundError, match="missing.pt.*run stage 1"):
        load_weights(net, tmp_path / "missing.pt", "run stage 1")
    save_weights(NonHolisticAutoencoder(**dict(TINY, sr_channels=16)), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt.*shape mismatch"):
        load_weights(net, tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read weights file"):
        load_weights(net, tmp_path / "junk.pt")


def _workflow(tmp_path, stage_file, **over):
    """The stage's three-file stack (inference.json, train.json, stages/<stage_file>) at tiny sizes, initialized."""
    cfg = [str(ROOT / "configs" / f) for f in ("inference.json", "train.json", "stages/" + stage_file)]
    wf = ConfigWorkflow(config_file=cfg, workflow_type=None)
    base = {**CONFIG_TINY, "bundle_root": str(tmp_path), "discriminator_def#channels": 8,
            "discriminator_def#num_layers_d": 2, "num_val_volumes": 1, "val_interval": 1, "adv_start_iteration": 1,
            "crop_size": 16, "crops_per_volume": 2, "slices_per_crop": 12}
    for k, v in {**base, **over}.items():
        wf.parser[k] = v
    wf.initialize()
    return wf


def test_three_stage_configs_train_resume_and_export(tmp_path):
    prepare_phantoms(tmp_path / "data" / "phantoms", num=3, size="16,32,32", seed=0, test_fraction=0.34)
    stages = tmp_path / "models" / "stages"
    wf = _workflow(tmp_path, "nhae_autoencoder2d.json", max_epochs=1)
    wf.run()
    ckpt = latest_checkpoint(tmp_path / "runs" / "autoencoder2d")
    assert ckpt is not None and ckpt.name.endswith("epoch=1.pt")
    assert (tmp_path / "runs" / "autoencoder2d" / "preview_epoch0001.png").is_file()
    assert (stages / "nhae_autoencoder2d.pt").is_file()
    assert wf.parser.get_parsed_content("validate#evaluator").state.metrics["val_psnr"] > 0

    # a second run with more epochs resumes from the checkpoint instead of starting over
    wf = _workflow(tmp_path, "nhae_autoencoder2d.json", max_epochs=2)
    trainer = wf.parser.get_parsed_content("train#trainer")
    started = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: started.append(e.state.epoch))
    wf.run()
    assert started == [2]
    assert latest_checkpoint(tmp_path / "runs" / "autoencoder2d").name.endswith("epoch=2.pt")

    wf = _workflow(tmp_path, "nhae.json", max_epochs=1)
    stage1 = torch.load(stages / "nhae_autoencoder2d.pt", weights_only=True)
    wf.run()
    stage2 = torch.load(stages / "nhae_nhae.pt", weights_only=True)
    key = "dec_m.autoencoder.decoder.blocks.0.conv.weight"
    assert key in stage1 and torch.equal(stage1[key], stage2[key]), "stage 2 starts from stage 1 and leaves Dec2D alone"
    assert not (tmp_path / "models" / "model.pt").exists(), "stages 1 and 2 write models/stages/ only"

    _workflow(tmp_path, "nhae_adaptors.json", max_epochs=1).run()
    model = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert model and all(k.startswith("nhae.") for k in model), "stage 3 writes the nhae part of model.pt"
    net = load_weights(NonHolisticAutoencoder(**TINY), tmp_path / "models" / "model.pt", prefix="nhae")
    assert net.scale_factor.item() == pytest.approx(stage2["scale_factor"].item()) and net.scale_factor.item() != 1.0
    assert torch.equal(net.f_sr.net[0].weight, stage2["f_sr.net.0.weight"]), "stage 3 leaves f_sr alone"
    assert any(not torch.equal(v, stage2[k]) for k, v in net.state_dict().items() if k.startswith("dec_m.adaptors")), \
        "stage 3 trains the adaptors"

    # stage 3b: fine-tune the adaptors of model.pt's NHAE on thumbnail-path latents, back into model.pt
    wf = _workflow(tmp_path, "nhae_adaptors.json", max_epochs=1, previous_weights=str(tmp_path / "models" / "model.pt"),
                   previous_prefix="nhae", adaptor_latents="mixed", slices_per_crop=16,
                   run_dir=str(tmp_path / "runs" / "adaptors_mixed"))
    wf.parser.get_parsed_content("setup")
    start = wf.parser.get_parsed_content("network").state_dict()
    assert all(torch.equal(start[k], v)
               for k, v in net.state_dict().items()), "3b starts from the nhae part of model.pt"
    wf.run()
    after = load_weights(NonHolisticAutoencoder(**TINY), tmp_path / "models" / "model.pt", prefix="nhae").state_dict()
    changed = {k for k, v in net.state_dict().items() if not torch.equal(after[k], v)}
    assert changed and all(k.startswith("dec_m.adaptors") for k in changed)


def test_stage2_without_stage1_weights_says_what_to_do(tmp_path):
    prepare_phantoms(tmp_path / "data" / "phantoms", num=2, size="16,32,32", seed=0, test_fraction=0.5)
    with pytest.raises(Exception) as info:
        _workflow(tmp_path, "nhae.json", max_epochs=1).run()
    msg = messages(info.value)
    assert "nhae_autoencoder2d.pt not found" in msg and "previous training stage" in msg, msg


def test_autoencoderkl3d_baseline_config_trains_and_reconstructs(tmp_path):
    prepare_phantoms(tmp_path / "data" / "phantoms", num=3, size="16,32,32", seed=0, test_fraction=0.34)
    wf = _workflow(tmp_path, "baselines/autoencoderkl3d.json", max_epochs=1, batch_size=1)
    net = wf.parser.get_parsed_content("network")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    wf.run()
    out = tmp_path / "models" / "baselines" / "autoencoderkl3d.pt"
    assert out.is_file() and latest_checkpoint(tmp_path / "runs" / "autoencoderkl3d") is not None
    assert not (tmp_path / "models" / "model.pt").exists()
    state = torch.load(out, weights_only=True)
    assert any(not torch.equal(before[k], state[k]) for k in before), "training changed the 3D autoencoder"
    rec = NHAEReconstructionInferer("autoencoderkl3d")(torch.zeros(1, 1, 16, 32, 32), net.eval())
    assert rec.shape == (1, 1, 16, 32, 32)
    with pytest.raises(TypeError, match="AutoencoderKL"):
        NHAEReconstructionInferer("autoencoderkl3d")(torch.zeros(1, 1, 16, 32, 32), NonHolisticAutoencoder(**TINY))
    with pytest.raises(ValueError, match="volume crops"):
        NHAEIteration("autoencoderkl3d").losses(net, torch.zeros(2, 1, 32, 32))


def test_adaptors_can_train_on_thumbnail_path_latents():
    torch.manual_seed(0)
    net = NonHolisticAutoencoder(**TINY)
    it = NHAEIteration("adaptors", adaptor_latents="mixed", thumbnail_probability=1.0)
    x = torch.rand(1, 1, 16, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = net.dec_m(net.f_sr(net.encode_volume(x)[0]), pad_front=False, pad_back=False)
    fake, _, _ = it.losses(net, x)
    assert torch.allclose(fake, expected.transpose(1, 2).reshape(-1, 1, 32, 32), atol=1e-6), "decodes f_sr(E_3D(x))"
    before = {k: v.clone() for k, v in net.state_dict().items()}
    it(_engine(net, "adaptors"), {"image": x})
    changed = {k for k, v in net.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all(k.startswith("dec_m.adaptors") for k in changed)
    with pytest.raises(ValueError, match="adaptor_latents"):
        NHAEIteration("adaptors", adaptor_latents="thumbs")


def test_resume_switch_accepts_cli_strings(tmp_path):
    from bundle.handlers import LatestCheckpointLoader

    assert LatestCheckpointLoader(tmp_path, {}, enabled="false").enabled is False
    assert LatestCheckpointLoader(tmp_path, {}, enabled="True").enabled is True
    with pytest.raises(ValueError, match="resume must be true or false, got 'off'"):
        LatestCheckpointLoader(tmp_path, {}, enabled="off")
