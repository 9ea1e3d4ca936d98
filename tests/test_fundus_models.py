from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow
from monai.inferers import SimpleInferer
from PIL import Image
from tiny import messages

from bundle.data.prepare_fundus import prepare_fundus
from bundle.engines import DCGANLoss
from bundle.handlers import InstanceNoiseSchedule, RecalibrateBatchNorm
from bundle.networks import (
    ClassAndBinaryLoss,
    DCGANDiscriminator,
    DCGANGenerator,
    FundusFeatureNet,
    FundusVAE,
    load_weights,
    save_weights,
)

ROOT = Path(__file__).resolve().parents[1]
TINY_G, TINY_D = [32, 16, 8, 8], [8, 8, 16, 32]  # 64 x 64 images
STACKS = {  # task -> config stack (<= 3 files)
    "fundus_features": ["fundus_common.json", "train_fundus_features.json"],
    "dcgan": ["inference_dcgan.json", "fundus_common.json", "train_dcgan.json"],
    "vae": ["inference_vae.json", "fundus_common.json", "train_vae.json"],
}


def test_dcgan_shapes_range_and_errors():
    g, d = DCGANGenerator(100, (64, 32, 16, 8, 8)), DCGANDiscriminator(3, (8, 8, 16, 32, 64))
    x = g(torch.randn(2, 100))
    assert x.shape == (2, 3, 128, 128) and x.abs().max() <= 1.0 and d(x).shape == (2,)
    assert g.image_size == d.image_size == 128
    with pytest.raises(ValueError, match="latents must be"):
        g(torch.randn(2, 50))
    with pytest.raises(ValueError, match="expects"):
        d(torch.randn(2, 3, 64, 64))
    ws = [m.weight for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert all(abs(float(w.std()) - 0.02) < 0.005 for w in ws), "DCGAN N(0, 0.02) initialisation"


def test_vae_and_feature_net_shapes():
    v = FundusVAE(image_size=64, latent_size=32, channels=(8, 16, 16))
    rec, mu, _logvar, _z = v(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert (rec.shape == (2, 3, 64, 64) and mu.shape == (2, 32)
            and v.generate(torch.randn(3, 32)).shape == (3, 3, 64, 64))
    with pytest.raises(ValueError, match="divisible"):
        FundusVAE(image_size=60, channels=(8, 16, 16))
    net = FundusFeatureNet(channels=(8, 16))
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 11) and net.features(torch.zeros(2, 3, 32, 32)).shape == (2, 16)
    loss = ClassAndBinaryLoss(5)(torch.zeros(2, 11), torch.tensor([[0, 1, 0, 0, 0, 0, 0], [4, 1, 1, 1, 1, 0, 1]]))
    assert loss.item() == pytest.approx(np.log(5) + np.log(2))


def test_dcgan_loss_detaches_fakes_and_trains_d_to_separate():
    torch.manual_seed(0)
    g, d = DCGANGenerator(16, (16, 8, 8, 8)), DCGANDiscriminator(3, (8, 8, 16, 16))
    loss = DCGANLoss(d)
    opt = torch.optim.Adam(d.parameters(), 2e-3, betas=(0.5, 0.999))
    reals = torch.ones(8, 3, 64, 64) * 0.5
    for _ in range(15):
        fakes = g(torch.randn(8, 16))
        opt.zero_grad()
        loss.d_loss(fakes, reals).backward()
        assert all(p.grad is None for p in g.parameters()), "the D loss must not reach the generator"
        opt.step()
    assert loss.last["d_real"] > 0.7 and loss.last["d_fake"] < 0.3


def _wf(tmp_path, files, workflow_type=None, **over):
    cfg = [str(ROOT / "configs" / f) for f in files]
    base = {"bundle_root": str(tmp_path), "fundus_size": 64, "device": "$torch.device('cpu')", "batch_size": 4,
            "metric_samples": 8, "dcgan_generator_def#channels": TINY_G, "dcgan_discriminator_def#channels": TINY_D,
            "vae_def#channels": [8, 16, 16], "feature_net_def#channels": [8, 16]}
    base.update(over)
    wf = ConfigWorkflow(config_file=cfg, workflow_type=workflow_type,
                        **{k: v for k, v in base.items() if _known(cfg, k)})
    wf.initialize()
    return wf


def _assert_exported(path, network):
    """The weights file holds exactly ``network``'s state dict (strict load, every tensor equal)."""
    exported = load_weights(type(network)(**_ctor_args(network)), path).state_dict()
    own = network.state_dict()
    assert exported.keys() == own.keys() and all(torch.equal(exported[k], own[k].cpu()) for k in own), path


def _ctor_args(network):
    if isinstance(network, DCGANGenerator):
        return {"latent_size": 100, "channels": TINY_G}
    if isinstance(network, DCGANDiscriminator):
        return {"channels": TINY_D}
    if isinstance(network, FundusVAE):
        return {"image_size": 64, "channels": (8, 16, 16)}
    return {"channels": (8, 16)}


def _known(cfg, key):
    import json

    root = key.split("#")[0]
    return any(root in json.loads(Path(c).read_text()) for c in cfg)


@pytest.fixture(scope="module")
def fundus_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fundus")
    prepare_fundus(root / "data" / "fundus", num=10, size=64, seed=0, test_fraction=0.3)
    save_weights(FundusFeatureNet(channels=(8, 16)), root / "models" / "fundus" / "fundus_features.pt")
    return root


@pytest.mark.parametrize("stage", sorted(STACKS))
def test_training_stacks_have_the_model_zoo_properties(fundus_root, stage):
    wf = _wf(fundus_root, STACKS[stage], workflow_type="train", max_epochs=1, resume=False)
    assert wf.check_properties() == []
    handlers = wf.parser["train#handlers"]
    assert all(isinstance(h, dict) and "_target_" in h for h in handlers)

    def ref(i):  # MONAI stores '#' as '::'
        return wf.parser[i].replace("::", "#")

    assert (ref("train#trainer#train_handlers") == "@train#handlers"
            and ref("train#dataset#transform") == "@train#preprocessing")
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.max_epochs == 1 and isinstance(wf.parser.get_parsed_content("train#inferer"), SimpleInferer)
    # the shared resume / checkpoint wiring comes from fundus_common.json, once
    targets = [h["_target_"] for h in handlers]
    assert (targets.count("bundle.handlers.LatestCheckpointLoader")
            == targets.count("bundle.handlers.EngineCheckpointSaver") == 1)
    assert sum("LatestCheckpointLoader" in (ROOT / "configs" / f).read_text() for f in STACKS[stage]) == 1


def test_feature_config_trains_validates_and_exports(fundus_root, tmp_path):
    import shutil

    shutil.copytree(fundus_root / "data", tmp_path / "data")
    wf = _wf(tmp_path, STACKS["fundus_features"], max_epochs=2)
    init = {k: v.clone() for k, v in wf.parser.get_parsed_content("network").state_dict().items()}
    wf.run()
    net = wf.parser.get_parsed_content("network")
    _assert_exported(tmp_path / "models" / "fundus" / "fundus_features.pt", net)
    assert any(not torch.equal(init[k], v)
               for k, v in net.state_dict().items()), "the exported weights are trained ones"
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    assert evaluator.state.epoch == 2 and 0.0 <= evaluator.state.metrics["val_grade_accuracy"] <= 1.0
    ckpt = torch.load(tmp_path / "runs" / "fundus_features" / "fundus_features_checkpoint_epoch=2.pt",
                      weights_only=True)
    assert (set(ckpt) == {"network", "optimizer", "trainer"}
            and ckpt["trainer"]["iteration"] == 2 * ckpt["trainer"]["epoch_length"])


def test_dcgan_trains_resumes_logs_and_samples_reproducibly(fundus_root):
    files = ["inference_dcgan.json", "fundus_common.json", "train_dcgan.json"]
    _wf(fundus_root, files, max_epochs=1).run()
    run = fundus_root / "runs" / "dcgan"
    assert (run / "samples_epoch0001.png").is_file() and (run / "losses.png").is_file()
    wf = _wf(fundus_root, files, max_epochs=2)
    trainer = wf.parser.get_parsed_content("train#trainer")
    started, metrics = [], []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: started.append(e.state.epoch))
    trainer.add_event_handler(Events.COMPLETED, lambda e: metrics.append(dict(e.state.metrics)))
    wf.run()
    assert started == [2], "the second run resumes from the epoch-1 checkpoint"
    import json

    hist = json.loads((run / "losses.json").read_text())
    assert len(hist["g_loss"]) == len(hist["d_loss"]) == 2 and "d_fake" in hist
    assert {"fd_domain", "swd", "diversity", "diversity_real"} <= set(metrics[0])
    assert (wf.parser.get_parsed_content("gan_loss").iteration
            == trainer.state.iteration - 1), "instance noise follows the trainer"
    models = fundus_root / "models" / "fundus"
    g_net, d_net = wf.parser.get_parsed_content("g_net"), wf.parser.get_parsed_content("d_net")
    _assert_exported(models / "dcgan_generator.pt", g_net)  # with the batch-norm statistics recalibrated at completion
    _assert_exported(models / "dcgan_discriminator.pt", d_net)
    bn = next(m for m in g_net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) == 20, ("recalibrated over 20 latent batches (update_bn), "
                                               "not the training's running average")

    inf = {"dcgan_generator_def#channels": TINY_G, "dcgan_discriminator_def#channels": TINY_D,
           "bundle_root": str(fundus_root), "num_samples": 5}
    outs = []
    for name in ("a", "b"):
        wf = ConfigWorkflow(config_file=str(ROOT / "configs" / "inference_dcgan.json"), workflow_type=None,
                            output_dir=str(fundus_root / name), **inf)
        wf.initialize()
        wf.run()
        outs.append([np.asarray(Image.open(fundus_root / name / f"dcgan_{i:04d}.png")) for i in range(5)])
    assert outs[0][0].shape == (64, 64, 3) and (fundus_root / "a" / "dcgan_grid.png").is_file()
    assert all(np.array_equal(a, b) for a, b in zip(*outs)), "same seed, same images"
    assert not np.array_equal(outs[0][0], outs[0][1])

    wf = ConfigWorkflow(config_file=str(ROOT / "configs" / "inference_dcgan.json"), workflow_type=None,
                        output_dir=str(fundus_root / "f"), min_d_score=0.0, **inf)
    wf.initialize()
    wf.run()
    summary = json.loads((fundus_root / "f" / "dcgan_summary.json").read_text())
    assert summary["kept"] == 5 and summary["drawn"] >= 5 and summary["acceptance_rate"] == 1.0


