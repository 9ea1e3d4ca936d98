"""Label-guided CA-LDM: label encoding, the conditioned UNets, label checks, and the Decathlon pair workflow."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.data import load_decathlon_datalist

from bundle.data.labels import check_label_set, label_channels, label_fractions, slice_label_fractions
from bundle.data.prepare import prepare_phantoms
from bundle.networks import LabelConditionedUNet, init_label_conditioned, save_weights
from tiny import ROOT, TINY, messages, parser, perturb

CONFIGS = ("inference.json", "inference_conditional.json")


def _unet(p, name="diffusion3d_def"):
    torch.manual_seed(0)
    return perturb(p.get_parsed_content(name))


def test_conditioned_unet_starts_as_the_unconditional_one_and_reads_labels(tmp_path):
    p = parser()
    unet = _unet(p)
    cond = LabelConditionedUNet(unet, label_channels(), embed_channels=4)
    x, t = torch.randn(2, 4, 2, 4, 4), torch.tensor([10, 500])
    labels = torch.rand(2, label_channels(), 2, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(cond(torch.cat([x, labels], 1), t), unet(x, t))  # zero-initialised label inputs
        perturb(cond.unet.conv_in)
        a, b = cond(torch.cat([x, labels], 1), t), cond(torch.cat([x, labels.flip(2)], 1), t)
    assert (a - b).abs().mean() > 1e-4, "the labels change the prediction once trained"
    with pytest.raises(ValueError, match="15 label channels"):
        cond(x, t)
    # fine-tuning starts from the unconditional part of model.pt
    save_weights(unet, tmp_path / "u.pt", prefix="diffusion3d")
    fresh = LabelConditionedUNet(p.get_parsed_content("diffusion3d_def"), label_channels(), embed_channels=4)
    init_label_conditioned(fresh, tmp_path / "u.pt", "diffusion3d")
    with torch.no_grad():
        torch.testing.assert_close(fresh(torch.cat([x, labels], 1), t), unet(x, t))


def _labels(d=16, h=32, w=32, seed=0):
    rng = np.random.default_rng(seed)
    surf = np.sort(rng.integers(0, h, size=(12, d, w)), axis=0)
    z = np.arange(h)[None, :, None]
    label = sum((z >= surf[s][:, None, :]).astype(np.uint8) for s in range(12))
    artery = (rng.random((d, w)) < 0.1).astype(np.uint8)
    vein = ((rng.random((d, w)) < 0.1) & (artery == 0)).astype(np.uint8)
    return label, artery, vein


def test_label_fractions_are_cell_fractions():
    label, artery, vein = _labels()
    f3 = label_fractions(label, artery, vein, factor=8)
    f2 = slice_label_fractions(label, artery, vein, factor=8)
    assert f3.shape == (15, 2, 4, 4) and f2.shape == (16, 15, 4, 4)
    torch.testing.assert_close(f3[:13].sum(0), torch.ones(2, 4, 4))
    torch.testing.assert_close(f2[:, :13].sum(1), torch.ones(16, 4, 4))
    # cell (0, 1, 2) of class 5, and the artery fraction of en-face cell (1, 3), by hand
    assert f3[5, 0, 1, 2].item() == pytest.approx((label[:8, 8:16, 16:24] == 5).mean())
    assert f3[13, 1, 0, 3].item() == pytest.approx(artery[8:16, 24:32].mean())
    assert f3[14, 1, 2, 3].item() == pytest.approx(vein[8:16, 24:32].mean())  # repeated along depth
    # the 3D fractions are the slice fractions averaged over each cell's 8 B-scans
    torch.testing.assert_close(f2.reshape(2, 8, 15, 4, 4).mean(1).permute(1, 0, 2, 3), f3)


@pytest.mark.parametrize("change,match", [
    (lambda lab, a, v: (lab[:, :16], a, v), "has size"),
    (lambda lab, a, v: (lab + 0.5, a, v), "non-integer"),
    (lambda lab, a, v: (np.where(lab == 3, 13, lab), a, v), r"values 0\.\.13"),
    (lambda lab, a, v: (lab, a[:, :16], v), "en-face"),
    (lambda lab, a, v: (lab, a, v * 2), "not binary"),
])
def test_bad_label_sets_are_refused_naming_the_file(change, match):
    label, artery, vein = _labels()
    with pytest.raises(ValueError, match=match) as info:
        check_label_set(*change(label.astype(np.float32), artery, vein), (16, 32, 32),
                        {"label": "L.nii.gz", "artery": "A.nii.gz", "vein": "V.nii.gz"})
    assert "L.nii.gz" in str(info.value) or "A.nii.gz" in str(info.value) or "V.nii.gz" in str(info.value)


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    """Tiny random weights of both model files, and a folder of 3 tiny phantom label sets."""
    d = tmp_path_factory.mktemp("cond")
    p = parser(CONFIGS)
    torch.manual_seed(0)
    base = p.get_parsed_content("network_def")
    base.nhae.scale_factor.fill_(1.5)
    base.nhae.slice_scale_factor.fill_(0.7)
    save_weights(base, d / "models" / "model.pt")
    for part in (base.diffusion3d, base.refiner):
        perturb(part.unet)
        perturb(part.encoder, 0.2)
    save_weights(base.diffusion3d, d / "models" / "conditional" / "label_guided.pt", prefix="diffusion3d")
    save_weights(base.refiner, d / "models" / "conditional" / "label_guided.pt", prefix="refiner")
    prepare_phantoms(d / "labels", 3, "16,32,32", seed=0, test_fraction=0.34)
    return d


def _run(cond, out, configs=CONFIGS, **over):
    wf = ConfigWorkflow(config_file=[str(ROOT / "configs" / c) for c in configs], workflow_type="inference",
                        **{**TINY, "models_dir": str(cond / "models"), "dataset_dir": str(cond / "labels"),
                           "output_dir": str(out), **over})
    wf.initialize()
    assert wf.check_properties() == []
    wf.run()
    return wf


def test_pairs_in_decathlon_layout_follow_their_labels(conditional, tmp_path):
    out = tmp_path / "pairs"
    _run(conditional, out)
    items = load_decathlon_datalist(str(out / "dataset.json"), True, "training")
    assert len(items) == 3
    datalist = json.loads((conditional / "labels" / "datalist.json").read_text())
    sources = {f"{e['label'].split('/')[-1].split('_layers')[0]}": e for e in datalist["training"] + datalist["test"]}
    for it in items:
        img, lab = nib.load(it["image"]), nib.load(it["label"])
        assert img.shape == lab.shape == (16, 32, 32) and img.get_data_dtype() == np.uint8
        np.testing.assert_allclose(img.affine, lab.affine)
        src = conditional / "labels" / sources[it["image"].split("/")[-1].split("_seed")[0]]["label"]
        np.testing.assert_array_equal(np.asarray(lab.dataobj), np.asarray(nib.load(src).dataobj))
        np.testing.assert_allclose(lab.affine, nib.load(src).affine)
        assert nib.load(it["artery"]).shape == (16, 32)
    # reruns reproduce a pair; the same seed with another label set gives another volume
    again = tmp_path / "again"
    _run(conditional, again, num_samples=1)
    first = sorted((again / "imagesTr").iterdir())[0]
    np.testing.assert_array_equal(np.asarray(nib.load(first).dataobj),
                                  np.asarray(nib.load(out / "imagesTr" / first.name).dataobj))
    p = parser(CONFIGS, models_dir=str(conditional / "models"))
    inferer, net = p.get_parsed_content("inferer"), p.get_parsed_content("network")
    ref = torch.zeros(1, 1, 16, 32, 32)
    vols = [inferer(ref, net, seeds=[0], labels={k: torch.as_tensor(np.asarray(nib.load(it[k]).dataobj))[None, None]
                                                 for k in ("label", "artery", "vein")}) for it in items[:2]]
    assert (vols[0].float() - vols[1].float()).abs().mean() > 0.1  # uint8 levels
    with pytest.raises(ValueError, match="needs"):
        inferer(ref, net, seeds=[0])


def test_label_first_mode_draws_labels_from_the_phantom(conditional, tmp_path):
    out = tmp_path / "lf"
    _run(conditional, out, ("inference.json", "inference_conditional.json", "inference_label_first.json"),
         num_samples=2, seed=3)
    index = json.loads((out / "dataset.json").read_text())
    assert [e["image"] for e in index["training"]] == ["imagesTr/label_first_seed3.nii.gz",
                                                        "imagesTr/label_first_seed4.nii.gz"]
    from bundle.data.labels import phantom_label_set

    lab = np.asarray(nib.load(out / "labelsTr" / "label_first_seed4.nii.gz").dataobj)
    np.testing.assert_array_equal(lab, phantom_label_set(4, (16, 32, 32))["label"])


def _write(path, array):
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))


@pytest.mark.parametrize("bad,match", [
    ("shape", "has size"), ("values", "values 0..20"), ("vessels", "en-face"), ("missing", "missing label file"),
])
def test_bad_label_input_names_the_file_and_writes_nothing(conditional, tmp_path, bad, match):
    src = tmp_path / "labels"
    src.mkdir()
    label, artery, vein = _labels()
    if bad == "shape":
        label = label[:8]
    if bad == "values":
        label[0, 0, 0] = 20
    if bad == "vessels":
        artery = artery[:, :8]
    _write(src / "x_layers.nii.gz", label)
    _write(src / "x_artery.nii.gz", artery)
    _write(src / "x_vein.nii.gz", vein)
    if bad == "missing":
        (src / "dataset.json").write_text(json.dumps({"training": [
            {"image": "imagesTr/x.nii.gz", "label": "x_layers.nii.gz", "artery": "x_artery.nii.gz",
             "vein": "gone_vein.nii.gz"}]}))
    out = tmp_path / "out"
    with pytest.raises(Exception) as info:
        _run(conditional, out, dataset_dir=str(src))
    text = messages(info.value)
    assert match in text and ("x_" in text or "gone_vein" in text), text
    assert not list((out / "imagesTr").glob("*")) if (out / "imagesTr").exists() else True


def test_label_latents_and_both_conditional_stages_write_the_conditional_file(tmp_path):
    from bundle.data.label_latents import conditional_slice_items, conditional_volume_items, load_latents

    prepare_phantoms(tmp_path / "data" / "phantoms", num=3, size="16,32,32", seed=0, test_fraction=0.34)
    p = parser()
    torch.manual_seed(0)
    net = p.get_parsed_content("network_def")
    net.nhae.scale_factor.fill_(2.0)
    net.nhae.slice_scale_factor.fill_(0.5)
    perturb(net.diffusion3d)
    save_weights(net, tmp_path / "models" / "model.pt")

    def stage(name, **over):
        wf = ConfigWorkflow(config_file=[str(ROOT / "configs" / c) for c in
                                         ("inference.json", "train.json", f"stages/{name}.json")],
                            workflow_type=None, **{**TINY, "bundle_root": str(tmp_path), **over})
        wf.initialize()
        wf.run()

    stage("conditional_latents")
    lat = load_latents(tmp_path / "data" / "latents" / "label_latents.pt")
    assert lat["labels3d"].shape == (8, 15, 2, 4, 4) and lat["labels2d"].shape == (8, 16, 15, 4, 4)
    # flips act on images and labels alike: the D-flipped copy's fractions are the originals flipped
    torch.testing.assert_close(lat["labels3d"][1], lat["labels3d"][0].flip(1))
    torch.testing.assert_close(lat["labels2d"][2], lat["labels2d"][0].flip(-1))
    extra = tmp_path / "data" / "latents" / "label_latents_extra.pt"
    stage("conditional_latents", volume_only=True, label_latents_file=str(extra))
    assert set(load_latents(extra)) == {"z", "labels3d", "scale_factor", "slice_scale_factor"}
    assert len(conditional_volume_items([tmp_path / "data" / "latents" / "label_latents.pt", extra])) == 16
    items = conditional_slice_items(tmp_path / "data" / "latents" / "label_latents.pt")
    assert len(items) == 8 * 16 and items[0]["cond"].shape == (4 + 15, 4, 4)
    with pytest.raises(ValueError, match="volume_only"):
        conditional_slice_items(extra)

    stage("conditional_diffusion3d", max_epochs=1, batch_size=4)
    stage("conditional_refiner", max_epochs=1, batch_size=64)
    out = torch.load(tmp_path / "models" / "conditional" / "label_guided.pt", weights_only=True)
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in out} == {
        "diffusion3d.unet", "diffusion3d.encoder", "refiner.unet", "refiner.encoder"}
    # fine-tuning started from the unconditional Diff_3D (Adam at lr 1e-4 for two steps moves each weight by
    # about 2e-4) and the label inputs of conv_in, zero at the start, are being learned
    start = net.diffusion3d.state_dict()
    for k in ("time_embed.0.weight", "out.2.conv.weight"):
        gap = (out[f"diffusion3d.unet.{k}"] - start[k]).abs().max().item()
        assert 0 < gap < 1e-3, (k, gap)
    w = out["diffusion3d.unet.conv_in.conv.weight"]
    assert w.shape[1] == 4 + 8 and 0 < w[:, 4:].abs().max().item() < 1e-3


def test_vessel_shadow_correlation_sees_shadows_under_the_masks(tmp_path):
    from bundle.evaluation import vessel_visibility
    from bundle.metrics import vessel_shadow_correlation

    rng = np.random.default_rng(0)
    _, artery, vein = _labels(32, 16, 32)
    vol = rng.normal(0.5, 0.05, (32, 16, 32))
    shadowed = vol.copy()
    shadowed[:, 8:, :] *= 1 - 0.5 * (artery + vein)[:, None, :]  # darker below every vessel
    assert vessel_shadow_correlation(shadowed, artery, vein) > 0.8
    assert abs(vessel_shadow_correlation(vol, artery, vein)) < 0.1
    with pytest.raises(ValueError, match="do not match"):
        vessel_shadow_correlation(vol, artery[:, :8], vein[:, :8])
    # over a datalist: own masks high, another item's masks at chance
    items = []
    for i in range(3):
        _, a, v = _labels(32, 16, 32, seed=i)
        x = vol.copy()
        x[:, 8:, :] *= 1 - 0.5 * (a + v)[:, None, :]
        for key, arr in (("image", np.round(x * 255).astype(np.uint8)), ("artery", a), ("vein", v)):
            _write(tmp_path / f"{key}{i}.nii.gz", arr)
        items.append({k: f"{k}{i}.nii.gz" for k in ("image", "artery", "vein")})
    (tmp_path / "dataset.json").write_text(json.dumps({"training": items}))
    res = vessel_visibility(tmp_path / "dataset.json")
    assert res["own_masks"]["mean"] > 0.8 and abs(res["other_masks"]["mean"]) < 0.15


def test_label_requests_from_a_folder_count_seeds_and_skip_finished_pairs(tmp_path):
    from bundle.data.decathlon import find_label_sets, label_requests, pair_files

    src = tmp_path / "labels"
    src.mkdir()
    label, artery, vein = _labels()
    for name in ("b", "a"):
        for key, arr in (("layers", label), ("artery", artery), ("vein", vein)):
            _write(src / f"{name}_{key}.nii.gz", arr)
    sets = find_label_sets(src)
    assert [s["label"].split("/")[-1] for s in sets] == ["a_layers.nii.gz", "b_layers.nii.gz"]
    reqs = label_requests(src, seed=10, samples_per_label=2)
    assert [(r["name"], r["seed"]) for r in reqs] == [("a_seed10", 10), ("a_seed11", 11), ("b_seed12", 12),
                                                      ("b_seed13", 13)]
    assert len(label_requests(src, seed=10, samples_per_label=2, num_samples=3)) == 3
    out = tmp_path / "out"
    (out / "imagesTr").mkdir(parents=True)
    (out / pair_files("a_seed11")["image"]).write_bytes(b"done")
    assert [r["name"] for r in label_requests(src, 10, 2, skip_done=out)] == ["a_seed10", "b_seed12", "b_seed13"]
    (src / "b_vein.nii.gz").unlink()
    with pytest.raises(ValueError, match="b_vein.nii.gz"):
        find_label_sets(src)
    with pytest.raises(ValueError, match="holds no label sets"):
        find_label_sets(tmp_path / "out")
