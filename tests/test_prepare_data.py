import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from bundle.data.octa500 import resize_volume
from bundle.data.prepare import parse_size, prepare_octa500, prepare_phantoms, write_preview

ROOT = Path(__file__).resolve().parents[1]
SIZE = "16,32,16"


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(folder: Path) -> list:
    return [p.name for p in folder.rglob(".*tmp*")] if folder.exists() else []


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("ph")
    dl = prepare_phantoms(out, num=6, size=SIZE, seed=1, test_fraction=0.33)
    return out, dl


def test_phantom_set_files_and_datalist(phantom_set):
    out, dl = phantom_set
    assert len(dl["training"]) + len(dl["test"]) == 6 and len(dl["test"]) >= 1
    assert json.loads((out / "datalist.json").read_text()) == dl
    e = dl["training"][0]
    img = nib.load(out / e["image"])
    assert img.shape == (16, 32, 16) and img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.header.get_zooms(), (6 / 16, 2 / 32, 6 / 16))
    assert nib.load(out / e["label"]).shape == (16, 32, 16)
    assert nib.load(out / e["surfaces"]).shape == (12, 16, 16)
    assert nib.load(out / e["artery"]).shape == (16, 16)
    params = json.loads((out / e["params"]).read_text())
    assert params["category"] == e["category"] and params["size"] == [16, 32, 16]
    assert not _leftovers(out)


def test_same_arguments_give_byte_identical_files(phantom_set, tmp_path):
    out, _ = phantom_set
    prepare_phantoms(tmp_path, num=6, size=SIZE, seed=1, test_fraction=0.33)
    assert _digest(out) == _digest(tmp_path)


def test_rerun_skips_finished_cases_and_redoes_changed_ones(tmp_path):
    prepare_phantoms(tmp_path, num=2, size=SIZE, seed=1)
    img = tmp_path / "images" / "oct_0000.nii.gz"
    before = img.stat().st_mtime_ns
    os.remove(tmp_path / "labels" / "oct_0001_vein.nii.gz")  # an incomplete case is redone
    prepare_phantoms(tmp_path, num=2, size=SIZE, seed=1)
    assert img.stat().st_mtime_ns == before
    assert (tmp_path / "labels" / "oct_0001_vein.nii.gz").is_file()
    prepare_phantoms(tmp_path, num=2, size="16,32,24", seed=1)  # other size: regenerated, not reused
    assert nib.load(img).shape == (16, 32, 24)


@pytest.mark.parametrize("size", ["60,64,64", "0,8,8", "8,8", "a,b,c", (8, 8, -8)])
def test_bad_size_is_rejected_before_writing(tmp_path, size):
    out = tmp_path / "o"
    with pytest.raises(ValueError, match="size"):
        prepare_phantoms(out, num=1, size=size)
    assert not out.exists()


def test_bad_num_and_fraction(tmp_path):
    with pytest.raises(ValueError, match="num"):
        prepare_phantoms(tmp_path / "o", num=0, size=SIZE)
    with pytest.raises(ValueError, match="test_fraction"):
        prepare_phantoms(tmp_path / "o", num=1, size=SIZE, test_fraction=1.5)
    assert not (tmp_path / "o").exists()


def test_parse_size_forms():
    assert parse_size("8,16,24") == (8, 16, 24) == parse_size((8, 16, 24))
    assert parse_size(16) == (16, 16, 16)


# ---- OCTA-500 ----------------------------------------------------------------------------------

