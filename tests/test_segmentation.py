"""The segmentation workflow (configs/segmentation/, bundle.segmentation): model-zoo properties of every stack,
the surface distance and Dice metrics on hand-built maps, mixing real and synthetic pairs, the en-face
artery / vein target, the low-resolution degradation, and tiny end-to-end runs (train, resume, evaluate, infer)."""

import json
from pathlib import Path

import monai.bundle
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.data import Dataset, MetaTensor
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot

from bundle.data.prepare import prepare_phantoms
from bundle.io import load_nifti, save_json
from bundle.networks import save_weights
from bundle.segmentation import (ArteryVeinTargetd, ClassSubsetDiceMetric, EnFaceProjectiond, LowResolutiond,
                                 SurfaceMADMetric, mix_dataset, mix_synthetic, synthetic_items)
from tiny import messages

ROOT = Path(__file__).resolve().parents[1]
SEG = ROOT / "configs" / "segmentation"
TASK_FILES = {"layers": ["train.json"], "av": ["train.json", "av.json"]}
TINY = {"device": "$torch.device('cpu')", "network_def#channels": [4, 8], "network_def#strides": [2],
        "max_epochs": 1, "epoch_length": 2, "val_interval": 1, "num_val_volumes": 1}
TINY_CROP = {"layers": [8, 16, 16], "av": [16, 16]}
PAIR_KEYS = ("image", "label", "artery", "vein")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny phantoms (real data) and a Decathlon folder of 'synthetic' pairs made of other phantoms."""
    tmp = tmp_path_factory.mktemp("seg")
    prepare_phantoms(tmp / "real", num=4, size="16,32,32", seed=0)
    src = prepare_phantoms(tmp / "syn", num=3, size="16,32,32", seed=1, test_fraction=0.0)
    save_json({"training": [{k: it[k] for k in PAIR_KEYS} for it in src["training"]]}, tmp / "syn" / "dataset.json")
    return tmp


def _files(task, *extra):
    return [str(SEG / f) for f in TASK_FILES[task] + list(extra)]


def _workflow(data, task, *extra, workflow_type="train", run="run", **over) -> ConfigWorkflow:
    settings = {**TINY, "crop_size": TINY_CROP[task], "dataset_dir": str(data / "real"),
                "run_dir": str(data / f"{run}_{task}"), **over}
    wf = ConfigWorkflow(config_file=_files(task, *extra), meta_file=str(ROOT / "configs" / "metadata.json"),
                        logging_file=False, workflow_type=workflow_type, **settings)
    wf.initialize()
    return wf


def _train(data, task, *extra, run="run", **over) -> ConfigWorkflow:
    wf = _workflow(data, task, *extra, run=run, **over)
    wf.run()
    return wf


# --- model-zoo properties ------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(TASK_FILES))
@pytest.mark.parametrize("extra", [(), ("mix_synthetic.json",)])
def test_train_stacks_have_the_train_properties(data, task, extra):
    wf = _workflow(data, task, *extra, synthetic_dir=str(data / "syn"))
    assert wf.check_properties() == []
    assert wf.parser.get_parsed_content("network_def").dimensions == (3 if task == "layers" else 2)
    n_real = len(wf.parser.get_parsed_content("train#dataset"))
    assert len(wf.parser.get_parsed_content("train#dataloader#dataset")) == n_real * (2 if extra else 1)


@pytest.mark.parametrize("task", sorted(TASK_FILES))
@pytest.mark.parametrize("stage", ["inference.json", "evaluate.json"])
def test_inference_and_evaluate_stacks_have_the_inference_properties(data, task, stage):
    parser = ConfigParser()
    parser.read_config(_files(task))
    parser.update({**TINY, "crop_size": TINY_CROP[task]})
    save_weights(parser.get_parsed_content("network_def"), data / f"props_{task}" / "model.pt")
    wf = _workflow(data, task, stage, workflow_type="inference", run="props")
    assert wf.check_properties() == []


def test_stacks_stay_within_three_files():
    assert len(_files("av", "mix_synthetic.json")) == len(_files("av", "evaluate.json")) == 3


# --- metrics ---------------------------------------------------------------------------------------------------


def _layer_map(surfaces: np.ndarray, depth: int) -> torch.Tensor:
    """(1, 1, D, H, W) layer map whose boundary s lies at depth surfaces[s, d, w] (label = surfaces above)."""
    h = np.arange(depth)[None, None, :, None]
    return torch.as_tensor((h >= surfaces[:, :, None, :]).sum(0))[None, None].float()


def test_surface_mad_counts_a_two_voxel_shift_in_half_the_columns():
    depth, d, w = 40, 2, 4
    true = np.broadcast_to((2 + 3 * np.arange(12))[:, None, None], (12, d, w)).copy()
    pred = true.copy()
    pred[0, :, : w // 2] += 2  # ILM two voxels deeper in half of the A-scans
    metric = SurfaceMADMetric(reduction="none")
    metric(_layer_map(pred, depth), _layer_map(true, depth))
    assert metric.aggregate().tolist() == [[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]  # ILM, IPL, OPL, ISOS, RPE, BM
    mean = SurfaceMADMetric()
    mean(one_hot(_layer_map(pred, depth), 13), one_hot(_layer_map(true, depth), 13))  # one-hot works the same
    assert mean.aggregate().item() == pytest.approx(1 / 6)


def test_surface_mad_puts_an_absent_surface_one_past_the_bottom():
    depth, d, w = 40, 2, 4
    true = _layer_map(np.broadcast_to((2 + 3 * np.arange(12))[:, None, None], (12, d, w)), depth)
    nothing = torch.zeros_like(true)  # no retina predicted: every surface absent, at depth 40
    metric = SurfaceMADMetric(reduction="none")
    metric(nothing, true)
    assert metric.aggregate().tolist() == [[38.0, 29.0, 23.0, 17.0, 11.0, 8.0]]  # 40 - (2 + 3 s), s = 0 3 5 7 9 10
    both = SurfaceMADMetric()
    both(nothing, nothing)
    assert both.aggregate().item() == 0.0


def test_layer_dice_averages_the_retinal_layers_only():
    label = torch.arange(13).repeat_interleave(4).reshape(1, 1, 1, 4, 13)
    pred = torch.where(label == 0, torch.full_like(label, 12), label)  # vitreous predicted as sclera
    subset, full = ClassSubsetDiceMetric(), DiceMetric(include_background=False)
    subset(one_hot(pred, 13), one_hot(label, 13))
    full(one_hot(pred, 13), one_hot(label, 13))
    assert subset.aggregate().item() == pytest.approx(1.0)
    assert full.aggregate().item() < 0.99
    assert subset.get_buffer().shape == (1, 13) and subset.get_buffer()[0, 0] == 0.0


# --- mixing real and synthetic pairs -----------------------------------------------------------------------------


@pytest.fixture()
def pairs(tmp_path):
    """A Decathlon folder of 10 'synthetic' pairs (empty files: only their existence is checked) and 4 real items."""
    items = []
    for i in range(10):
        item = {"image": f"imagesTr/s{i}.nii.gz", "label": f"labelsTr/s{i}.nii.gz",
                "artery": f"labelsTr/s{i}_artery.nii.gz", "vein": f"labelsTr/s{i}_vein.nii.gz"}
        for f in item.values():
            (tmp_path / f).parent.mkdir(exist_ok=True)
            (tmp_path / f).touch()
        items.append(item)
    save_json({"training": items}, tmp_path / "dataset.json")
    real = [{"image": f"/real/r{i}.nii.gz", "label": f"/real/r{i}_l.nii.gz", "category": "x"} for i in range(4)]
    return tmp_path, real


def test_mix_synthetic_counts_and_seeding(pairs):
    folder, real = pairs
    assert mix_synthetic(real, None, 0) == real and mix_synthetic(real, folder, 0.0, seed=3) == real
    mixed = mix_synthetic(real, folder, 1.0, seed=0)
    assert mixed[:4] == real and len(mixed) == 8
    syn = mixed[4:]
    assert all(set(s) == {"image", "label"} for s in syn)  # the keys the real items have
    assert all(s["image"].startswith(str(folder)) for s in syn)
    assert len({s["image"] for s in syn}) == 4  # without replacement
    assert mix_synthetic(real, folder, 1.0, seed=0) == mixed
    assert [s["image"] for s in mix_synthetic(real, folder, 1.0, seed=1)[4:]] != [s["image"] for s in syn]
    assert len(mix_synthetic(real, folder, 0.5)) == 6  # round(0.5 * 4) synthetic
    only = mix_synthetic(real, folder, 2.0, real_fraction=0)  # "200 % Syn": 2 x 4 synthetic, no real
    assert len(only) == 8 and not any(it in real for it in only)
    half = mix_synthetic(real, folder, 1.0, real_fraction=0.5, seed=0)
    assert len(half) == 6 and all(it in real for it in half[:2])
    assert half[2:] == syn  # the synthetic draw does not depend on real_fraction
    assert set(synthetic_items(folder, 2, keys=PAIR_KEYS)[0]) == set(PAIR_KEYS)


def test_mix_synthetic_errors_name_the_folder(pairs, tmp_path_factory):
    folder, real = pairs
    with pytest.raises(ValueError, match=f"{folder} holds 10 synthetic pairs; 12 were asked"):
        mix_synthetic(real, folder, 3.0)
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(ValueError, match=f"synthetic_dir {empty} has no dataset.json"):
        mix_synthetic(real, empty, 1.0)
    (folder / "labelsTr" / "s7.nii.gz").unlink()
    with pytest.raises(ValueError, match=f"synthetic_dir {folder}: dataset.json lists 1 missing file"):
        mix_synthetic(real, folder, 1.0)
    with pytest.raises(ValueError, match="needs synthetic_dir"):
        mix_synthetic(real, None, 1.0)
    with pytest.raises(ValueError, match="nothing to train on"):
        mix_synthetic(real, folder, 0, real_fraction=0)
    for bad in ({"ratio": -1.0}, {"ratio": 1.0, "real_fraction": 1.5}):
        with pytest.raises(ValueError):
            mix_synthetic(real, folder, **bad)


def test_mix_dataset_keeps_the_real_dataset_and_its_transform(pairs):
    folder, real = pairs
    real_ds = Dataset(real, transform=lambda d: {k: d[k] for k in ("image", "label")})
    assert mix_dataset(real_ds, None, 0) is real_ds
    mixed = mix_dataset(real_ds, folder, 0.5, real_fraction=0.5)
    assert len(mixed) == 4
    assert [mixed[i] for i in range(4)] == [{k: it[k] for k in ("image", "label")}
                                            for it in mix_synthetic(real, folder, 0.5, real_fraction=0.5)]


# --- transforms --------------------------------------------------------------------------------------------------


def test_artery_vein_target_and_en_face_projection():
    artery = torch.tensor([[[1, 1, 0, 0], [0, 0, 0, 0]]], dtype=torch.float32)
    vein = torch.tensor([[[0, 1, 1, 0], [0, 0, 0, 1]]], dtype=torch.float32)
    out = ArteryVeinTargetd()({"artery": artery, "vein": vein})
    assert out["label"].tolist() == [[[1, 1, 2, 0], [0, 0, 0, 2]]]  # artery wins where both are set
    vol = MetaTensor(torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4),
                     affine=torch.diag(torch.tensor([0.5, 0.1, 0.2, 1.0], dtype=torch.float64)))
    proj = EnFaceProjectiond("image")({"image": vol})["image"]
    assert proj.shape == (1, 2, 4) and torch.equal(proj.as_tensor(), vol.as_tensor().mean(dim=2))
    assert torch.diag(proj.affine).tolist() == [0.5, 0.2, 0.1, 1.0]  # (D, W) first, like the artery / vein masks


def test_av_preprocessing_builds_the_target_from_the_masks(data):
    parser = ConfigParser()
    parser.read_config(_files("av"))
    parser.update({"dataset_dir": str(data / "real")})
    item = parser.get_parsed_content("train_items")[0]
    out = parser.get_parsed_content("validate#preprocessing")(item)
    assert set(out) == {"image", "label"} and out["image"].shape == out["label"].shape == (1, 16, 32)
    assert abs(out["image"].mean().item()) < 1e-4 and out["image"].std().item() == pytest.approx(1.0, abs=0.05)
    artery, vein = (torch.as_tensor(load_nifti(item[k])[0].astype(np.float32)) for k in ("artery", "vein"))
    assert torch.equal(out["label"][0].as_tensor(), torch.where(artery > 0, 1.0, torch.where(vein > 0, 2.0, 0.0)))


def test_low_resolution_changes_images_not_labels(data):
    img = torch.rand(1, 8, 16, 16)
    low = LowResolutiond("image")({"image": img})["image"]
    assert low.shape == img.shape and (low - img).abs().mean() > 0.05
    flat = torch.full((1, 8, 16, 16), 0.3)
    assert torch.allclose(LowResolutiond("image")({"image": flat})["image"], flat)
    with pytest.raises(ValueError, match="factor"):
        LowResolutiond("image", factor=1)
    outs = {}
    for switch in ("false", True):
        parser = ConfigParser()
        parser.read_config(_files("layers"))
        parser.update({"dataset_dir": str(data / "real"), "low_resolution": switch, "augment_transforms": []})
        outs[switch] = parser.get_parsed_content("train#preprocessing")(parser.get_parsed_content("train_items")[0])
        assert len(parser.get_parsed_content("low_resolution_transforms")) == (switch is True)
    assert torch.equal(outs["false"]["label"], outs[True]["label"])
    assert (outs["false"]["image"] - outs[True]["image"]).abs().mean() > 0.01


# --- end to end ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(TASK_FILES))
def test_train_resume_evaluate_and_infer(data, task):
    run = data / f"e2e_{task}"
    epochs = []
    wf = _workflow(data, task, run="e2e")
    trainer = wf.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: epochs.append(e.state.iteration))
    wf.run()
    assert epochs == [1, 2]
    key = "mean_dice" if task == "layers" else "mean_iou"
    assert key in wf.parser.get_parsed_content("validate#evaluator").state.metrics  # validated after epoch 1
    weights = torch.load(run / "model.pt", weights_only=True)
    assert (run / "segmentation_checkpoint_epoch=1.pt").is_file() and list(run.glob("events.out.tfevents*"))

    started = []  # the same run with one more epoch resumes: epoch 2, iterations 3 and 4
    wf = _workflow(data, task, run="e2e", max_epochs=2)
    wf.parser.get_parsed_content("train#trainer").add_event_handler(
        Events.EPOCH_STARTED, lambda e: started.append((e.state.epoch, e.state.iteration)))
    wf.run()
    assert started == [(2, 2)] and (run / "segmentation_checkpoint_epoch=2.pt").is_file()

    _train(data, task, run="again")  # deterministic by seed
    again = torch.load(data / f"again_{task}" / "model.pt", weights_only=True)
    assert all(torch.equal(weights[k], again[k]) for k in weights)

    monai.bundle.run(config_file=_files(task, "evaluate.json"), meta_file=str(ROOT / "configs" / "metadata.json"),
                     logging_file=False, **{**TINY, "crop_size": TINY_CROP[task], "dataset_dir": str(data / "real"),
                                            "run_dir": str(run)})
    report = json.loads((run / "metrics_test.json").read_text())
    assert report["task"] == task and report["num_cases"] == 1
    if task == "layers":
        assert set(report["metrics"]) == {"mean_dice", "surface_mad"}
        assert list(report["per_class"]["mean_dice"])[1:12] == ["RNFL", "GCL", "IPL", "INL", "OPL", "ONL", "ELM", "EZ",
                                                                 "IZ", "RPE", "Choroid"]
        assert list(report["per_class"]["surface_mad"]) == ["ILM", "IPL", "OPL", "ISOS", "RPE", "BM"]
        assert 0 <= report["metrics"]["mean_dice"] <= 1 and report["metrics"]["surface_mad"] >= 0
    else:
        assert set(report["metrics"]) == {"mean_iou"} and list(report["per_class"]["mean_iou"]) == ["artery", "vein"]

    _workflow(data, task, "inference.json", workflow_type="inference", run="e2e").run()
    pred = list((run / "predictions").glob("*.nii.gz"))
    assert len(pred) == 1 and pred[0].name.endswith(f"_seg_{task}.nii.gz")


def test_training_on_synthetic_pairs_only_through_the_overlay(data):
    wf = _workflow(data, "layers", "mix_synthetic.json", run="syn", synthetic_dir=str(data / "syn"),
                   synthetic_ratio=1.0, real_fraction=0.0)
    loader_ds = wf.parser.get_parsed_content("train#dataloader#dataset")
    n_real = len(wf.parser.get_parsed_content("train#dataset"))
    assert len(loader_ds) == n_real and all(str(data / "syn") in it["image"] for it in loader_ds.datasets[0].data)
    wf.run()
    assert (data / "syn_layers" / "model.pt").is_file()
    with pytest.raises(Exception) as info:
        _workflow(data, "layers", "mix_synthetic.json", run="nosyn").parser.get_parsed_content("train#dataloader")
    assert "synthetic_ratio > 0 needs synthetic_dir" in messages(info.value)


def test_table2_summary_reports_mean_spread_and_fidelity(tmp_path):
    from bundle.io import save_json
    from bundle.segmentation.experiment import ROWS, _slug, markdown, summarise

    def report(dice, mad):
        return {"num_cases": 11, "metrics": {"mean_dice": dice, "surface_mad": mad}, "per_class": {}}

    for s, (d, m) in enumerate([(0.8, 2.0), (0.9, 3.0), (1.0, 4.0)]):
        save_json(report(d, m), tmp_path / "layers" / _slug("Real") / f"seed{s}" / "metrics_test.json")
        save_json(report(d - 0.5, m), tmp_path / "layers" / _slug("Real") / f"seed{s}" / "metrics_synthetic.json")
    save_json(report(0.7, 5.0), tmp_path / "layers" / _slug("200 % Syn") / "seed0" / "metrics_test.json")
    table = summarise(tmp_path, ["layers"], [0, 1, 2])["layers"]
    assert table["Real"]["Dice"]["mean"] == pytest.approx(0.9) and table["Real"]["Dice"]["std"] == pytest.approx(0.1)
    assert table["Real"]["surface MAD (voxels)"]["std"] == pytest.approx(1.0) and table["Real"]["seeds"] == 3
    fid = table["label fidelity: Real models on the synthetic pairs"]
    assert fid["Dice"]["mean"] == pytest.approx(0.4)
    assert table["200 % Syn"]["seeds"] == 1 and table["200 % Syn"]["Dice"]["std"] is None
    assert set(table) <= set(ROWS) | {"label fidelity: Real models on the synthetic pairs"}
    text = markdown({"layers": table})
    assert "| Real | 0.900 +- 0.100 | 3.000 +- 1.000 | 3 |" in text and "| 200 % Syn | 0.700 | 5.000 | 1 |" in text


def test_a_stray_voxel_moves_a_surface_by_one_voxel_not_to_the_top():
    from bundle.segmentation import boundary_surfaces

    z = torch.arange(20)[None, None, :, None]
    true = (z >= 8).long() + (z >= 12).long() * 11  # (1, 1, 20, 1): vitreous, then RNFL at 8, sclera at 12
    pred = true.clone()
    pred[0, 0, 2, 0] = 12  # one vitreous voxel labelled sclera
    assert boundary_surfaces(true, [0, 1]).flatten().tolist() == [8.0, 12.0]
    assert boundary_surfaces(pred, [0, 1]).flatten().tolist() == [7.0, 11.0]