@pytest.mark.parametrize("over,match", [({"num_samples": 0}, "num_samples"),
                                        ({"models_dir": "/nonexistent"}, "not found")])
def test_fundus_inference_bad_input(fundus_root, tmp_path, over, match):
    args = {"dcgan_generator_def#channels": TINY_G, "bundle_root": str(fundus_root),
            "output_dir": str(tmp_path / "o")} | over
    with pytest.raises(Exception) as info:
        wf = ConfigWorkflow(config_file=str(ROOT / "configs" / "inference_dcgan.json"), workflow_type=None, **args)
        wf.initialize()
        wf.run()
    assert match in messages(info.value)
    assert not list((tmp_path / "o").glob("*.png")) if (tmp_path / "o").exists() else True


def test_vae_trains_and_samples(fundus_root):
    import json

    train = _wf(fundus_root, STACKS["vae"], max_epochs=1)
    train.run()
    network = train.parser.get_parsed_content("network")
    _assert_exported(fundus_root / "models" / "fundus" / "vae.pt", network)
    losses = json.loads((fundus_root / "runs" / "vae" / "losses.json").read_text())["loss"]
    assert len(losses) == 1 and 0.0 < losses[0] < 10.0
    wf = ConfigWorkflow(config_file=str(ROOT / "configs" / "inference_vae.json"), workflow_type=None,
                        bundle_root=str(fundus_root), output_dir=str(fundus_root / "v"), num_samples=3, prior="normal",
                        **{"vae_def#channels": [8, 16, 16], "fundus_size": 64})
    wf.initialize()
    wf.run()
    files = sorted((fundus_root / "v").glob("vae_00*.png"))
    assert len(files) == 3
    # each PNG is the exported VAE's decoding of the seed-0 latents, converted [-1, 1] -> uint8
    z = torch.randn(64, 512, generator=torch.Generator().manual_seed(0))  # sample_fundus draws one batch of 64
    with torch.no_grad():
        x = network.eval().generate(z)[:3]
    expected = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert all(np.array_equal(np.asarray(Image.open(f)), e) for f, e in zip(files, expected))