def _make_octa(src: Path, n_vol=6, d=8, h=40, w=24, seed=0):
    rng = np.random.default_rng(seed)
    for v in range(n_vol):
        folder = src / str(10001 + v)
        folder.mkdir(parents=True)
        for i in range(d):
            arr = rng.integers(0, 256, (h, w), dtype=np.uint8)
            arr[: h // 2] = 10 * v  # a per-volume constant top half to check ordering
            Image.fromarray(arr).save(folder / f"{i + 1}.bmp")
    return src


def test_octa500_conversion_and_stratified_split(tmp_path):
    src = _make_octa(tmp_path / "src")
    csv = tmp_path / "cat.csv"
    csv.write_text("ID,Disease\n" + "".join(f"{10001 + v},{'NORMAL' if v < 3 else 'AMD'}\n" for v in range(6)))
    dl = prepare_octa500(src, tmp_path / "out", size="8,16,8", categories=str(csv))
    assert dl["stratified"] is True
    test_cats = sorted(e["category"] for e in dl["test"])
    assert test_cats == ["AMD", "NORMAL"]
    e = dl["training"][0]
    img = nib.load(tmp_path / "out" / e["image"])
    assert img.shape == (8, 16, 8) and img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.header.get_zooms(), (6 / 8, 2 / 16, 6 / 8))
    vol = np.asarray(img.dataobj)
    vid = int(Path(e["image"]).name.split(".")[0]) - 10001
    assert (vol[:, :7] == 10 * vid).all(), "depth axis kept, top half is the volume's constant"


def test_octa500_natural_bscan_order(tmp_path):
    folder = tmp_path / "src" / "vol"
    folder.mkdir(parents=True)
    for i in range(1, 12):
        Image.fromarray(np.full((8, 8), i, np.uint8)).save(folder / f"{i}.bmp")
    from bundle.data.octa500 import read_volume_folder
    assert read_volume_folder(folder)[:, 0, 0].tolist() == list(range(1, 12))


