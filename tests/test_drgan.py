"""DR-GAN: networks, training step, training / inference configs, lesion manipulation, bad input, metrics."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.data import load_decathlon_datalist
from PIL import Image

from bundle.data.prepare_fundus import prepare_fundus
from bundle.drgan_evaluation import grading_scores, mask_dice
from bundle.drgan_synthesis import (
    check_grade,
    edit_lesions,
    grade_masks,
    grade_progression,
    parse_counts,
    region_mask,
    resynthesize,
)
from bundle.engines.drgan import LESION_CHANNELS, DRGANIteration, VGG19Features, focal_loss
from bundle.networks.drgan import (
    MASK_CHANNELS,
    DRGANGenerator,
    FundusGrader,
    MultiScaleDiscriminator,
    SpatialChannelAttention,
)
from bundle.transforms.drgan import MaskMapd, check_mask_map, find_mask_maps, read_mask_map
from tiny import messages, perturb

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
TINY = {"drgan_size": SIZE, "device": "$torch.device('cpu')", "drgan_generator_def#channels": [8, 8, 16, 16],
        "drgan_generator_def#local_channels": [4, 8], "drgan_generator_def#num_res_blocks": 1,
        "drgan_generator_def#code_size": 16, "drgan_generator_def#style_size": 16,
        "drgan_discriminator_def#channels": [8, 16, 16], "drgan_discriminator_def#num_scales": 2,
        "drgan_grader_def#channels": [8, 8, 16, 16], "drgan_grader_def#input_size": SIZE, "batch_size": 2,
        "num_val_images": 4, "segmentation_def#channels": [8, 16], "segmentation_def#strides": [2], "crop_size": 32}
STACKS = {
    "drgan_grader": ["inference_drgan.json", "fundus_common.json", "train_drgan_grader.json"],
    "drgan": ["inference_drgan.json", "fundus_common.json", "train_drgan.json"],
    "fundus_segmentation": ["inference_drgan.json", "fundus_common.json", "train_fundus_segmentation.json"],
}


def tiny_generator(**kw):
    args = {"channels": (8, 8, 16, 16), "local_channels": (4, 8), "num_res_blocks": 1, "code_size": 16,
            "style_size": 16}
    args.update(kw)
    return DRGANGenerator(**args)


def tiny_grader(fitted=True):
    g = FundusGrader(channels=(8, 8, 16, 16), input_size=SIZE)
    if fitted:
        torch.manual_seed(0)
        g.fit_grade_gaussians(torch.randn(40, 16) + torch.arange(40)[:, None] % 5, torch.arange(40) % 5)
    return g


def random_masks(n=2, size=SIZE, seed=0):
    gen = torch.Generator().manual_seed(seed)
    m = (torch.rand(n, len(MASK_CHANNELS), size, size, generator=gen) > 0.9).float()
    m[:, MASK_CHANNELS.index("fov")] = 1
    return m


def _wf(root, stack, workflow_type="train", **over):
    cfg = [str(ROOT / "configs" / f) for f in STACKS[stack]] if stack in STACKS else [str(ROOT / "configs" / stack)]
    wf = ConfigWorkflow(config_file=cfg, workflow_type=workflow_type, meta_file=str(ROOT / "configs" / "metadata.json"),
                        logging_file=str(ROOT / "configs" / "logging.conf"))
    known = set()
    for c in cfg:
        known |= set(json.loads(Path(c).read_text()))
    for k, v in {**TINY, "bundle_root": str(root), **over}.items():
        if k.split("#")[0] in known:
            wf.parser[k] = v
    wf.initialize()
    return wf


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A bundle_root with 12 fundus phantoms at 64 px in data/fundus256 and trained tiny grader / DR-GAN weights."""
    root = tmp_path_factory.mktemp("drgan")
    prepare_fundus(root / "data" / "fundus256", num=12, size=SIZE, seed=0, test_fraction=0.3)
    for stack, over in (("drgan_grader", {"max_epochs": 1}),
                        ("drgan", {"max_epochs": 2, "global_epochs": 1, "epoch_length": 2})):
        wf = _wf(root, stack, **over)
        wf.run()
        wf.finalize()
    return root


# --- networks ------------------------------------------------------------------------------------

