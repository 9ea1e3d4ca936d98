from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from bundle.data.prepare import prepare_phantoms
from bundle.data.slices import NUM_BINARY, PROFILE_BINS, layer_profile, volume_slices
from bundle.evaluation import evaluate_oct, list_volumes, load_volume
from bundle.networks import ClassAndBinaryLoss, DomainFeatureNet, oct_feature_extractor

ROOT = Path(__file__).resolve().parents[1]


def test_volume_slices_labels_plane_and_position():
    v = torch.arange(8 * 4 * 6, dtype=torch.float32).reshape(8, 4, 6)
    s, lab = volume_slices(v, 3, np.random.default_rng(0))
    assert s.shape == (6, 1, 4, 6)
    assert lab[:3, 0].eq(0).all() and lab[3:, 0].eq(1).all()
    assert (0 <= lab[:, 1]).all() and (lab[:, 1] <= 1).all()
    i = int(round(float(lab[0, 1]) * 7))
    assert torch.equal(s[0, 0], v[i]), "intra slices are B-scans at the labelled position"
    assert lab.shape == (6, NUM_BINARY) and lab[:, 2:].eq(-1).all(), "no layer map: profile unknown"


def test_layer_profile_targets_follow_the_layer_map():
    d, h, w = 8, 11, 16
    depth = torch.arange(h)[None, :, None].expand(d, h, w)
    ilm = 2 + (torch.arange(w) >= 8).long() * 2  # ILM at row 2 (left half) and 4 (right half)
    layers = torch.where(depth >= ilm[None, None, :], 1, 0) + (depth >= 6).long() * 5 + (depth >= 9).long() * 5
    s, lab = volume_slices(torch.zeros(d, h, w), 2, np.random.default_rng(0), layers)
    ilm_prof, onl_prof, bm_prof = lab[0, 2:].reshape(3, PROFILE_BINS)
    assert torch.allclose(ilm_prof, torch.tensor([0.2] * 4 + [0.4] * 4))  # rows 2 and 4 of 0..10
    assert (torch.allclose(onl_prof, torch.full((PROFILE_BINS,), 0.6))
            and torch.allclose(bm_prof, torch.full((PROFILE_BINS,), 0.9)))
    # inter-slice planes are (D, H): depth runs along the second axis; their ILM is constant along D
    assert torch.allclose(lab[2, 2:2 + PROFILE_BINS], lab[2, 2].expand(PROFILE_BINS))
    assert torch.allclose(layer_profile(layers[:, :, 0], 1)[:PROFILE_BINS], torch.full((PROFILE_BINS,), 0.2))


def test_unknown_binary_targets_are_ignored_by_the_loss():
    logits = torch.tensor([[2.0, -1.0, 0.3, -0.7]])
    full = ClassAndBinaryLoss(2)(logits, torch.tensor([[0.0, 1.0, 0.0]]))
    masked = ClassAndBinaryLoss(2)(logits, torch.tensor([[0.0, 1.0, -1.0]]))
    ce = torch.nn.functional.cross_entropy(logits[:, :2], torch.tensor([0]))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 2:3], torch.tensor([[1.0]]))
    assert masked.item() == pytest.approx((ce + bce).item(), rel=1e-6) and full.item() > masked.item() - 1


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("oct")
    prepare_phantoms(root / "data" / "phantoms", num=4, size="16,32,32", seed=0, test_fraction=0.5)
    return root