def test_failed_training_exports_no_weights(fundus_root, tmp_path):
    """An exception mid-run leaves the deployed weights alone (MONAI's StatsHandler, attached before the
    final CheckpointSaver, re-raises first, so the saver's on-exception export never runs)."""
    import shutil

    shutil.copytree(fundus_root / "data", tmp_path / "data")
    shutil.copytree(fundus_root / "models", tmp_path / "models")
    before = (tmp_path / "models" / "fundus" / "fundus_features.pt").read_bytes()
    wf = _wf(tmp_path, STACKS["fundus_features"], max_epochs=2)
    trainer = wf.parser.get_parsed_content("train#trainer")

    def fail(engine):
        raise RuntimeError("disk on fire")

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=2), fail)
    with pytest.raises(Exception) as info:
        wf.run()
    assert "disk on fire" in messages(info.value)
    assert (tmp_path / "models" / "fundus" / "fundus_features.pt").read_bytes() == before


def test_generator_batchnorm_recalibration_makes_eval_samples_match_training_mode():
    torch.manual_seed(0)
    g = DCGANGenerator(16, (16, 8, 8, 8))
    for p in g.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)  # a trained generator's statistics differ from the init's
    z = torch.randn(64, 16)
    with torch.no_grad():
        g.train()
        reference = g(z)
        g.eval()
        stale = g(z)
        RecalibrateBatchNorm(g, batches=20, batch_size=64)()
        assert not g.training, "the mode is restored"
        fresh = g(z)
    assert (fresh - reference).abs().mean() < 0.25 * (stale - reference).abs().mean()
    assert all(m.momentum == 0.1 for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)), "momentum restored"
    with torch.no_grad():
        again = g.eval()(z)
    assert torch.equal(again, fresh), "eval-mode samples are deterministic"
    # the statistics are the plain average over the seeded latent batches: the same seed gives the same buffers
    other = DCGANGenerator(16, (16, 8, 8, 8))
    other.load_state_dict(g.state_dict())
    for m in other.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(3.0)
    RecalibrateBatchNorm(other, batches=20, batch_size=64)()
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), other.state_dict().values()))


