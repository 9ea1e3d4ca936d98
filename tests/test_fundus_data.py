import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import messages

from bundle.data import load_checked_datalist
from bundle.data.prepare_fundus import FUNDUS_MASKS, fundus_square, prepare_aptos, prepare_fundus


def test_prepare_fundus_writes_everything_deterministically_and_resumes(tmp_path):
    dl = prepare_fundus(tmp_path / "a", num=5, size=64, seed=3, test_fraction=0.4)
    assert len(dl["training"]) + len(dl["test"]) == 5 and dl["test"]
    e = dl["training"][0]
    assert set(FUNDUS_MASKS) <= set(e) and e["grade"] == e["label"][0] and len(e["label"]) == 7
    img = np.asarray(Image.open(tmp_path / "a" / e["image"]))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    ves = np.asarray(Image.open(tmp_path / "a" / e["vessels"]))
    assert set(np.unique(ves)) <= {0, 1, 2}
    params = json.loads((tmp_path / "a" / e["params"]).read_text())
    assert params["grade"] == e["grade"]
    # same arguments -> byte-identical files; a rerun skips finished cases and redoes damaged ones
    prepare_fundus(tmp_path / "b", num=5, size=64, seed=3, test_fraction=0.4)
    assert (tmp_path / "a" / e["image"]).read_bytes() == (tmp_path / "b" / e["image"]).read_bytes()
    (tmp_path / "a" / e["he"]).unlink()
    stamp = (tmp_path / "a" / dl["test"][0]["image"]).stat().st_mtime_ns
    prepare_fundus(tmp_path / "a", num=5, size=64, seed=3, test_fraction=0.4)
    assert (tmp_path / "a" / e["he"]).is_file()
    assert (tmp_path / "a" / dl["test"][0]["image"]).stat().st_mtime_ns == stamp
    assert not list((tmp_path / "a").rglob("*.tmp*"))


@pytest.mark.parametrize("kwargs,match", [
    ({"num": 0}, "num"), ({"size": 40}, "multiple of 16"), ({"size": "big"}, "integer"),
    ({"test_fraction": 1.5}, "test_fraction"),
])
def test_prepare_fundus_bad_arguments_write_nothing(tmp_path, kwargs, match):
    args = {"num": 2, "size": 64, "seed": 0, "test_fraction": 0.5} | kwargs
    with pytest.raises(ValueError, match=match):
        prepare_fundus(tmp_path / "x", **args)
    assert not (tmp_path / "x").exists()


