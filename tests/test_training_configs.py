"""The training configs as MONAI's tooling sees them: every stage stack passes ``check_properties`` for a
train workflow, and ``configs/train.json`` alone fine-tunes models/model.pt the way MONAI Label runs it."""

import json
from pathlib import Path

import monai.bundle
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.handlers import ValidationHandler

from bundle.data.prepare import prepare_phantoms
from bundle.networks import save_weights
from tiny import TINY, messages, parser

ROOT = Path(__file__).resolve().parents[1]
BASE = ["inference.json", "train.json"]
STACKS = {  # stage -> the config files its command stacks (at most three)
    "nhae_autoencoder2d": BASE + ["stages/nhae_autoencoder2d.json"],
    "nhae": BASE + ["stages/nhae.json"],
    "nhae_adaptors": BASE + ["stages/nhae_adaptors.json"],
    "diffusion3d": BASE + ["stages/diffusion3d.json"],
    "refiner": BASE + ["stages/refiner.json"],
    "oct_features": BASE + ["stages/oct_features.json"],
    "autoencoderkl3d": BASE + ["stages/baselines/autoencoderkl3d.json"],
    "ldm3d": BASE + ["stages/baselines/ldm3d.json"],
    "medical_diffusion": BASE + ["stages/baselines/medical_diffusion.json"],
    "conditional_diffusion3d": BASE + ["stages/conditional_diffusion3d.json"],
    "conditional_refiner": BASE + ["stages/conditional_refiner.json"],
}
NOT_TRAINERS = {"latents": BASE + ["stages/latents.json"], "speckle": BASE + ["stages/speckle.json"],
                "conditional_latents": BASE + ["stages/conditional_latents.json"]}
NETWORK_TINY = {k: v for k, v in TINY.items() if k.split("#")[0] in ("nhae_def", "diffusion3d_def", "refiner_def")}
STAGE_TINY = {**TINY, "discriminator_def#channels": 8, "discriminator_def#num_layers_d": 2, "crop_size": 16,
              "crops_per_volume": 2, "slices_per_crop": 12, "num_val_volumes": 1,
              "oct_feature_net_def#channels": [8, 16], "volume_latents_files": ["@latents_file"]}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A bundle_root with tiny phantoms, a tiny models/model.pt and latent files of the right shapes."""
    root = tmp_path_factory.mktemp("bundle_root")
    prepare_phantoms(root / "data" / "phantoms", num=3, size="16,32,32", seed=0, test_fraction=0.34)
    torch.manual_seed(0)
    save_weights(parser().get_parsed_content("network_def"), root / "models" / "model.pt")
    lat, one = root / "data" / "latents", torch.tensor(1.0)
    lat.mkdir(parents=True)
    torch.save({"z": torch.randn(4, 4, 2, 4, 4), "cond": torch.randn(4, 4, 16, 4, 4),
                "target": torch.randn(4, 4, 16, 4, 4), "scale_factor": one, "slice_scale_factor": one},
               lat / "latents.pt")
    labels3d, labels2d = torch.rand(4, 15, 2, 4, 4).half(), torch.rand(4, 16, 15, 4, 4).half()
    full = {"z": torch.randn(4, 4, 2, 4, 4), "cond": torch.randn(4, 4, 16, 4, 4), "target": torch.randn(4, 4, 16, 4, 4),
            "labels3d": labels3d, "labels2d": labels2d, "scale_factor": one, "slice_scale_factor": one}
    torch.save(full, lat / "label_latents.pt")
    torch.save({k: full[k] for k in ("z", "labels3d", "scale_factor", "slice_scale_factor")},
               lat / "label_latents_extra.pt")
    torch.save({"z": torch.randn(4, 4, 16, 4, 4), "scale_factor": one}, lat / "ldm3d.pt")
    torch.save({"z": torch.randn(4, 4, 2, 4, 4), "scale_factor": one}, lat / "medical_diffusion.pt")
    return root


def _stage_workflow(root, files, **over) -> ConfigWorkflow:
    wf = ConfigWorkflow(config_file=[str(ROOT / "configs" / f) for f in files], workflow_type="train")
    for k, v in {**STAGE_TINY, "bundle_root": str(root), **over}.items():
        if k.split("#")[0] in wf.parser:
            wf.parser[k] = v
    wf.initialize()
    return wf


def test_every_stage_config_has_a_stack():
    stage_files = {str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs" / "stages").rglob("*.json")}
    assert stage_files == {files[-1] for files in {**STACKS, **NOT_TRAINERS}.values()}
    assert all(len(files) <= 3 for files in {**STACKS, **NOT_TRAINERS}.values())


@pytest.mark.parametrize("stage", sorted(STACKS))
def test_stage_stack_has_the_train_properties(root, stage):
    wf = _stage_workflow(root, STACKS[stage])
    assert wf.check_properties() == []
    handlers = wf.parser.get("train#handlers")
    assert all(isinstance(h, dict) and "_target_" in h for h in handlers)
    validates = wf.parser.get("validate#evaluator") is not None
    assert validates == (stage in ("nhae_autoencoder2d", "nhae", "nhae_adaptors", "oct_features", "autoencoderkl3d"))
    parsed = wf.parser.get_parsed_content("train#handlers")
    assert any(isinstance(h, ValidationHandler) for h in parsed) == validates


def test_check_properties_catches_wiring_off_the_standard_ids(root):
    wf = _stage_workflow(root, STACKS["nhae"], **{"validate#evaluator#val_handlers": "@val_log_handlers",
                                                  "train#dataset#transform": "@train_slice_transforms"})
    assert sorted(wf.check_properties()) == ["train_preprocessing", "val_handlers"]


@pytest.mark.parametrize("stage", sorted(NOT_TRAINERS))
def test_latents_and_speckle_are_not_training_workflows(stage):
    p = ConfigParser()
    p.read_config([str(ROOT / "configs" / f) for f in NOT_TRAINERS[stage]])
    assert p.get("train") is None and p.get("validate") is None and "run" in p


def test_train_json_repeats_inference_json_values_exactly():
    train, infer = (json.loads((ROOT / "configs" / f).read_text()) for f in ("train.json", "inference.json"))
    for key in ("image_size", "noise_schedule"):  # the training data size and noise schedule are the inference ones
        assert train[key] == infer[key], key


def _monai_label_overrides(root, max_epochs):
    """What MONAI Label's BundleTrainTask passes to ``monai.bundle.run`` (monailabel 0.8.5, single GPU)."""
    bundle_config = ConfigParser()
    bundle_config.read_config(str(ROOT / "configs" / "train.json"))
    bundle_config.config.update({"bundle_root": str(ROOT)})
    handlers = bundle_config.get("train#handlers", [])
    handlers.insert(0, {"_target_": "CheckpointLoader", "load_path": str(root / "models" / "model.pt"),
                        "load_dict": {"model": "$@network"}, "strict": False})
    datalist = json.loads((root / "data" / "phantoms" / "datalist.json").read_text())
    items = {s: [{"image": str(root / "data" / "phantoms" / d["image"])} for d in datalist[s]]
             for s in ("training", "test")}
    return {"bundle_root": str(ROOT), "device": torch.device("cpu"), "train#trainer#max_epochs": max_epochs,
            "train#dataset#data": items["training"], "train#handlers": handlers, "validate#dataset#data": items["test"],
            # the test's own: tiny networks, outputs in the temporary folder
            "network_overrides": NETWORK_TINY, "image_size": [16, 32, 32], "models_dir": str(root / "models"),
            "run_dir": str(root / "runs" / "finetune"), "refiner_slices": 4, "val_interval": 1}


