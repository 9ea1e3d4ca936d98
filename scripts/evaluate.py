"""Evaluate synthetic images against real ones.

    python scripts/evaluate.py fundus --real data/fundus/datalist.json --fake out/dcgan [--real_split test] [--json]
    python scripts/evaluate.py fundus --real data/fundus/datalist.json --fake data/fundus/datalist.json --fake_split training
    python scripts/evaluate.py oct --real data/phantoms/datalist.json --fake out [--features domain|inception --inception_weights FILE] [--json]

``--real`` / ``--fake``: a MONAI datalist JSON (its split) or a folder of PNG images. Prints a
Markdown row (or JSON): Fréchet distance on the bundle's domain features (FD-domain; not Inception
FID), sliced Wasserstein distance x1e3, and the mean pairwise distance (diversity) of both sets;
for OCT: Intra- / Inter-slice FD and KID, SWD, total variation per axis and slice jitter.
"""

import json as jsonlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fire  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fundus(real, fake, real_split="test", fake_split="test", size=128, feature_weights=None, max_images=1000, json=False):
    """FD (domain features), SWD and diversity of FAKE against REAL fundus images."""
    import torch

    from bundle.evaluation import evaluate_fundus, list_images, load_images
    from bundle.networks import FundusFeatureNet, load_weights

    torch.manual_seed(0)
    weights = feature_weights or os.path.join(ROOT, "models", "fundus_features.pt")
    net = load_weights(FundusFeatureNet(), weights, "train it with configs/train_fundus_features.json")
    r = load_images(list_images(real, real_split)[: int(max_images)], int(size))
    f = load_images(list_images(fake, fake_split)[: int(max_images)], int(size))
    res = evaluate_fundus(r, f, net)
    res.update(real=str(real), fake=str(fake), feature_weights=str(weights))
    if json:
        print(jsonlib.dumps(res))
    else:
        print("| fake | n | FD-domain | SWD x1e3 | diversity (real) |\n|---|---|---|---|---|")
        print(f"| {fake} | {res['n_fake']} | {res['fd_domain']:.3f} | {res['swd']:.2f} | {res['diversity']:.4f} ({res['diversity_real']:.4f}) |")


def oct(real, fake, real_split="test", fake_split="test", features="domain", feature_weights=None, inception_weights=None,
        per_volume=32, max_volumes=100, json=False):
    """Intra/Inter-slice FD and KID, SWD, TV and slice jitter of FAKE OCT volumes against REAL ones."""
    import torch

    from bundle.evaluation import evaluate_oct, list_volumes, load_volume
    from bundle.networks import oct_feature_extractor

    torch.manual_seed(0)
    net = oct_feature_extractor(features, feature_weights or os.path.join(ROOT, "models", "oct_features.pt"), inception_weights)
    r = [load_volume(f) for f in list_volumes(real, real_split)[: int(max_volumes)]]
    f = [load_volume(v) for v in list_volumes(fake, fake_split)[: int(max_volumes)]]
    res = evaluate_oct(r, f, net, int(per_volume), features=features)
    res.update(real=str(real), fake=str(fake))
    if json:
        print(jsonlib.dumps(res))
        return
    tv = lambda k: f"{res[k][0]:.4f} +- {res[k][1]:.4f}"  # noqa: E731
    print(f"features: {features}; {res['n_fake']} fake vs {res['n_real']} real volumes, {per_volume} slices per volume and direction")
    print("| set | Intra-FD | Inter-FD | Intra-KID | Inter-KID | Intra-SWD | Inter-SWD | TV (D, H, W summed) | jitter |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {fake} | {res['intra_fd']:.3f} | {res['inter_fd']:.3f} | {res['intra_kid']:.4f} | {res['inter_kid']:.4f} | "
          f"{res['intra_swd']:.2f} | {res['inter_swd']:.2f} | {tv('tv_total_fake')} | {res['jitter_fake']:.4f} |")
    print(f"| real ({real}) | - | - | - | - | - | - | {tv('tv_total_real')} | {res['jitter_real']:.4f} |")


def main():
    try:
        fire.Fire({"fundus": fundus, "oct": oct})
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
