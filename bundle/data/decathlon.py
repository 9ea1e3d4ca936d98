"""Label-guided synthesis requests and the Decathlon folder of synthetic (image, label) pairs.

Requests come from a folder of label sets: a MONAI datalist (``datalist.json`` as
``scripts/prepare_data.py phantoms`` writes it, or a Decathlon ``dataset.json``) whose items have
``label``, ``artery`` and ``vein``, or, without one, every ``*_layers.<ext>`` file with its
``*_artery.<ext>`` and ``*_vein.<ext>`` siblings. The output is the Decathlon layout that
``monai.data.load_decathlon_datalist`` and the model zoo's segmentation bundles read unchanged:
``imagesTr/NAME``, ``labelsTr/NAME`` (the layer map the image was conditioned on),
``labelsTr/NAME_artery`` and ``labelsTr/NAME_vein`` (en-face masks) and ``dataset.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..io import check_num_samples, check_output_ext, save_json
from .datalist import find_datalist
from .labels import LABEL_KEYS
from .oct_phantom import LAYER_NAMES

LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
LABEL_NAMES = {"0": "vitreous", **{str(i + 1): n for i, n in enumerate(LAYER_NAMES)}, "12": "sclera"}


def pair_files(name: str, ext: str = ".nii.gz") -> dict[str, str]:
    """Relative paths of one synthetic pair in the Decathlon folder."""
    return {"image": f"imagesTr/{name}{ext}", "label": f"labelsTr/{name}{ext}",
            "artery": f"labelsTr/{name}_artery{ext}", "vein": f"labelsTr/{name}_vein{ext}"}


def _stem(path: str) -> str:
    name = os.path.basename(path)
    for suffix in LABEL_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name[: -len("_layers")] if name.endswith("_layers") else name


def _from_datalist(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"label datalist {path} is not valid JSON: {e}") from None
    items = [it for key in ("training", "test", "validation") for it in data.get(key, []) if isinstance(it, dict)]
    sets = []
    for it in items:
        if "label" not in it:
            continue
        missing = [k for k in ("artery", "vein") if k not in it]
        if missing:
            raise ValueError(f"label datalist {path}: item with label {it['label']} has no {missing} mask(s)")
        sets.append({k: str(path.parent / it[k]) for k in LABEL_KEYS})
    if not sets:
        raise ValueError(f"label datalist {path} lists no items with a 'label' file")
    return sets


def _from_folder(folder: Path) -> list[dict]:
    sets = []
    for f in sorted(folder.rglob("*_layers*")):
        suffix = next((s for s in LABEL_SUFFIXES if f.name.lower().endswith("_layers" + s)), None)
        if suffix is None or not f.is_file():
            continue
        base = f.name[: -len("_layers" + suffix)]
        sets.append({"label": str(f), "artery": str(f.parent / f"{base}_artery{suffix}"),
                     "vein": str(f.parent / f"{base}_vein{suffix}")})
    if not sets:
        raise ValueError(f"{folder} holds no label sets: put a datalist.json / dataset.json with label, artery and "
                         "vein items there, or NAME_layers / NAME_artery / NAME_vein files "
                         f"({', '.join(LABEL_SUFFIXES)})")
    return sets


def find_label_sets(dataset_dir: str | os.PathLike) -> list[dict]:
    """Every label set under ``dataset_dir`` (see the module docstring); each file is checked to exist."""
    folder = Path(dataset_dir)
    if not folder.is_dir():
        raise ValueError(f"label folder {folder} does not exist")
    datalist = Path(find_datalist(folder))
    sets = _from_datalist(datalist) if datalist.is_file() else _from_folder(folder)
    where = datalist if datalist.is_file() else folder
    missing = [s[k] for s in sets for k in LABEL_KEYS if not os.path.isfile(s[k])]
    if missing:
        raise ValueError(f"{where} names {len(missing)} missing label file(s), e.g. {missing[:3]}")
    return sets


def label_requests(dataset_dir: str | os.PathLike, seed: int = 0, samples_per_label: int = 1,
                   skip_done: str | os.PathLike | None = None, ext: str = ".nii.gz",
                   num_samples: int | None = None) -> list[dict]:
    """One request per (label set, sample): {"label", "artery", "vein", "seed", "name"}; seeds count up from
    ``seed`` over the whole list, so any subset (a rerun, a shard) gives the same volumes. ``num_samples``
    keeps the first requests only. With ``skip_done`` (the output folder) pairs already written are left out."""
    per = check_num_samples(samples_per_label)
    sets = find_label_sets(dataset_dir)
    requests = [dict(s, seed=int(seed) + i * per + j, name=f"{_stem(s['label'])}_seed{int(seed) + i * per + j}")
                for i, s in enumerate(sets) for j in range(per)]
    if num_samples is not None:
        requests = requests[: check_num_samples(num_samples)]
    return _skip_done(requests, skip_done, ext)


def label_first_requests(num_samples: int, seed: int = 0, prefix: str = "label_first",
                         skip_done: str | os.PathLike | None = None, ext: str = ".nii.gz") -> list[dict]:
    """``num_samples`` requests whose label sets the phantom generator draws from their seed
    (``bundle.transforms.PhantomLabelsd``): [{"seed": s, "name": f"{prefix}_seed{s}"}, ...]."""
    n = check_num_samples(num_samples)
    requests = [{"seed": int(seed) + i, "name": f"{prefix}_seed{int(seed) + i}"} for i in range(n)]
    return _skip_done(requests, skip_done, ext)


def _skip_done(requests: list[dict], out, ext: str) -> list[dict]:
    if not out:
        return requests
    ext = check_output_ext(ext)
    return [r for r in requests if not os.path.isfile(os.path.join(out, pair_files(r["name"], ext)["image"]))]


def write_decathlon_index(out_dir: str | os.PathLike, description: str = "CA-LDM label-guided synthetic OCT") -> dict:
    """(Re)write ``out_dir/dataset.json`` listing every complete pair in ``out_dir`` (its image, written last,
    exists); atomic, so a reader never sees a half-written index. Returns the index."""
    out = Path(out_dir)
    images = sorted((out / "imagesTr").glob("*")) if (out / "imagesTr").is_dir() else []
    training = []
    for img in images:
        ext = next((s for s in LABEL_SUFFIXES if img.name.lower().endswith(s)), None)
        if ext is None or ".tmp" in img.name:
            continue
        files = pair_files(img.name[: -len(ext)], ext)
        if all((out / f).is_file() for f in files.values()):
            training.append(files)
    index = {"name": "synthetic_oct_pairs", "description": description, "tensorImageSize": "3D",
             "modality": {"0": "OCT"}, "labels": LABEL_NAMES, "axes": "D,H,W (B-scan, depth, lateral)",
             "numTraining": len(training), "numTest": 0, "training": training, "test": []}
    save_json(index, out / "dataset.json")
    return index