def test_train_json_alone_fine_tunes_the_diffusion_parts_like_monai_label(root):
    model = root / "models" / "model.pt"
    before = torch.load(model, weights_only=True)
    monai.bundle.run(run_id="run", init_id=None, final_id=None, config_file=str(ROOT / "configs" / "train.json"),
                     meta_file=str(ROOT / "configs" / "metadata.json"), **_monai_label_overrides(root, 1))
    after = torch.load(model, weights_only=True)
    assert after.keys() == before.keys()
    changed = {part: any(not torch.equal(before[k], after[k]) for k in before if k.startswith(part + "."))
               for part in ("nhae", "diffusion3d", "refiner", "speckle")}
    assert changed == {"nhae": False, "diffusion3d": True, "refiner": True, "speckle": False}
    assert list((root / "runs" / "finetune").glob("finetune_checkpoint_epoch=1.pt"))

    # the same call with more epochs resumes from the checkpoint, validates and exports again
    wf = ConfigWorkflow(config_file=str(ROOT / "configs" / "train.json"),
                        meta_file=str(ROOT / "configs" / "metadata.json"), workflow_type="train", init_id=None,
                        final_id=None, **_monai_label_overrides(root, 2))
    wf.initialize()
    assert wf.check_properties() == []
    started = []
    wf.parser.get_parsed_content("train#trainer").add_event_handler(Events.EPOCH_STARTED,
                                                                    lambda e: started.append(e.state.epoch))
    wf.run()
    assert started == [2]
    val = wf.parser.get_parsed_content("validate#evaluator").state.metrics
    assert torch.isfinite(torch.tensor(val["val_loss"]))
    resumed = torch.load(model, weights_only=True)
    assert any(not torch.equal(after[k], resumed[k]) for k in after if k.startswith("refiner."))
    assert all(torch.equal(before[k], resumed[k]) for k in before if k.startswith("nhae."))


def test_train_json_resolves_whole_as_monai_label_ui_runs_it(root):
    """MONAI Label's UI sends run_id "" (its default option): monai.bundle.run then resolves the whole config,
    so every item of train.json must resolve without the default datalist or latents files."""
    model = root / "models" / "model.pt"
    before = torch.load(model, weights_only=True)
    monai.bundle.run(run_id="", init_id=None, final_id=None, config_file=str(ROOT / "configs" / "train.json"),
                     meta_file=str(ROOT / "configs" / "metadata.json"), **_monai_label_overrides(root, 3))
    after = torch.load(model, weights_only=True)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("diffusion3d."))
    assert list((root / "runs" / "finetune").glob("finetune_checkpoint_epoch=3.pt"))


def test_train_json_without_data_names_what_is_missing(tmp_path):
    with pytest.raises(Exception) as info:
        monai.bundle.run(run_id="run", config_file=str(ROOT / "configs" / "train.json"), bundle_root=str(ROOT),
                         dataset_dir=str(tmp_path / "none"), run_dir=str(tmp_path / "runs"),
                         device="$torch.device('cpu')")
    assert "train#dataset is empty" in messages(info.value) and "datalist.json" in messages(info.value)
