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


OVERLAYS = {  # stage config -> the configs it overlays, in order
    "train_autoencoder2d.json": ["common.json", "train_nhae_base.json"],
    "train_nhae.json": ["common.json", "train_nhae_base.json"],
    "train_decoder_adaptors.json": ["common.json", "train_nhae_base.json"],
    "train_nhae_base.json": ["common.json"],
}


def test_every_config_parses_and_builds_its_trainer():
    from monai.bundle import ConfigParser

    for cfg in sorted((ROOT / "configs").glob("*.json")):
        p = ConfigParser()
        p.read_config([str(ROOT / "configs" / f) for f in OVERLAYS.get(cfg.name, [])] + [str(cfg)])
        assert p.config, cfg.name
        if cfg.name.startswith("train_") and cfg.name != "train_nhae_base.json":
            p["bundle_root"] = str(ROOT)
            assert p.get_parsed_content("nhae_def") is not None
            assert p.get_parsed_content("iteration").stage == p["stage"]


def test_readme_has_the_two_commands():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)
    assert any("pip install -r requirements.txt" in b for b in blocks)
    assert any("pytest" in b for b in blocks)
    assert "docs/README.md" in text and "docs/data_license.txt" in text
