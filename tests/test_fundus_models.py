from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow
from PIL import Image

from bundle.data.prepare_fundus import prepare_fundus
from bundle.engines import DCGANLoss
from bundle.networks import DCGANDiscriminator, DCGANGenerator, FundusFeatureNet, FundusVAE, ClassAndBinaryLoss, save_weights

ROOT = Path(__file__).resolve().parents[1]
TINY_G, TINY_D = [32, 16, 8, 8], [8, 8, 16, 32]  # 64 x 64 images


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
    rec, mu, logvar, z = v(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert rec.shape == (2, 3, 64, 64) and mu.shape == (2, 32) and v.generate(torch.randn(3, 32)).shape == (3, 3, 64, 64)
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


def _wf(tmp_path, files, **over):
    cfg = [str(ROOT / "configs" / f) for f in files]
    base = {"bundle_root": str(tmp_path), "fundus_size": 64, "device": "$torch.device('cpu')", "batch_size": 4, "metric_samples": 8,
            "dcgan_generator_def#channels": TINY_G, "dcgan_discriminator_def#channels": TINY_D,
            "vae_def#channels": [8, 16, 16], "feature_net_def#channels": [8, 16]}
    base.update(over)
    wf = ConfigWorkflow(config_file=cfg, workflow_type=None, **{k: v for k, v in base.items() if _known(cfg, k)})
    wf.initialize()
    return wf


def _known(cfg, key):
    import json

    root = key.split("#")[0]
    return any(root in json.loads(Path(c).read_text()) for c in cfg)


@pytest.fixture(scope="module")
def fundus_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fundus")
    prepare_fundus(root / "data" / "fundus", num=10, size=64, seed=0, test_fraction=0.3)
    save_weights(FundusFeatureNet(channels=(8, 16)), root / "models" / "fundus_features.pt")
    return root


def test_feature_config_trains_and_exports(fundus_root, tmp_path):
    import shutil

    shutil.copytree(fundus_root / "data", tmp_path / "data")
    wf = _wf(tmp_path, ["fundus_common.json", "train_fundus_features.json"], max_epochs=1)
    wf.run()
    assert (tmp_path / "models" / "fundus_features.pt").is_file()


def test_dcgan_trains_resumes_logs_and_samples_reproducibly(fundus_root):
    files = ["inference_dcgan.json", "fundus_common.json", "train_dcgan.json"]
    _wf(fundus_root, files, max_epochs=1).run()
    run = fundus_root / "runs" / "dcgan"
    assert (run / "samples_epoch0001.png").is_file() and (run / "losses.png").is_file()
    wf = _wf(fundus_root, files, max_epochs=2)
    trainer = wf.parser.get_parsed_content("trainer")
    started, metrics = [], []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: started.append(e.state.epoch))
    trainer.add_event_handler(Events.COMPLETED, lambda e: metrics.append(dict(e.state.metrics)))
    wf.run()
    assert started == [2], "the second run resumes from the epoch-1 checkpoint"
    import json

    hist = json.loads((run / "losses.json").read_text())
    assert len(hist["g_loss"]) == len(hist["d_loss"]) == 2 and "d_fake" in hist
    assert {"fd_domain", "swd", "diversity", "diversity_real"} <= set(metrics[0])
    models = fundus_root / "models"
    assert (models / "dcgan_generator.pt").is_file() and (models / "dcgan_discriminator.pt").is_file()

    inf = {"dcgan_generator_def#channels": TINY_G, "dcgan_discriminator_def#channels": TINY_D, "bundle_root": str(fundus_root),
           "num_samples": 5}
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


@pytest.mark.parametrize("over,match", [({"num_samples": 0}, "num_samples"), ({"models_dir": "/nonexistent"}, "not found")])
def test_fundus_inference_bad_input(fundus_root, tmp_path, over, match):
    args = {"dcgan_generator_def#channels": TINY_G, "bundle_root": str(fundus_root), "output_dir": str(tmp_path / "o")} | over
    with pytest.raises(Exception) as info:
        wf = ConfigWorkflow(config_file=str(ROOT / "configs" / "inference_dcgan.json"), workflow_type=None, **args)
        wf.initialize()
        wf.run()
    msgs, e = [], info.value
    while e is not None:
        msgs.append(str(e))
        e = e.__cause__ or e.__context__
    assert any(match in m for m in msgs), msgs
    assert not list((tmp_path / "o").glob("*.png")) if (tmp_path / "o").exists() else True


def test_vae_trains_and_samples(fundus_root):
    _wf(fundus_root, ["inference_vae.json", "fundus_common.json", "train_vae.json"], max_epochs=1).run()
    assert (fundus_root / "models" / "vae.pt").is_file() and (fundus_root / "runs" / "vae" / "losses.json").is_file()
    wf = ConfigWorkflow(config_file=str(ROOT / "configs" / "inference_vae.json"), workflow_type=None, bundle_root=str(fundus_root),
                        output_dir=str(fundus_root / "v"), num_samples=3, **{"vae_def#channels": [8, 16, 16], "fundus_size": 64})
    wf.initialize()
    wf.run()
    assert len(list((fundus_root / "v").glob("vae_00*.png"))) == 3


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
        g.recalibrate(batches=20, batch_size=64)
        g.eval()
        fresh = g(z)
    assert (fresh - reference).abs().mean() < 0.25 * (stale - reference).abs().mean()
    assert all(m.momentum == 0.1 for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)), "momentum restored"
    with torch.no_grad():
        again = g.eval()(z)
    assert torch.equal(again, fresh), "eval-mode samples are deterministic"


def test_instance_noise_decays_with_the_trainer_iteration():
    from types import SimpleNamespace

    d = DCGANDiscriminator(3, (8, 8, 16, 16))
    loss = DCGANLoss(d, instance_noise=0.2, anneal_iterations=100)
    assert loss.noise_std == pytest.approx(0.2)
    handlers = []
    engine = SimpleNamespace(add_event_handler=lambda ev, fn: handlers.append(fn))
    loss.attach(engine)
    handlers[0](SimpleNamespace(state=SimpleNamespace(iteration=51)))  # ITERATION_STARTED of iteration 51
    assert loss.noise_std == pytest.approx(0.1)
    handlers[0](SimpleNamespace(state=SimpleNamespace(iteration=500)))
    assert loss.noise_std == 0.0
    with pytest.raises(ValueError, match="instance_noise"):
        DCGANLoss(d, instance_noise=-1)