def test_generator_stages_shapes_and_no_transposed_convolutions():
    torch.manual_seed(0)
    g = tiny_generator()
    m, code = random_masks(), torch.randn(2, 16)
    x, grade = g(m, code, return_grade=True)
    assert x.shape == (2, 3, SIZE, SIZE) and grade.shape == (2, 5) and x.abs().max() <= 1
    assert g.set_stage("global")(m, code).shape == (2, 3, SIZE // 2, SIZE // 2)
    assert not any(isinstance(mod, torch.nn.ConvTranspose2d) for mod in g.modules()), "resize + conv, no checkerboard"
    assert g.stride == 16 and g.noise_shapes(SIZE) == [(4, 4, 4), (4, 8, 8), (2, 16, 16)]


def test_generator_rejects_bad_masks_and_codes():
    g = tiny_generator()
    with pytest.raises(ValueError, match="mask map must be"):
        g(torch.zeros(1, 8, SIZE, SIZE), torch.zeros(1, 16))
    with pytest.raises(ValueError, match="multiple of the generator's stride 16"):
        g(torch.zeros(1, 9, 72, 72), torch.zeros(1, 16))
    with pytest.raises(ValueError, match="grading code"):
        g(random_masks(1), torch.zeros(1, 15))


def test_noise_and_code_drive_the_output_deterministically():
    torch.manual_seed(0)
    g, gr = perturb(tiny_generator()).eval(), tiny_grader()  # AdaIN starts as plain IN: perturb it
    m = random_masks(1)
    a = resynthesize(g, gr, m, [2], 5)
    assert torch.equal(a, resynthesize(g, gr, m, [2], 5)), "same seed, same image"
    assert not torch.allclose(a, resynthesize(g, gr, m, [2], 6)), "another seed, other noise and code"
    assert not torch.allclose(a, resynthesize(g, gr, m, [4], 5)), "another grade, another code"


def test_attention_pools_keys_only_above_max_tokens():
    torch.manual_seed(0)
    att = SpatialChannelAttention(8, max_tokens=64)
    assert att.pool_factor(8, 8) == 1 and att.pool_factor(16, 16) == 2 and att.pool_factor(32, 32) == 4
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        att.gamma_p.fill_(1.0)
        pooled = att(x)
        att.max_tokens = 256  # exact HW x HW attention
        exact = att(x)
    assert pooled.shape == exact.shape == x.shape and not torch.allclose(pooled, exact)
    fresh = SpatialChannelAttention(8)
    with torch.no_grad():  # gammas start at 0: the block is the two convs of its input
        assert torch.allclose(fresh(x), fresh.conv_p(x) + fresh.conv_c(x))


def test_discriminator_scales_and_grade_head():
    d = MultiScaleDiscriminator(channels=(8, 16, 16), num_scales=3)
    out = d(random_masks(2), torch.zeros(2, 3, SIZE, SIZE))
    assert len(out) == 3 and [o[1].shape[-1] for o in out] == [8, 4, 2]
    assert all(o[2].shape == (2, 5) and len(o[0]) == 3 for o in out)


def test_grader_gaussians_sample_codes_per_grade():
    gr = FundusGrader(channels=(8, 8, 16, 16), input_size=SIZE)
    with pytest.raises(RuntimeError, match="not fitted"):
        gr.sample_code(torch.tensor([0]))
    feats = torch.randn(500, 16) * 0.1 + torch.arange(500)[:, None] % 5
    gr.fit_grade_gaussians(feats, torch.arange(500) % 5)
    codes = gr.sample_code(torch.full((400,), 3), torch.Generator().manual_seed(0))
    assert codes.shape == (400, 16) and abs(float(codes.mean()) - 3.0) < 0.02 and abs(float(codes.std()) - 0.1) < 0.01
    with pytest.raises(ValueError, match="grades must be in 0..4"):
        gr.sample_code(torch.tensor([5]))
    assert gr(torch.zeros(2, 3, 128, 128)).shape == (2, 5), "other sizes are resized to input_size"


@pytest.mark.parametrize("size", [640, 1280])
def test_paper_overlays_build_consistent_networks(size):
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config([str(ROOT / "configs" / f) for f in ("inference_drgan.json", f"drgan_paper{size}.json")])
    g, grader = p.get_parsed_content("drgan_generator_def"), p.get_parsed_content("drgan_grader_def")
    assert p["drgan_size"] == size and size % g.stride == 0 and g.code_size == grader.feature_size == 512


# --- training ------------------------------------------------------------------------------------

def test_focal_loss_is_cross_entropy_at_gamma_zero_and_down_weights_easy_cases():
    logits, target = torch.tensor([[4.0, 0, 0, 0, 0], [0.0, 0, 0, 0, 0]]), torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert torch.isclose(focal_loss(logits, target, 0.0), ce)
    assert focal_loss(logits[:1], target[:1], 2.0) < 0.01 * focal_loss(logits[:1], target[:1], 0.0)


def test_iteration_updates_both_networks_and_blanks_lesions_in_the_ablation():
    torch.manual_seed(0)
    g, d, gr = tiny_generator(), MultiScaleDiscriminator(channels=(8, 16, 16), num_scales=2), tiny_grader()
    d_opt = torch.optim.Adam(d.parameters(), 1e-3)
    engine = SimpleNamespace(network=g, optimizer=torch.optim.Adam(g.parameters(), 1e-3),
                             state=SimpleNamespace(device="cpu"))
    batch = {"image": torch.rand(2, 3, SIZE, SIZE) * 2 - 1, "mask": random_masks(2), "grade": torch.tensor([1, 4])}
    g0 = [p.detach().clone() for p in g.parameters()]
    d0 = [p.detach().clone() for p in d.parameters()]
    out = DRGANIteration(d, d_opt, gr)(engine, batch)
    assert set(out) >= {"g_loss", "d_loss", "g_fm", "g_perceptual", "g_cls", "d_cls", "grade_head", "loss"}
    assert all(np.isfinite(v) for v in out.values()) and out["g_perceptual"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(g0, g.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, d.parameters()))
    ablation = DRGANIteration(d, d_opt, gr, use_lesions=False, code="onehot")
    _, masks, _ = ablation.prepare(batch, "cpu")
    assert masks[:, LESION_CHANNELS].sum() == 0 and torch.equal(masks[:, 0], batch["mask"][:, 0])
    assert torch.equal(ablation.grading_code(torch.tensor([1, 4]), 16)[:, :5],
                       torch.eye(5)[[1, 4]]), "one-hot grade code without AGM"
    with pytest.raises(ValueError, match="code must be"):
        DRGANIteration(d, d_opt, gr, code="other")


def test_vgg19_perceptual_loads_a_torchvision_layout_state_dict(tmp_path):
    vgg = VGG19Features()
    torch.save(vgg.state_dict(), tmp_path / "vgg19.pt")
    loaded = VGG19Features(str(tmp_path / "vgg19.pt"))
    x = torch.zeros(1, 3, 32, 32)
    assert [t.shape[1] for t in loaded.intermediate(x)] == [64, 128, 256, 512, 512]
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a torchvision VGG-19"):
        VGG19Features(str(tmp_path / "bad.pt"))


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_training_stacks_have_the_model_zoo_properties(root, stack):
    wf = _wf(root, stack, max_epochs=1, resume=False)
    assert wf.check_properties() == []
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.max_epochs == 1


def test_training_exports_resumes_and_switches_stage(root):
    runs = root / "runs" / "drgan"
    assert sorted(p.name for p in runs.glob("drgan_checkpoint_epoch=*.pt"))[-1] == "drgan_checkpoint_epoch=2.pt"
    assert (root / "models" / "fundus" / "drgan_generator.pt").is_file()
    assert (runs / "samples_epoch0002.png").is_file() and json.loads((runs / "losses.json").read_text())
    grader = torch.load(root / "models" / "fundus" / "drgan_grader.pt", weights_only=True)
    assert bool(grader["fitted"]) and grader["grade_mean"].shape == (5, 16)
    wf = _wf(root, "drgan", max_epochs=3, global_epochs=1, epoch_length=2)  # resumes at epoch 2
    wf.run()
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 3
    assert wf.parser.get_parsed_content("g_net").stage == "local"


# --- inference -----------------------------------------------------------------------------------

def test_inference_writes_pairs_deterministically_with_the_requested_grade(root, tmp_path):
    wf = _wf(root, "inference_drgan.json", workflow_type="infer", output_dir=str(tmp_path / "a"), grade=4,
             num_samples=3)
    assert wf.check_properties() == []
    wf.run()
    items = load_decathlon_datalist(str(tmp_path / "a" / "datalist.json"), True, "training")
    assert len(items) == 3 and all(it["grade"] == 4 and it["grade_source"] == "requested" for it in items)
    img = np.asarray(Image.open(items[0]["image"]))
    assert img.shape == (SIZE, SIZE, 3) and read_mask_map(items[0]["fov"][: -len("_fov.png")]).shape == (9, SIZE, SIZE)
    assert set(np.unique(np.asarray(Image.open(items[0]["vessels"])))) <= {0, 1, 2}, "artery / vein labels kept"
    wf2 = _wf(root, "inference_drgan.json", workflow_type="infer", output_dir=str(tmp_path / "b"), grade=4,
              num_samples=3, batch_size=1)
    wf2.run()
    for i in range(3):  # batched convolutions may round differently: at most 1 grey level apart
        a, b = (np.asarray(Image.open(tmp_path / d / "images" / f"drgan_{i:04d}.png")).astype(int) for d in "ab")
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01, "independent of the batch size"
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a" / "images").glob("*.png")}
    wf_again = _wf(root, "inference_drgan.json", workflow_type="infer", output_dir=str(tmp_path / "a"), grade=4,
                   num_samples=4)
    assert [r["name"] for r in wf_again.parser.get_parsed_content("requests")] == ["drgan_0003"], "rerun: only new"
    wf_again.run()
    assert all(p.stat().st_mtime_ns == t for p, t in before.items()), "finished pairs are not rewritten"
    assert len(load_decathlon_datalist(str(tmp_path / "a" / "datalist.json"), True, "training")) == 4
    # masks from a folder: the grade head decides; from a datalist: its grades
    wf3 = _wf(root, "inference_drgan.json", workflow_type="infer", output_dir=str(tmp_path / "c"),
              mask_dir=str(tmp_path / "a"))
    wf3.run()
    items3 = load_decathlon_datalist(str(tmp_path / "c" / "datalist.json"), True, "training")
    assert len(items3) == 4 and all(it["grade_source"] == "grade head" for it in items3)
    wf4 = _wf(root, "inference_drgan.json", workflow_type="infer", output_dir=str(tmp_path / "d"),
              mask_dir=str(root / "data" / "fundus256" / "datalist.json"))
    wf4.run()
    test = load_decathlon_datalist(str(root / "data" / "fundus256" / "datalist.json"), True, "test")
    items4 = load_decathlon_datalist(str(tmp_path / "d" / "datalist.json"), True, "training")
    assert [it["grade"] for it in items4] == [it["grade"] for it in sorted(test, key=lambda t: Path(t["fov"]).name)]


def test_inference_rejects_bad_requests(root, tmp_path):
    with pytest.raises(Exception) as e:
        _wf(root, "inference_drgan.json", workflow_type="infer", output_dir=str(tmp_path / "x"), grade=5).run()
    assert "grade must be an integer 0-4 or null, got 5" in messages(e.value)
    bad = tmp_path / "maps"
    bad.mkdir()
    np.save(bad / "eye.npy", np.zeros((8, SIZE, SIZE), np.float32))
    with pytest.raises(Exception) as e:
        _wf(root, "inference_drgan.json", workflow_type="infer", output_dir=str(tmp_path / "y"),
            mask_dir=str(bad)).run()
    assert "eye.npy: a mask map must be (9, S, S)" in messages(e.value)
    assert not (tmp_path / "y" / "images").exists(), "nothing written for a bad mask map"
    for check in (lambda: check_grade(2.5), lambda: check_grade("x"), lambda: check_grade(-1)):
        with pytest.raises(ValueError, match="grade must be"):
            check()


def test_mask_checks_name_the_problem(tmp_path):
    ok = random_masks(1)[0]
    assert check_mask_map(ok, "m").shape == (9, SIZE, SIZE)
    with pytest.raises(ValueError, match="m: channel 'he' is not binary"):
        bad = ok.clone()
        bad[3, 0, 0] = 0.5
        check_mask_map(bad, "m")
    with pytest.raises(ValueError, match="'fov' is empty"):
        empty = ok.clone()
        empty[-1] = 0
        check_mask_map(empty, "m")
    with pytest.raises(ValueError, match="not a multiple of the generator's stride 16"):
        check_mask_map(torch.ones(9, 40, 40), "m", stride=16)
    with pytest.raises(ValueError, match="must be square"):
        check_mask_map(torch.ones(9, 64, 32), "m")
    img = torch.zeros(3, SIZE, SIZE)
    masks = {c: np.zeros((1, 32, 32), np.uint8) for c in MASK_CHANNELS}
    masks["fov"][:] = 1
    with pytest.raises(ValueError, match="image is .* but its masks are"):
        MaskMapd()({"image": img, **masks})
    masks["ma"] = np.full((1, 32, 32), 3, np.uint8)
    with pytest.raises(ValueError, match="mask 'ma' has values"):
        MaskMapd(image_key=None)(masks)
    with pytest.raises(ValueError, match="holds no mask maps"):
        find_mask_maps(tmp_path)


# --- lesion manipulation -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def eye():
    from bundle.transforms.drgan import phantom_masks

    return phantom_masks(128, 11, 2)[0]


def test_edit_lesions_adds_inside_the_region_and_removes(eye):
    he = MASK_CHANNELS.index("he")
    region = region_mask(eye, "superior")
    out = edit_lesions(eye, add={"he": 12}, remove=["ma"], region="superior", seed=1)
    added = (out[he] > 0) & ~(eye[he] > 0)
    assert added.sum() > 0 and not (added & ~region).any(), "new haemorrhages only in the region"
    assert not (out[MASK_CHANNELS.index("ma")] * region).any()
    assert np.array_equal(out[MASK_CHANNELS.index("ma")] * ~region, eye[MASK_CHANNELS.index("ma")] * ~region)
    for c in ("vessels", "disc", "fov", "ex", "se"):
        assert np.array_equal(out[MASK_CHANNELS.index(c)], eye[MASK_CHANNELS.index(c)]), c
    with pytest.raises(ValueError, match="unknown lesion type 'xx'"):
        edit_lesions(eye, add={"xx": 1})
    with pytest.raises(ValueError, match="region must be one of"):
        region_mask(eye, "nasal")
    assert parse_counts("he=10, ex=2") == {"he": 10, " ex": 2} or parse_counts("he=10,ex=2") == {"he": 10, "ex": 2}
    with pytest.raises(ValueError, match="not an integer"):
        parse_counts("he=many")


def test_grade_progression_keeps_the_eye_and_changes_the_lesions(eye):
    torch.manual_seed(0)
    g, gr = tiny_generator().eval(), tiny_grader()
    maps, imgs = grade_progression(g, gr, eye, seed=3)
    assert maps.shape == (5, 9, 128, 128) and imgs.shape == (5, 3, 128, 128)
    lesions = maps[:, LESION_CHANNELS].reshape(5, -1).sum(1)
    assert lesions[0] == 0 and lesions[3] > lesions[1] > 0
    for c in ("vessels", "disc", "fov"):
        k = MASK_CHANNELS.index(c)
        assert all(np.array_equal(m[k], eye[k]) for m in maps), c
    assert maps[4, MASK_CHANNELS.index("nv")].any() or maps[4, MASK_CHANNELS.index("laser")].any()
    assert grade_masks(eye, 0)[LESION_CHANNELS].sum() == 0


# --- metrics -------------------------------------------------------------------------------------

def test_grading_scores_and_mask_dice_values():
    perfect = grading_scores([0, 1, 2, 3, 4], [0, 1, 2, 3, 4])
    assert perfect["accuracy"] == 1.0 and perfect["kappa"] == pytest.approx(1.0) and perfect["tpr"] == [1.0] * 5
    s = grading_scores([0, 0, 1, 1], [0, 1, 1, 1])
    # quadratic weights with 5 classes; expected matrix from the marginals (2, 2) x (1, 3)
    assert s["accuracy"] == 0.75 and s["kappa"] == pytest.approx(0.5) and s["tpr"][:2] == [0.5, 1.0]

    class Echo(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):  # "segments" the first 8 channels of the input as they are
            return x[:, :8] * 2 - 1

    masks = torch.zeros(1, 9, 4, 4)
    masks[0, 0, :2] = 1  # 8 vessel pixels
    pred_in = torch.zeros(1, 9, 4, 4)
    pred_in[0, 0, :1] = 1  # 4 predicted, all inside
    d = mask_dice(Echo(), pred_in, masks)
    assert d["vessels"] == pytest.approx(2 * 4 / 12) and np.isnan(d["ma"])
