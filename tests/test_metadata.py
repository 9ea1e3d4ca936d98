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
    for key in ("name", "task", "description", "authors", "copyright", "intended_use", "references",
                "network_data_format"):
        assert meta[key], key
    assert len(meta["references"]) >= 3
    import bundle

    assert bundle.__version__ == meta["version"]
    if "DR-GAN" in meta["name"] + meta["description"]:  # advertised only with its config and weights
        assert (ROOT / "configs" / "inference_drgan.json").is_file()
        assert (ROOT / "models" / "fundus" / "drgan_generator.pt").is_file()
        assert (ROOT / "models" / "fundus" / "drgan_grader.pt").is_file()


def test_network_data_format_is_what_monai_label_reads():
    """MONAI Label takes the first input key as the image key and the first output key as the prediction key."""
    fmt = json.loads((ROOT / "configs" / "metadata.json").read_text())["network_data_format"]
    assert next(iter(fmt["inputs"])) == "image" and next(iter(fmt["outputs"])) == "pred"
    out = fmt["outputs"]["pred"]
    assert out["modality"] == "OCT" and out["spatial_shape"] == ["D", "H", "W"] and out["value_range"] == [0, 255]
    assert out["dtype"] == "uint8" and out["num_channels"] == 1


def _config_files():
    return sorted(p for p in (ROOT / "configs").rglob("*.json") if p.name != "metadata.json")


def test_every_network_definition_lives_in_one_config_file():
    """A ``*_def`` is defined (as a whole) in exactly one config file; overlays may only change its sub-keys.
    (``network_def`` is MONAI's property naming the network of each workflow, so every workflow sets it.)"""
    owners = {}
    for path in _config_files():
        for key in json.loads(path.read_text()):
            if key.endswith("_def") and "#" not in key and key != "network_def":
                owners.setdefault(key, []).append(str(path.relative_to(ROOT / "configs")))
    repeated = {k: v for k, v in owners.items() if len(v) > 1}
    assert not repeated, repeated
    assert {"nhae_def", "diffusion3d_def", "refiner_def", "autoencoderkl3d_def"} <= set(owners)
    assert owners["autoencoderkl3d_def"] == ["inference.json"]


def test_no_handler_is_addressed_by_list_position():
    bad = [f"{p.name}: {k}" for p in _config_files() for k in json.loads(p.read_text())
           if re.search(r"handlers#\d", k)]
    assert not bad, bad


def test_readme_has_the_two_commands():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)
    assert any("pip install -r requirements.txt" in b for b in blocks)
    assert any("pytest" in b for b in blocks)
    assert "docs/README.md" in text and "docs/data_license.txt" in text


def test_every_config_the_readme_names_exists_and_every_config_is_named():
    text = (ROOT / "README.md").read_text()
    named = set(re.findall(r"configs/[\w/]+\.json", text))
    missing = [c for c in named if not (ROOT / c).is_file()]
    assert not missing, missing
    stages = {f"configs/stages/{p.relative_to(ROOT / 'configs' / 'stages')}"
              for p in (ROOT / "configs" / "stages").rglob("*.json")}
    unnamed = {str(p.relative_to(ROOT)) for p in _config_files()} - named - stages - {"configs/fundus_common.json"}
    assert not unnamed, f"configs without a README command: {sorted(unnamed)}"