def test_instance_noise_decays_with_the_trainer_iteration():
    from types import SimpleNamespace

    d = DCGANDiscriminator(3, (8, 8, 16, 16))
    loss = DCGANLoss(d, instance_noise=0.2, anneal_iterations=100)
    assert loss.noise_std == pytest.approx(0.2)
    handlers = []
    engine = SimpleNamespace(add_event_handler=lambda ev, fn: handlers.append((ev, fn)))
    InstanceNoiseSchedule(loss).attach(engine)
    assert handlers[0][0] == Events.ITERATION_STARTED
    handlers = [fn for _, fn in handlers]
    handlers[0](SimpleNamespace(state=SimpleNamespace(iteration=51)))  # ITERATION_STARTED of iteration 51
    assert loss.noise_std == pytest.approx(0.1)
    handlers[0](SimpleNamespace(state=SimpleNamespace(iteration=500)))
    assert loss.noise_std == 0.0
    with pytest.raises(ValueError, match="instance_noise"):
        DCGANLoss(d, instance_noise=-1)


def test_gaussian_mixture_prior_fits_clusters_and_samples_by_seed():
    from bundle.networks import GaussianMixturePrior

    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-4.0] * 6, [4.0] * 6])
    z = torch.cat([c + 0.5 * torch.randn(300, 6, generator=gen) for c in centres])
    prior = GaussianMixturePrior(2, 6).fit(z, seed=0)
    found = prior.means[prior.means[:, 0].argsort()]
    assert torch.allclose(found, centres, atol=0.15)
    assert torch.allclose(prior.variances, torch.full((2, 6), 0.25), atol=0.08)
    assert torch.allclose(prior.log_weights.exp(), torch.tensor([0.5, 0.5]), atol=0.02)
    a = prior.sample(500, torch.Generator().manual_seed(3))
    assert torch.equal(a, prior.sample(500, torch.Generator().manual_seed(3)))
    # both modes drawn, nothing in between
    assert ((a[:, 0] > 0).float().mean() - 0.5).abs() < 0.1 and (a.abs() > 2).float().mean() > 0.95
    with pytest.raises(RuntimeError, match="not fitted"):
        GaussianMixturePrior(2, 6).sample(1, torch.Generator())
    with pytest.raises(ValueError, match="cannot fit 2 components to 1"):
        GaussianMixturePrior(2, 6).fit(z[:1])


