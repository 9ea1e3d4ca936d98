"""Evaluate synthetic images against real ones.

    python scripts/evaluate.py fundus --real data/fundus/datalist.json --fake out/dcgan [--real_split test] [--json]
    python scripts/evaluate.py fundus --real data/fundus/datalist.json --fake data/fundus/datalist.json \
--fake_split training
    python scripts/evaluate.py oct --real data/phantoms/datalist.json --fake out \
[--features domain|inception --inception_weights FILE] [--json]
    python scripts/evaluate.py oct --real data/phantoms/datalist.json --fake out/a,out/b --names A,B \
--output_file out/table.json

    python scripts/evaluate.py vessels --datalist out/label_first/dataset.json [--split training] [--output_file F]

``--real`` / ``--fake``: a MONAI datalist JSON (its split) or a folder of PNG images. Prints a
Markdown row (or JSON): Fréchet distance on the bundle's domain features (FD-domain; not Inception
FID), sliced Wasserstein distance x1e3, and the mean pairwise distance (diversity) of both sets;
for OCT: Intra- / Inter-slice FD and KID, SWD, total variation per axis and slice jitter.
"""

import json as jsonlib
import os
import sys

import fire

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fundus(real, fake, real_split="test", fake_split="test", size=128, feature_weights=None, max_images=1000,
           json=False):
    """FD (domain features), SWD and diversity of FAKE against REAL fundus images."""
    import torch

    from bundle.evaluation import evaluate_fundus, list_images, load_images
    from bundle.networks import FundusFeatureNet, load_weights

    torch.manual_seed(0)
    weights = feature_weights or os.path.join(ROOT, "models", "fundus", "fundus_features.pt")
    net = load_weights(FundusFeatureNet(), weights, "train it with configs/train_fundus_features.json")
    r = load_images(list_images(real, real_split)[: int(max_images)], int(size))
    f = load_images(list_images(fake, fake_split)[: int(max_images)], int(size))
    res = evaluate_fundus(r, f, net)
    res.update(real=str(real), fake=str(fake), feature_weights=str(weights))
    if json:
        print(jsonlib.dumps(res))
    else:
        print("| fake | n | FD-domain | SWD x1e3 | diversity (real) |\n|---|---|---|---|---|")
        print(f"| {fake} | {res['n_fake']} | {res['fd_domain']:.3f} | {res['swd']:.2f} | "
              f"{res['diversity']:.4f} ({res['diversity_real']:.4f}) |")


def oct(real, fake, real_split="test", fake_split="test", features="domain", feature_weights=None,
        inception_weights=None, per_volume=32, max_volumes=100, names=None, output_file=None, json=False):
    """Intra/Inter-slice FD and KID, SWD, TV and slice jitter of FAKE OCT volumes against REAL ones.

    FAKE may be several sets (comma-separated folders), each becoming one table row; NAMES labels them.
    OUTPUT_FILE: also write the results as JSON there and the Markdown table beside it (.md)."""
    from bundle.evaluation import evaluate_oct_sets, run_oct_evaluation

    kw = {"real_split": real_split, "fake_split": fake_split, "features": features, "feature_weights": feature_weights,
          "inception_weights": inception_weights, "per_volume": int(per_volume), "max_volumes": int(max_volumes)}
    fakes = fake.split(",") if isinstance(fake, str) else list(fake)
    names = names.split(",") if isinstance(names, str) else names
    if names is not None and len(names) != len(fakes):
        raise ValueError(f"{len(names)} names for {len(fakes)} fake sets")
    if json:
        for res in evaluate_oct_sets(real, fakes, **kw):
            print(jsonlib.dumps(res))
        return
    run_oct_evaluation(real, fakes, output_file, names, **kw)


def vessels(datalist, split="training", max_volumes=1000, output_file=None):
    """Vessel visibility of OCT volumes with their artery / vein masks (a Decathlon dataset.json of label-guided
    synthesis, or the phantoms' datalist): correlation of the en-face vessel shadow with the own masks, and with
    another item's masks (chance level); mean +- std over volumes."""
    from bundle.evaluation import vessel_visibility
    from bundle.io import save_json

    res = vessel_visibility(datalist, split, max_volumes)
    if output_file:
        save_json(res, output_file)
    own, other = res["own_masks"], res["other_masks"]
    print(f"{res['volumes']} volumes: own masks {own['mean']:.3f} +- {own['std']:.3f}, "
          f"other masks {other['mean']:.3f} +- {other['std']:.3f}")


def main():
    try:
        fire.Fire({"fundus": fundus, "oct": oct, "vessels": vessels})
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
