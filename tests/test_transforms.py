from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from bundle.data.prepare import prepare_phantoms
from bundle.transforms import CheckVolumed

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    out = tmp_path_factory.mktemp("ph")
    dl = prepare_phantoms(out, num=1, size="16,32,24", seed=2, test_fraction=0.0)
    e = dl["training"][0]
    return {k: str(out / v) for k, v in e.items() if k in ("image", "label")}


def _parser(**overrides) -> ConfigParser:
    p = ConfigParser()
    p.read_config(str(ROOT / "configs" / "train.json"))  # the OCT data pipeline of every training stage
    for k, v in overrides.items():
        p[k] = v
    return p


def test_volume_chain_shape_range_and_axis_order(case):
    p = _parser(image_size=[16, 32, 24])
    x = p.get_parsed_content("val_volume_transforms")({"image": case["image"]})["image"]
    assert tuple(x.shape) == (1, 16, 32, 24) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.9
    raw = np.asarray(nib.load(case["image"]).dataobj).astype(np.float32)
    np.testing.assert_allclose(x[0].numpy(), raw / 255 * 2 - 1, atol=1e-5)  # no axis permutation
    layers = np.asarray(nib.load(case["label"]).dataobj)
    assert (np.diff(layers.astype(int), axis=1) >= 0).all(), "axis 1 of the stored volume is depth"


def test_resize_to_configured_size(case):
    x = _parser(image_size=[8, 16, 16]).get_parsed_content("val_volume_transforms")({"image": case["image"]})["image"]
    assert tuple(x.shape) == (1, 8, 16, 16)


def test_flips_only_along_slice_and_lateral_axes(case):
    p = _parser(image_size=[16, 32, 24])
    p["flip_transforms#0#prob"] = 1.0
    p["flip_transforms#1#prob"] = 1.0
    axes = [t["spatial_axis"] for t in p["flip_transforms"]]
    assert axes == [0, 2]
    base = p.get_parsed_content("val_volume_transforms")({"image": case["image"]})["image"]
    flipped = p.get_parsed_content("train_volume_transforms")({"image": case["image"]})["image"]
    np.testing.assert_allclose(flipped.numpy(), base.numpy()[:, ::-1, :, ::-1])


def test_crops_of_consecutive_bscans(case):
    p = _parser(image_size=[16, 32, 24], slices_per_crop=5)
    p["flip_transforms#0#prob"] = 0.0
    p["flip_transforms#1#prob"] = 0.0
    base = p.get_parsed_content("val_volume_transforms")({"image": case["image"]})["image"].numpy()
    crop = p.get_parsed_content("train_slice_transforms")({"image": case["image"]})["image"].numpy()
    assert crop.shape == (1, 5, 32, 24)
    starts = [d for d in range(16 - 4) if np.allclose(base[:, d : d + 5], crop)]
    assert len(starts) == 1, "a crop is 5 consecutive B-scans of the volume"
    bscan = p.get_parsed_content("train_bscan_transforms")({"image": case["image"]})["image"].numpy()
    assert bscan.shape == (1, 32, 24)
    assert any(np.allclose(base[:, d], bscan) for d in range(16))


def test_check_volume_names_the_file():
    t = CheckVolumed("image", channels=1, multiple_of=8)
    ok = {"image": torch.zeros(1, 8, 16, 8)}
    assert t(ok)["image"] is ok["image"]
    with pytest.raises(ValueError, match="channel-first 3D"):
        t({"image": torch.zeros(1, 8, 8)})
    with pytest.raises(ValueError, match="got 2"):
        t({"image": torch.zeros(2, 8, 8, 8)})
    with pytest.raises(ValueError, match="multiple of 8"):
        t({"image": torch.zeros(1, 8, 12, 8)})
    from monai.data import MetaTensor
    bad = MetaTensor(torch.full((1, 8, 8, 8), float("nan")), meta={"filename_or_obj": "/data/scan_7.nii.gz"})
    with pytest.raises(ValueError, match="scan_7.nii.gz.*NaN"):
        t({"image": bad})


def test_chain_rejects_a_2d_file(tmp_path):
    f = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 24), np.uint8), np.eye(4)), f)
    with pytest.raises(RuntimeError) as info:  # MONAI's Compose wraps the error; ours is the cause
        _parser().get_parsed_content("val_volume_transforms")({"image": str(f)})
    causes, e = [], info.value
    while e is not None:
        causes.append(str(e))
        e = e.__cause__
    assert any("flat.nii.gz" in c and "channel-first 3D" in c for c in causes), causes