def test_vae_samples_from_the_fitted_mixture_prior(fundus_root, tmp_path):
    from bundle.fundus_synthesis import latent_prior
    from bundle.networks import GaussianMixturePrior

    over = {"vae_def#channels": [8, 16, 16], "fundus_size": 64, "models_dir": str(tmp_path / "models")}
    vae = FundusVAE(image_size=64, channels=(8, 16, 16))
    save_weights(vae, tmp_path / "models" / "fundus" / "vae.pt")
    fit = ConfigWorkflow(config_file=[str(ROOT / "configs" / c) for c in ("inference_vae.json", "fit_vae_prior.json")],
                         workflow_type=None, bundle_root=str(fundus_root), prior_components=2, **over)
    fit.initialize()
    fit.run()
    prior = load_weights(GaussianMixturePrior(2, 512), tmp_path / "models" / "fundus" / "vae_prior.pt")
    assert bool(prior.fitted) and prior.means.abs().sum() > 0
    wf = ConfigWorkflow(config_file=str(ROOT / "configs" / "inference_vae.json"), workflow_type=None,
                        bundle_root=str(fundus_root), output_dir=str(tmp_path / "v"), num_samples=2, prior="mixture",
                        prior_components=2, **over)
    wf.initialize()
    wf.run()
    z = prior.sample(64, torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = vae.eval().generate(z)[:2]
    expected = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    files = sorted((tmp_path / "v").glob("vae_00*.png"))
    assert len(files) == 2 and all(np.array_equal(np.asarray(Image.open(f)), e) for f, e in zip(files, expected))
    (tmp_path / "models" / "fundus" / "vae_prior.pt").unlink()
    with pytest.raises(Exception) as info:  # the default prior needs its file: a clear error naming it and the fix
        bad = ConfigWorkflow(config_file=str(ROOT / "configs" / "inference_vae.json"), workflow_type=None,
                             bundle_root=str(fundus_root), output_dir=str(tmp_path / "w"), **over)
        bad.initialize()
        bad.run()
    assert "vae_prior.pt not found" in messages(info.value) and "fit_vae_prior.json" in messages(info.value)
    assert latent_prior("normal", 2, 512, "unused") is None
    with pytest.raises(ValueError, match="prior must be 'normal' or 'mixture'"):
        latent_prior("gmm", 2, 512, "unused")