def test_oct_feature_config_trains_and_evaluation_runs(phantoms):
    cfg = [str(ROOT / "configs" / f) for f in ("inference.json", "train.json", "stages/oct_features.json")]
    wf = ConfigWorkflow(config_file=cfg, workflow_type=None, bundle_root=str(phantoms), image_size=[16, 32, 32],
                        max_epochs=1, batch_size=4, slices_per_volume=4, device="$torch.device('cpu')",
                        **{"oct_feature_net_def#channels": [8, 16]})
    wf.initialize()
    wf.run()
    weights = phantoms / "models" / "evaluation" / "oct_features.pt"
    assert weights.is_file() and not (phantoms / "models" / "model.pt").exists()
    assert list((phantoms / "runs" / "oct_features").glob("oct_features_checkpoint_epoch=1.pt"))
    assert 0 <= wf.parser.get_parsed_content("validate#evaluator").state.metrics["val_category_accuracy"] <= 1
    exported = torch.load(weights, weights_only=True)
    trained = wf.parser.get_parsed_content("network").state_dict()
    assert all(torch.equal(trained[k], v)
               for k, v in exported.items()), "the trained network (batch norm recalibrated) is exported"
    with pytest.raises(ValueError, match="does not match"):
        oct_feature_extractor("domain", str(weights))  # default widths differ from the tiny test net
    net = DomainFeatureNet(1, (8, 16), 4, NUM_BINARY)
    real = [load_volume(f) for f in list_volumes(phantoms / "data" / "phantoms" / "datalist.json", "training")]
    assert real[0].shape == (16, 32, 32) and -1 <= float(real[0].min()) and float(real[0].max()) <= 1
    smooth = [torch.nn.functional.avg_pool3d(v[None], 3, 1, 1)[0] for v in real]
    same = evaluate_oct(real, real, net, per_volume=8)
    blurred = evaluate_oct(real, smooth, net, per_volume=8)
    assert same["intra_fd"] < blurred["intra_fd"] and same["inter_fd"] < blurred["inter_fd"]
    assert blurred["tv_total_fake"][0] < blurred["tv_total_real"][0], "blur lowers total variation"
    assert same["jitter_real"] == pytest.approx(same["jitter_fake"])


def test_evaluation_inputs_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="no NIfTI"):
        list_volumes(tmp_path)
    with pytest.raises(ValueError, match="features must be"):
        oct_feature_extractor("vgg", "x.pt")
    with pytest.raises(ValueError, match="inception_weights"):
        oct_feature_extractor("inception", "x.pt")


def test_evaluate_config_writes_json_and_table_with_the_shipped_features(phantoms, tmp_path):
    import json
    import shutil

    fake = tmp_path / "fake"
    fake.mkdir()
    for f in list_volumes(phantoms / "data" / "phantoms" / "datalist.json", "training"):
        shutil.copy(f, fake / Path(f).name)
    wf = ConfigWorkflow(config_file=str(ROOT / "configs" / "evaluate.json"), workflow_type=None,
                        real=str(phantoms / "data" / "phantoms" / "datalist.json"), fake=str(fake), per_volume=8,
                        feature_weights=str(ROOT / "models" / "evaluation" / "oct_features.pt"))
    wf.initialize()
    wf.run()
    res = json.loads((fake / "evaluation.json").read_text())
    dl = phantoms / "data" / "phantoms" / "datalist.json"
    assert len(res) == 1 and res[0]["n_fake"] == len(list_volumes(dl, "training")) and res[0]["features"] == "domain"
    assert res[0]["n_real"] == len(list_volumes(dl, "test"))
    assert (res[0]["intra_fd"] >= 0 and res[0]["inter_swd"] >= 0
            and res[0]["feature_weights"].endswith("oct_features.pt"))
    table = (fake / "evaluation.md").read_text()
    assert "Intra-FD" in table and str(fake) in table


def test_the_default_oct_features_are_the_shipped_file(phantoms):
    """scripts/evaluate.py oct without --feature_weights uses models/evaluation/oct_features.pt (0.6.0 moved it)."""
    from bundle.evaluation import OCT_FEATURES, evaluate_oct_sets

    assert Path(OCT_FEATURES) == ROOT / "models" / "evaluation" / "oct_features.pt" and Path(OCT_FEATURES).is_file()
    dl = phantoms / "data" / "phantoms" / "datalist.json"
    res = evaluate_oct_sets(dl, [dl], "test", "training", per_volume=4, max_volumes=2)
    assert res[0]["feature_weights"] == OCT_FEATURES and res[0]["intra_fd"] >= 0