def test_octa500_empty_folder(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(ValueError, match="no volume folders"):
        prepare_octa500(tmp_path / "src", tmp_path / "out", size="8,16,8")
    assert not (tmp_path / "out").exists()


def test_octa500_corrupt_bmp_named(tmp_path):
    src = _make_octa(tmp_path / "src", n_vol=2)
    bad = src / "10002" / "3.bmp"
    bad.write_bytes(b"BM this is not an image")
    with pytest.raises(ValueError, match="3.bmp"):
        prepare_octa500(src, tmp_path / "out", size="8,16,8")
    assert not (tmp_path / "out").exists()


def test_octa500_mixed_bscan_sizes_named(tmp_path):
    src = _make_octa(tmp_path / "src", n_vol=2)
    Image.fromarray(np.zeros((40, 20), np.uint8)).save(src / "10001" / "5.bmp")
    with pytest.raises(ValueError, match=r"5\.bmp.*40x20"):
        prepare_octa500(src, tmp_path / "out", size="8,16,8")
    assert not (tmp_path / "out").exists()


def test_octa500_bad_size_and_missing_category(tmp_path):
    src = _make_octa(tmp_path / "src", n_vol=2)
    with pytest.raises(ValueError, match="multiple of 8"):
        prepare_octa500(src, tmp_path / "out", size="8,12,8")
    csv = tmp_path / "cat.csv"
    csv.write_text("ID,Disease\n10001,NORMAL\n")
    with pytest.raises(ValueError, match="10002"):
        prepare_octa500(src, tmp_path / "out", size="8,16,8", categories=str(csv))
    assert not (tmp_path / "out").exists()


def test_resize_is_antialiased_area_average():
    vol = np.arange(8, dtype=np.float32).reshape(8, 1, 1) * np.ones((1, 4, 4), np.float32)
    small = resize_volume(vol, (4, 4, 4))
    np.testing.assert_allclose(small[:, 0, 0], [0.5, 2.5, 4.5, 6.5])
    checker = (np.indices((16, 16, 16)).sum(0) % 2).astype(np.float32)
    np.testing.assert_allclose(resize_volume(checker, (8, 8, 8)), 0.5)  # no aliasing of the finest pattern
    assert resize_volume(vol, (16, 8, 2)).shape == (16, 8, 2)


# ---- preview ----------------------------------------------------------------------------------

def test_preview_png(phantom_set, tmp_path):
    out, dl = phantom_set
    png = write_preview(out / dl["training"][0]["image"], tmp_path / "p.png")
    im = np.asarray(Image.open(png))
    assert im.ndim == 2 and im.shape == (256 + 14, 256 + 128 + 128 + 8)  # en-face 16x16, B-scan and inter-slice 32x16
    assert im.std() > 10


def test_preview_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        write_preview(tmp_path / "missing.nii.gz", tmp_path / "p.png")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match="bad.nii.gz"):
        write_preview(bad, tmp_path / "p.png")
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), flat)
    with pytest.raises(ValueError, match="3D"):
        write_preview(flat, tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists() and not _leftovers(tmp_path)


def test_cli_reports_bad_input_clearly(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_data.py"), "phantoms",
                        "--out", str(tmp_path / "o"), "--num", "1", "--size", "60,64,64"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "error: size (60, 64, 64)" in r.stderr and "Traceback" not in r.stderr


def test_cli_phantoms_and_preview(tmp_path):
    script = str(ROOT / "scripts" / "prepare_data.py")
    r = subprocess.run([sys.executable, script, "phantoms", "--out", str(tmp_path / "o"), "--num", "2",
                        "--size", "16,16,16"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, script, "preview", "--image", str(tmp_path / "o/images/oct_0000.nii.gz"),
                        "--out", str(tmp_path / "p.png")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.png").is_file()


def test_own_volumes_in_nifti_nrrd_and_mha_are_converted_with_their_field_of_view(tmp_path):
    """scripts/prepare_data.py volumes: MONAI LoadImage (nibabel / ITK) reads each format; the FOV and axes are kept."""
    from monai.data import ITKWriter
    from monai.data import load_decathlon_datalist

    from bundle.data.prepare import prepare_volumes, read_volume
    from bundle.io import load_nifti, save_nifti

    src = tmp_path / "src"
    src.mkdir()
    vol = np.zeros((16, 24, 32), np.float32)
    vol[:, 8:12] = 1000.0  # a bright layer at depth 8..11 in every B-scan: a 12-bit scanner's range
    save_nifti(vol.astype(np.int16), src / "a.nii.gz", (0.5, 0.1, 0.25))
    for ext in (".nrrd", ".mha"):
        w = ITKWriter(output_dtype=np.int16)
        w.set_data_array(vol.astype(np.int16), channel_dim=None)
        w.set_metadata({"affine": np.diag([0.5, 0.1, 0.25, 1.0]), "original_affine": np.diag([0.5, 0.1, 0.25, 1.0])},
                       resample=False)
        w.write(str(src / f"b{ext[1:]}{ext}"))
    for f in sorted(src.iterdir()):
        arr, spacing = read_volume(f)
        assert arr.shape == (16, 24, 32) and spacing == pytest.approx((0.5, 0.1, 0.25)), f.name
    arr, spacing = read_volume(src / "a.nii.gz", axes="WHD")
    assert arr.shape == (32, 24, 16) and spacing == pytest.approx((0.25, 0.1, 0.5))
    prepare_volumes(src, tmp_path / "out", size="8,16,16", test_fraction=0.34, seed=0)
    items = load_decathlon_datalist(str(tmp_path / "out" / "datalist.json"), True, "training") + \
        load_decathlon_datalist(str(tmp_path / "out" / "datalist.json"), True, "test")
    assert len(items) == 3
    for it in items:
        out, sp = load_nifti(it["image"])
        assert out.shape == (8, 16, 16) and out.dtype == np.uint8
        assert sp == pytest.approx((16 * 0.5 / 8, 24 * 0.1 / 16, 32 * 0.25 / 16))  # field of view kept
        profile = out.mean(axis=(0, 2))
        assert profile[6:8].min() > 250 and profile[:5].max() < 5  # the layer at depth 8..11 of 24 is at 5.3..8 of 16
    with pytest.raises(ValueError, match="axes must be a permutation"):
        read_volume(src / "a.nii.gz", axes="DHX")
    (src / "broken.nrrd").write_text("not a volume")
    with pytest.raises(ValueError, match="broken.nrrd"):
        prepare_volumes(src, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
