import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line.strip())
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_metadata_follows_bundle_schema_and_pins():
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    assert meta["schema"].endswith("/meta_schema_20240725.json") and meta["schema"].startswith("https://github.com/Project-MONAI/")
    assert meta["version"] in meta["changelog"]
    pins = _pins()
    assert meta["monai_version"] == pins["monai"]
    assert meta["pytorch_version"] == pins["torch"]
    assert meta["numpy_version"] == pins["numpy"]
    for pkg, ver in meta["required_packages_version"].items():
        assert pins[pkg.lower()] == ver, pkg
    for key in ("name", "task", "description", "authors", "copyright", "intended_use", "references", "network_data_format"):
        assert meta[key], key
    assert len(meta["references"]) >= 3
    out = meta["network_data_format"]["outputs"]["pred"]
    assert out["modality"] == "OCT" and out["spatial_shape"] == ["D", "H", "W"] and out["value_range"] == [-1, 1]


NHAE = ["inference.json", "common.json", "train_nhae_base.json"]
DIFF = ["inference.json", "common.json", "train_diffusion_base.json"]
OVERLAYS = {  # config -> the configs it overlays, in order
    "train_autoencoder2d.json": NHAE,
    "train_nhae.json": NHAE,
    "train_decoder_adaptors.json": NHAE,
    "train_nhae_base.json": NHAE[:2],
    "train_diffusion3d.json": DIFF,
    "train_refiner.json": DIFF,
    "train_diffusion_base.json": DIFF[:2],
    "prepare_latents.json": ["inference.json", "common.json"],
    "fit_speckle.json": ["inference.json", "common.json"],
    "inference_paper512.json": ["inference.json"],
    "train_dcgan.json": ["inference_dcgan.json", "fundus_common.json"],
    "train_vae.json": ["inference_vae.json", "fundus_common.json"],
    "train_fundus_features.json": ["fundus_common.json"],
    "train_oct_features.json": ["common.json"],
    "inference_ablations.json": ["inference.json"],
    "baselines/train_autoencoderkl3d.json": NHAE,
    "baselines/inference_ldm3d.json": ["inference.json"],
    "baselines/inference_medical_diffusion.json": ["inference.json"],
    "baselines/train_ldm3d.json": ["inference.json", "common.json", "baselines/inference_ldm3d.json", "train_diffusion_base.json"],
    "baselines/train_medical_diffusion.json": ["inference.json", "common.json", "baselines/inference_medical_diffusion.json",
                                               "train_diffusion_base.json"],
}


def test_every_config_parses_and_builds_its_trainer(monkeypatch):
    from monai.bundle import ConfigParser

    monkeypatch.chdir(ROOT)  # configs are run from the bundle root (the baselines reference one another by path)
    configs = sorted((ROOT / "configs").glob("*.json")) + sorted((ROOT / "configs" / "baselines").glob("*.json"))
    assert set(OVERLAYS) - {str(c.relative_to(ROOT / "configs")) for c in configs} == set(), "stale OVERLAYS entries"
    for cfg in configs:
        name = str(cfg.relative_to(ROOT / "configs"))
        p = ConfigParser()
        p.read_config([str(ROOT / "configs" / f) for f in OVERLAYS.get(name, [])] + [str(cfg)])
        assert p.config, name
        p["bundle_root"] = str(ROOT)
        if name.startswith("baselines/") and "baseline_diffusion_def" in p:
            assert p.get_parsed_content("inferer").output_size == (128, 128, 128), name
            assert p.get_parsed_content("baseline_diffusion_def").unet is not None
        if cfg.name in ("train_autoencoder2d.json", "train_nhae.json", "train_decoder_adaptors.json"):
            assert p.get_parsed_content("iteration").stage == p["stage"]
        if cfg.name in ("train_diffusion3d.json", "train_refiner.json", "inference.json", "inference_paper512.json"):
            assert p.get_parsed_content("network_def" if "network_def" in p else "refiner_def") is not None
            assert p.get_parsed_content("scheduler").num_train_timesteps == 1000
        if cfg.name in ("inference_dcgan.json", "train_dcgan.json"):
            assert p.get_parsed_content("dcgan_generator_def").image_size == p["fundus_size"] == 128
            assert p.get_parsed_content("dcgan_discriminator_def").image_size == 128
        if cfg.name in ("inference_vae.json", "train_vae.json"):
            assert p.get_parsed_content("vae_def").latent_size == 512


def test_readme_has_the_two_commands():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)
    assert any("pip install -r requirements.txt" in b for b in blocks)
    assert any("pytest" in b for b in blocks)
    assert "docs/README.md" in text and "docs/data_license.txt" in text