def _aptos(tmp_path, rows, images):
    src = tmp_path / "train_images"
    src.mkdir()
    for name, arr in images.items():
        Image.fromarray(arr).save(src / f"{name}.png")
    csv = tmp_path / "train.csv"
    csv.write_text("id_code,diagnosis\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return src, csv


def test_prepare_aptos_crops_pads_resizes_and_splits_by_grade(tmp_path):
    wide = np.zeros((60, 100, 3), np.uint8)
    wide[5:55, 20:80] = (200, 90, 40)  # a 50 x 60 field of view on a black, wider-than-tall frame
    imgs = {f"id{i}": wide for i in range(4)}
    imgs["gray"] = np.full((40, 40), 120, np.uint8)
    rows = [(f"id{i}", i % 2) for i in range(4)] + [("gray", 2)]
    src, csv = _aptos(tmp_path, rows, imgs)
    dl = prepare_aptos(src, csv, tmp_path / "out", size=32, test_fraction=0.5)
    entries = dl["training"] + dl["test"]
    assert sorted(e["grade"] for e in entries) == [0, 0, 1, 1, 2]
    assert {str(e["grade"]) for e in dl["test"]} >= {"0", "1"}
    out = np.asarray(Image.open(tmp_path / "out" / "images" / "id0.png"))
    assert out.shape == (32, 32, 3)
    assert out[16, 16, 0] > 150 and out[0, 16].max() < 30, "field of view centred, padded with black above"
    gray = np.asarray(Image.open(tmp_path / "out" / "images" / "gray.png"))
    assert gray.shape == (32, 32, 3) and np.ptp(gray[16, 16]) == 0, "grayscale replicated to RGB"


def test_prepare_aptos_errors_name_the_problem(tmp_path):
    img = np.full((20, 20, 3), 100, np.uint8)
    src, csv = _aptos(tmp_path, [("a", 0), ("missing", 1)], {"a": img})
    with pytest.raises(ValueError, match="missing.png does not exist"):
        prepare_aptos(src, csv, tmp_path / "out", size=32)
    csv.write_text("id_code,diagnosis\na,7\n")
    with pytest.raises(ValueError, match="line 2.*not a grade"):
        prepare_aptos(src, csv, tmp_path / "out", size=32)
    csv.write_text("id,grade\na,1\n")
    with pytest.raises(ValueError, match="id_code"):
        prepare_aptos(src, csv, tmp_path / "out", size=32)
    csv.write_text("id_code,diagnosis\na,1\n")
    (src / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image.*a.png"):
        prepare_aptos(src, csv, tmp_path / "out", size=32)
    assert not (tmp_path / "out").exists()


def test_fundus_square_pads_to_centre():
    img = np.zeros((10, 30, 3), np.uint8)
    img[2:8, 5:25] = 200
    sq = fundus_square(img)
    assert sq.shape == (20, 20, 3) and sq[10, 10, 0] == 200 and sq[0, 10, 0] == 0


def _chain(name="validate#preprocessing", size=16):
    """A fundus chain of configs/fundus_common.json (LoadImaged + PILReader, square check, resize, scale to [-1, 1])."""
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config(str(Path(__file__).resolve().parents[1] / "configs" / "fundus_common.json"))
    p["fundus_size"] = size
    return p.get_parsed_content(name)


def test_loader_converts_grayscale_rgba_and_palette_and_rejects_non_square(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.full((16, 16), 50, np.uint8)).save(tmp_path / "g.png")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    Image.fromarray(rgba).save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=8).save(tmp_path / "p.png")
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(tmp_path / "wide.png")
    load = _chain()

    def u8(x):  # back to 0..255
        return torch.round((x + 1) * 127.5)

    x = load({"image": str(tmp_path / "rgb.png")})["image"]
    assert (x.shape == (3, 16, 16)
            and torch.equal(u8(x), torch.from_numpy(rgb).permute(2, 0, 1).float())), "rows, columns, RGB"
    g = u8(load({"image": str(tmp_path / "g.png")})["image"])
    assert g.shape == (3, 16, 16) and torch.all(g == 50), "grayscale replicated to RGB"
    a = u8(load({"image": str(tmp_path / "a.png")})["image"])
    assert abs(float(a[0, 0, 0]) - 100) <= 1 and float(a[1, 0, 0]) == 0, "RGBA composited on black"
    pal = Image.open(tmp_path / "p.png").convert("RGB")
    assert torch.equal(u8(load({"image": str(tmp_path / "p.png")})["image"]),
                       torch.from_numpy(np.asarray(pal)).permute(2, 0, 1).float()), "palette indices become colours"
    with pytest.raises(RuntimeError) as info:  # MONAI's Compose names the transform, the cause names the file
        load({"image": str(tmp_path / "wide.png")})
    assert re.search("wide.png: image is 20 x 16 pixels; fundus images must be square", messages(info.value))


def test_checked_datalist_names_missing_files(tmp_path):
    dl = prepare_fundus(tmp_path, num=3, size=32, seed=0, test_fraction=0.34)
    items = load_checked_datalist(tmp_path / "datalist.json", "training")
    assert len(items) == len(dl["training"]) and all(str(tmp_path) in i["image"] for i in items)
    (tmp_path / dl["training"][0]["image"]).unlink()
    with pytest.raises(ValueError, match="missing file.*" + dl["training"][0]["image"].split("/")[-1]):
        load_checked_datalist(tmp_path / "datalist.json", "training")
    with pytest.raises(ValueError, match="does not exist"):
        load_checked_datalist(tmp_path / "nope.json")


def test_fundus_chain_resizes_mixed_sizes_to_the_configured_size(tmp_path):
    for side in (48, 96):
        Image.fromarray(np.full((side, side, 3), 255, np.uint8)).save(tmp_path / f"{side}.png")
    tf = _chain(size=32)
    for side in (48, 96):
        x = tf({"image": str(tmp_path / f"{side}.png")})["image"]
        assert tuple(x.shape) == (3, 32, 32) and torch.allclose(x, torch.ones_like(x))
