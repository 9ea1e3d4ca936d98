"""Training under torchrun (gloo, 2 CPU processes): DistributedDataParallel gives the single-process step,
a distributed run resumes from its checkpoint, and only rank 0 writes."""

import functools
import json
import os
import subprocess
import sys

import pytest
import torch
from monai.engines import DiffusionPrepareBatch

from test_training_configs import root  # noqa: F401  (module fixture: tiny phantoms and model.pt)
from tiny import ROOT, TINY


class SampleKeyedNoise(DiffusionPrepareBatch):
    """Noise and timesteps as functions of each sample (the same on any rank and in any batch), so that
    one step of 2 ranks x batch 1 and of 1 rank x batch 2 see the same draws."""

    def get_noise(self, images):
        return torch.sin(7.0 * images + 1.0)

    def get_timesteps(self, images):
        return (images.flatten(1).abs().sum(1) * 100).long() % self.num_train_timesteps


ITEMS = "$[{'image': torch.linspace(-1, 1, 128).reshape(4, 2, 4, 4).roll(5 * i) * (1 + i)} for i in range(2)]"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _train(where, launcher, batch_size, max_epochs, extra=()):
    tiny = where.parent / "tiny.json"
    tiny.write_text(json.dumps(TINY))
    configs = [str(ROOT / "configs" / "inference.json"), str(tiny), str(ROOT / "configs" / "train.json"),
               str(ROOT / "configs" / "stages" / "diffusion3d.json"), *extra]
    args = {"bundle_root": where, "train_items": ITEMS, "prepare_batch": "$__import__('test_distributed_training')."
            "SampleKeyedNoise(1000)", "batch_size": batch_size, "max_epochs": max_epochs, "ema_momentum": 0,
            "lr": 0.01}
    cmd = launcher + ["-m", "monai.bundle", "run", "--config_file", repr(configs)]
    for k, v in args.items():
        cmd += [f"--{k}", str(v)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=where.parent, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r.stdout + r.stderr, torch.load(where / "models" / "model.pt", map_location="cpu", weights_only=True)


def _close(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_two_ranks_step_like_one_rank_with_the_double_batch_and_resume(tmp_path):
    _, single = _train(tmp_path / "single", [sys.executable], batch_size=2, max_epochs=1)
    log, ddp = _train(tmp_path / "ddp", TORCHRUN, batch_size=1, max_epochs=1)
    assert any(k.startswith("diffusion3d.") for k in ddp)
    _close(ddp, single)
    # rank 0 alone wrote: one checkpoint series and one TensorBoard event file
    run_dir = tmp_path / "ddp" / "runs" / "diffusion3d"
    assert len(list(run_dir.glob("events.out.tfevents*"))) == 1
    assert len(list(run_dir.glob("*.pt"))) == 1, sorted(p.name for p in run_dir.iterdir())

    # resume: epoch 2 continued from the epoch-1 checkpoint equals two uninterrupted epochs
    log2, resumed = _train(tmp_path / "ddp", TORCHRUN, batch_size=1, max_epochs=2)
    assert "resuming from" in log2
    _, straight = _train(tmp_path / "straight", TORCHRUN, batch_size=1, max_epochs=2)
    _close(resumed, straight)
    moved = max((resumed[k] - ddp[k]).abs().max().item() for k in ddp)
    assert moved > 1e-4


# --- custom iterations: every trained part inside DDP (spawned gloo ranks, each on its own data) ----------

def _spawned(rank, world, init_file, fn, out_dir):
    import torch.distributed as dist

    import bundle.distributed as bd

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # the same initial weights; DDP broadcasts rank 0's anyway
        nets = fn(rank, bd)
        weights = [torch.cat([p.detach().flatten() for p in n.parameters()]) for n in nets]
        torch.save(weights, out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _in_sync_after_one_step(tmp_path, fn):
    """Run ``fn(rank, bundle.distributed) -> networks`` on 2 ranks; return each rank's flattened weights."""
    ctx = torch.multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_spawned, args=(r, 2, tmp_path / "init", fn, tmp_path)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]


def _nhae_step(stage, rank, bd):
    from types import SimpleNamespace

    from monai.networks.nets import PatchDiscriminator

    from bundle.engines import NHAEIteration
    from bundle.networks import NonHolisticAutoencoder

    net = NonHolisticAutoencoder(channels_2d=(8, 8, 16, 16), channels_3d=(8, 8, 16), sr_channels=8,
                                 num_res_blocks=1, norm_num_groups=4)
    disc = PatchDiscriminator(spatial_dims=2, num_layers_d=2, channels=8, in_channels=1, out_channels=1)
    opt = torch.optim.Adam(net.trainable_parameters(stage), lr=1e-2)
    parts = json.loads((ROOT / "configs" / "stages" / STAGE_FILES[stage]).read_text())["ddp_parts"]
    engine = SimpleNamespace(network=bd.wrap(net, parts), optimizer=opt, non_blocking=False,
                             state=SimpleNamespace(device=torch.device("cpu"), iteration=1))
    it = NHAEIteration(stage, bd.wrap(disc), torch.optim.Adam(disc.parameters(), 1e-2), adv_weight=0.1,
                       adv_start_iteration=1, slices_per_volume=2, latent_slices=4)
    torch.manual_seed(100 + rank)  # each rank its own data and draws
    shape = (2, 1, 32, 32) if stage == "autoencoder2d" else (1, 1, 16, 32, 32)
    it(engine, {"image": torch.rand(shape) * 2 - 1})
    return [net, disc]


STAGE_FILES = {"autoencoder2d": "nhae_autoencoder2d.json", "nhae": "nhae.json", "adaptors": "nhae_adaptors.json"}


@pytest.mark.parametrize("stage", sorted(STAGE_FILES))
def test_nhae_stage_parts_train_inside_ddp(tmp_path, stage):
    r0, r1 = _in_sync_after_one_step(tmp_path, functools.partial(_nhae_step, stage))
    for a, b in zip(r0, r1):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _drgan_step(rank, bd):
    from types import SimpleNamespace

    from bundle.engines import DRGANIteration
    from bundle.networks.drgan import DRGANGenerator, FundusGrader, MultiScaleDiscriminator
    from test_drgan import random_masks

    g = DRGANGenerator(channels=(8, 8, 16, 16), local_channels=(4, 8), num_res_blocks=1, code_size=16,
                       style_size=16)
    d = MultiScaleDiscriminator(channels=(8, 16, 16), num_scales=2)
    grader = FundusGrader(channels=(8, 8, 16, 16), input_size=64)
    grader.fit_grade_gaussians(torch.randn(40, 16) + torch.arange(40)[:, None] % 5, torch.arange(40) % 5)
    engine = SimpleNamespace(network=bd.wrap(g), optimizer=torch.optim.Adam(g.parameters(), 1e-2),
                             state=SimpleNamespace(device="cpu"))
    it = DRGANIteration(bd.wrap(d), torch.optim.Adam(d.parameters(), 1e-2), grader)
    for stage in ("global", "local"):  # G_l unused in the global stage: DDP must accept it
        g.set_stage(stage)
        torch.manual_seed(100 + rank)
        it(engine, {"image": torch.rand(2, 3, 64, 64) * 2 - 1, "mask": random_masks(2, seed=rank),
                    "grade": torch.tensor([rank, 4 - rank])})
    return [g, d]


def test_drgan_generator_and_discriminators_train_inside_ddp(tmp_path):
    r0, r1 = _in_sync_after_one_step(tmp_path, _drgan_step)
    for a, b in zip(r0, r1):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --- MONAI Label's multi-GPU pair: train.json + multi_gpu_train.json --------------------------------------

def test_monai_label_multi_gpu_pair_fine_tunes_under_torchrun_and_refuses_plain_python(root, tmp_path):  # noqa: F811
    from test_training_configs import NETWORK_TINY

    datalist = json.loads((root / "data" / "phantoms" / "datalist.json").read_text())
    items = {s: [{"image": str(root / "data" / "phantoms" / d["image"])} for d in datalist[s]]
             for s in ("training", "test")}
    models = tmp_path / "models"
    models.mkdir()
    (models / "model.pt").write_bytes((root / "models" / "model.pt").read_bytes())
    over = {"bundle_root": str(ROOT), "device": "$torch.device('cpu')", "max_epochs": 1,
            "network_overrides": NETWORK_TINY, "image_size": [16, 32, 32], "models_dir": str(models),
            "run_dir": str(tmp_path / "runs"),
            "refiner_slices": 4, "val_interval": 1, "train#dataset#data": items["training"],
            "validate#dataset#data": items["test"]}
    (tmp_path / "over.json").write_text(json.dumps(over))
    configs = [str(ROOT / "configs" / "train.json"), str(ROOT / "configs" / "multi_gpu_train.json"),
               str(tmp_path / "over.json")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    before = torch.load(models / "model.pt", weights_only=True)
    r = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(configs)], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "needs torchrun" in r.stdout + r.stderr
    r = subprocess.run(TORCHRUN + ["-m", "monai.bundle", "run", "--config_file", repr(configs)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    after = torch.load(models / "model.pt", weights_only=True)
    assert after.keys() == before.keys()  # the parts' DDP wrappers leave the exported keys alone
    changed = {p: any(not torch.equal(before[k], after[k]) for k in before if k.startswith(p + "."))
               for p in ("nhae", "diffusion3d", "refiner")}
    assert changed == {"nhae": False, "diffusion3d": True, "refiner": True}
    assert len(list((tmp_path / "runs").glob("events.out.tfevents*"))) == 1
