"""DR-GAN measurements for the model card (docs/benchmarks/drgan.md has the commands and results).

    python scripts/drgan_experiments.py generate --out out/drgan_eval --per_grade 100
    python scripts/drgan_experiments.py confusion --samples out/drgan_eval
    python scripts/drgan_experiments.py quality --samples out/drgan_eval --dcgan out/dcgan_eval
    python scripts/drgan_experiments.py fidelity --samples out/drgan_test
    python scripts/drgan_experiments.py augmentation --synthetic out/drgan_aug --seeds 0,1,2

Every command writes its result as JSON (``--output_file``) and prints a markdown table.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import fire
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.drgan_evaluation import (  # noqa: E402
    SEGMENTED,
    grading_scores,
    load_pairs,
    load_set,
    mask_dice,
    predict_grades,
    quality_by_grade,
)
from bundle.drgan_synthesis import load_drgan  # noqa: E402
from bundle.evaluation import list_images, load_images  # noqa: E402
from bundle.io import save_json, save_png  # noqa: E402
from bundle.networks.drgan import NUM_GRADES  # noqa: E402

CONFIGS = ROOT / "configs"


def _items(value) -> list[str]:
    """A comma-separated string or the tuple / list fire makes of "a,b" -> list of strings."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [v for v in str(value).split(",") if v]


def _parser(files, bundle_root, **over):
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config([str(CONFIGS / f) for f in files])
    p["bundle_root"] = str(bundle_root)
    for k, v in over.items():
        p[k] = v
    return p


def _write(result, output_file):
    if output_file:
        save_json(result, output_file)
        print(f"wrote {output_file}")


def run_inference(models_dir=None, **over):
    """Run configs/inference_drgan.json (the MONAI workflow) with overrides, e.g. output_dir, grade, num_samples."""
    from monai.bundle import ConfigWorkflow

    if models_dir:
        over["models_dir"] = str(models_dir)
    wf = ConfigWorkflow(config_file=str(CONFIGS / "inference_drgan.json"), workflow_type="infer",
                        meta_file=str(CONFIGS / "metadata.json"), logging_file=str(CONFIGS / "logging.conf"),
                        bundle_root=str(ROOT), **over)
    wf.initialize()
    wf.run()
    wf.finalize()


def generate(out, per_grade=100, seed=100000, grades="0,1,2,3,4", mask_dir=None, batch_size=8, models_dir=None):
    """``per_grade`` DR-GAN images for each requested grade into OUT/grade<g>/ (fresh phantom masks drawn
    at that grade, or the masks of ``mask_dir``); seeds seed + 10000 g + i."""
    for g in [int(x) for x in _items(grades)]:
        run_inference(models_dir, output_dir=str(Path(out) / f"grade{g}"), num_samples=per_grade,
                      seed=int(seed) + 10000 * g, grade=g, mask_dir=mask_dir, batch_size=batch_size)


def _grade_folders(samples):
    folders = sorted(Path(samples).glob("grade[0-4]"))
    if not folders:
        raise ValueError(f"{samples} has no grade<g> folders (scripts/drgan_experiments.py generate)")
    return [(int(f.name[-1]), f) for f in folders]


def confusion(samples, real=str(ROOT / "data" / "fundus256" / "datalist.json"), output_file=None, models_dir=None):
    """Requested vs predicted grade of the samples in SAMPLES/grade<g>/, by the DR grader (and, as a
    second opinion trained separately, the fundus feature net's grade logits); the same two graders on
    the real test split of REAL as the reference."""
    from bundle.networks import FundusFeatureNet, load_weights

    _, grader = load_drgan(models_dir)
    feat = load_weights(FundusFeatureNet(), ROOT / "models" / "fundus" / "fundus_features.pt").eval()

    @torch.no_grad()
    def feat_grades(imgs):
        small = torch.nn.functional.interpolate(imgs, size=(128, 128), mode="area")
        return torch.cat([feat(small[i : i + 64])[:, :5].argmax(1) for i in range(0, len(small), 64)]).tolist()

    req, pred, pred2 = [], [], []
    for g, folder in _grade_folders(samples):
        imgs = load_images(list_images(folder / "datalist.json", "training"), 256)
        req += [g] * len(imgs)
        pred += predict_grades(grader, imgs).tolist()
        pred2 += feat_grades(imgs)
    result = {"grader": grading_scores(req, pred), "feature_net": grading_scores(req, pred2),
              "samples": str(samples), "n": len(req)}
    if real:
        ri, _, rg = load_set(real, "test", 256)
        result["real_grader"] = grading_scores(rg, predict_grades(grader, ri).tolist())
        result["real_feature_net"] = grading_scores(rg, feat_grades(ri))
        print(f"on the real test split: grader accuracy {result['real_grader']['accuracy']:.3f}, "
              f"feature net {result['real_feature_net']['accuracy']:.3f}")
    m = np.array(result["grader"]["confusion"])
    print("requested \\ predicted | " + " | ".join(str(i) for i in range(NUM_GRADES)) + " | predicted as requested")
    for i in range(NUM_GRADES):
        if m[i].sum():
            print(f"{i} | " + " | ".join(str(v) for v in m[i]) + f" | {m[i, i] / m[i].sum():.2f}")
    print(f"grader: accuracy {result['grader']['accuracy']:.3f}, kappa {result['grader']['kappa']:.3f}; "
          f"feature net: accuracy {result['feature_net']['accuracy']:.3f}")
    _write(result, output_file)
    return result


def quality(samples, dcgan=None, real=str(ROOT / "data" / "fundus256" / "datalist.json"), real_split="test", size=128,
            floor_per_grade=100, output_file=None):
    """FD (domain features) and SWD per grade at SIZE x SIZE against the real split's images of that grade.

    SAMPLES: comma-separated DR-GAN draws (folders with grade<g>/ from ``generate``), each a draw; DCGAN:
    comma-separated folders of DCGAN samples (one per draw), which cannot be asked for a grade, so all of
    a draw's images are compared with each grade's real images. The floor: FLOOR_PER_GRADE real training
    images per grade (the finite-sample value of a perfect model)."""
    from bundle.networks import FundusFeatureNet, load_weights

    feat = load_weights(FundusFeatureNet(), ROOT / "models" / "fundus" / "fundus_features.pt").eval()
    real_imgs, _, real_grades = load_set(real, real_split, size)
    draws = {}
    for folder in _items(samples):
        fake, fg = [], []
        for g, sub in _grade_folders(folder):
            imgs = load_images(list_images(sub / "datalist.json", "training"), size)
            fake.append(imgs)
            fg += [g] * len(imgs)
        draws.setdefault("DR-GAN", []).append((torch.cat(fake), fg))
    for folder in _items(dcgan):
        draws.setdefault("DCGAN", []).append((load_images(list_images(folder), size), None))
    files, _, grades = load_pairs(real, "training")
    pick = [i for g in range(NUM_GRADES) for i in [j for j, x in enumerate(grades) if x == g][: int(floor_per_grade)]]
    draws["floor (real training images)"] = [(load_images([files[i] for i in pick], size), [grades[i] for i in pick])]
    result = {"size": size, "real": str(real), "real_split": real_split, "samples": str(samples),
              "dcgan": str(dcgan), "sets": {}}
    for name, sets in draws.items():
        result["sets"][name] = [quality_by_grade(real_imgs, real_grades, x, g, feat) for x, g in sets]
    keys = [str(g) for g in range(NUM_GRADES)] + ["all"]
    print("set | metric | " + " | ".join(f"grade {k}" if k != "all" else "all" for k in keys))
    for name, runs in result["sets"].items():
        for metric in ("fd", "swd"):
            cells = []
            for k in keys:
                vals = [r[k][metric] for r in runs if k in r]
                sd = f" ± {np.std(vals, ddof=1):.1f}" if len(vals) > 1 else ""
                cells.append(f"{np.mean(vals):.1f}{sd}" if vals else "-")
            print(f"{name} | {metric} | " + " | ".join(cells))
    _write(result, output_file)
    return result


def fidelity(samples, real=str(ROOT / "data" / "fundus256" / "datalist.json"), real_split="test", output_file=None,
             weights=str(ROOT / "models" / "evaluation" / "fundus_segmentation.pt")):
    """Dice between the fundus segmenter's output and the masks, on the real split and on DR-GAN images
    made from masks (SAMPLES: an inference_drgan.json output folder, e.g. from ``--mask_dir REAL``)."""
    from bundle.networks import load_weights

    p = _parser(["inference_drgan.json", "fundus_common.json", "train_fundus_segmentation.json"], ROOT)
    seg = load_weights(p.get_parsed_content("segmentation_def"), weights,
                       "train it with configs/train_fundus_segmentation.json").eval()
    ri, rm, _ = load_set(real, real_split, 256)
    si, sm, _ = load_set(Path(samples) / "datalist.json", "training", 256)
    result = {"real": mask_dice(seg, ri, rm), "drgan": mask_dice(seg, si, sm), "n_real": len(ri), "n_drgan": len(si)}
    print("images | " + " | ".join(SEGMENTED))
    for k in ("real", "drgan"):
        print(f"{k} | " + " | ".join(f"{result[k][c]:.3f}" for c in SEGMENTED))
    _write(result, output_file)
    return result


def _train_grader(train_items, seed, iterations, run_dir, batch_size=32):
    from monai.bundle import ConfigWorkflow

    epochs = max(1, int(np.ceil(iterations / max(len(train_items) // batch_size, 1))))
    wf = ConfigWorkflow(config_file=[str(CONFIGS / f) for f in
                                     ("inference_drgan.json", "fundus_common.json", "train_drgan_grader.json")],
                        workflow_type="train", meta_file=str(CONFIGS / "metadata.json"),
                        logging_file=str(CONFIGS / "logging.conf"), bundle_root=str(ROOT), resume=False, seed=seed,
                        max_epochs=epochs, batch_size=batch_size, run_dir=str(run_dir),
                        drgan_grader_weights=str(Path(run_dir) / "grader.pt"))
    wf.initialize()
    wf.parser["fundus_train_datalist"] = train_items
    hs = [h for h in wf.parser["train#handlers"] if "ValidationHandler" not in h.get("_target_", "")
          and "FitGradeGaussians" not in h.get("_target_", "")]
    wf.parser["train#handlers"] = hs
    wf.parser.parse()
    wf.parser.get_parsed_content("initialize")
    trainer = wf.parser.get_parsed_content("train#trainer")
    trainer.run()
    return wf.parser.get_parsed_content("network")


def augmentation(synthetic, real=str(ROOT / "data" / "fundus256" / "datalist.json"), real_count=240, seeds="0,1,2",
                 iterations=150, output_file=None, work_dir=str(ROOT / "runs" / "drgan_augmentation")):
    """The grader trained on ``real_count`` real training images (stratified) vs the same + the
    grade-balanced synthetic pairs of SYNTHETIC (grade<g>/ folders), the same number of iterations,
    tested on the real test split: accuracy, quadratic weighted kappa, per-grade TPR, per seed."""
    from bundle.data.datalist import load_checked_datalist

    items = load_checked_datalist(real, "training")
    rng = np.random.default_rng(0)
    by_grade = {g: [it for it in items if int(it["grade"]) == g] for g in range(NUM_GRADES)}
    frac = real_count / len(items)
    subset = []
    for g, its in by_grade.items():
        k = max(2, int(round(frac * len(its))))
        subset += [{key: its[i][key] for key in ("image", "grade", "label")} for i in rng.permutation(len(its))[:k]]
    synth = []
    for _, folder in _grade_folders(synthetic):  # the real entries' keys only, so that batches collate
        synth += [{k: it[k] for k in ("image", "grade", "label")}
                  for it in load_checked_datalist(folder / "datalist.json", "training")]
    test_imgs, _, test_grades = load_set(real, "test", 256)
    result = {"real_count": len(subset), "synthetic_count": len(synth), "iterations": iterations,
              "real_grades": np.bincount([int(i["grade"]) for i in subset], minlength=5).tolist(), "runs": {}}
    if output_file and Path(output_file).is_file():  # a rerun keeps the runs already done
        result["runs"] = {arm: {int(k): v for k, v in runs.items()}
                          for arm, runs in json.loads(Path(output_file).read_text()).get("runs", {}).items()}
    for arm, train in (("real", subset), ("real+synthetic", subset + synth)):
        for s in [int(x) for x in _items(seeds)]:
            if s in result["runs"].get(arm, {}):
                continue
            net = _train_grader(train, s, iterations, Path(work_dir) / f"{arm}_seed{s}")
            sc = grading_scores(test_grades, predict_grades(net, test_imgs))
            result["runs"].setdefault(arm, {})[s] = sc
            print(f"{arm} seed {s}: accuracy {sc['accuracy']:.3f} kappa {sc['kappa']:.3f} "
                  f"TPR {[round(t, 2) for t in sc['tpr']]}", flush=True)
            _write(result, output_file)
    for arm, runs in result["runs"].items():
        acc = [r["accuracy"] for r in runs.values()]
        kap = [r["kappa"] for r in runs.values()]
        tpr = np.array([r["tpr"] for r in runs.values()])
        print(f"{arm} | {np.mean(acc):.3f} ± {np.std(acc, ddof=1):.3f} | "
              f"{np.mean(kap):.3f} ± {np.std(kap, ddof=1):.3f} | " + " | ".join(f"{m:.2f}" for m in np.nanmean(tpr, 0)))
    return result


ABLATIONS = {"no_lesions": {"use_lesions": False}, "no_agm": {"grading_code": "onehot"},
             "no_perceptual": {"perceptual_weight": 0.0}, "no_d_classification": {"d_classify": False}}


def _train_variant(name, epochs, over):
    from monai.bundle import ConfigWorkflow

    stage = f"drgan_ablation_{name}"
    wf = ConfigWorkflow(config_file=[str(CONFIGS / f) for f in
                                     ("inference_drgan.json", "fundus_common.json", "train_drgan.json")],
                        workflow_type="train", meta_file=str(CONFIGS / "metadata.json"),
                        logging_file=str(CONFIGS / "logging.conf"), bundle_root=str(ROOT), stage=stage,
                        max_epochs=epochs, global_epochs=epochs,
                        drgan_generator_weights=str(ROOT / "runs" / stage / "generator.pt"), **over)
    wf.initialize()
    wf.run()
    wf.finalize()
    return ROOT / "runs" / stage / "generator.pt"


def _phantom_set(grades, seed):
    """Mask maps (N, 9, 256, 256) of fresh phantoms at ``grades``, seeds seed + i."""
    from bundle.transforms.drgan import phantom_masks

    return torch.stack([torch.from_numpy(phantom_masks(256, int(seed) + i, int(g))[0]) for i, g in enumerate(grades)])


@torch.no_grad()
def _global_samples(generator, grader, masks, grades, seed, use_lesions=True, onehot=False):
    """Half-resolution (G_m) images for ``masks`` at ``grades``, one seed per sample (seed + i)."""
    from bundle.drgan_synthesis import sample_inputs
    from bundle.engines.drgan import LESION_CHANNELS
    from bundle.networks.drgan import onehot_code

    generator.eval().set_stage("global")
    out = []
    for i, g in enumerate(grades):
        s = int(seed) + i
        m = masks[i : i + 1].clone()
        if not use_lesions:
            m[:, LESION_CHANNELS] = 0
        code, noise = sample_inputs(generator, grader, [int(g)], [s], m.shape[-1])
        if onehot:
            code = onehot_code(torch.tensor([int(g)]), generator.code_size)
        out.append(generator(m, code, noise))
    return torch.cat(out)


def ablation(variants=",".join(ABLATIONS), epochs=4, per_grade=40, seeds="300000,400000",
             full_checkpoint=str(ROOT / "runs" / "drgan_keep" / "drgan_checkpoint_epoch=4.pt"), output_file=None,
             real=str(ROOT / "data" / "fundus256" / "datalist.json")):
    """Table II in miniature: each variant trained like the default for EPOCHS epochs of the global stage
    (G_m, 128 x 128 output), against the default's checkpoint after the same iterations; FD / SWD against
    the real test split at 128 and the grader's accuracy on the requested grades, for 2 sample seeds."""
    from bundle.networks import FundusFeatureNet, load_weights

    net, grader = load_drgan()
    feat = load_weights(FundusFeatureNet(), ROOT / "models" / "fundus" / "fundus_features.pt").eval()
    real_imgs, _, real_grades = load_set(real, "test", 128)
    grades = [g for g in range(NUM_GRADES) for _ in range(int(per_grade))]
    result = {"epochs": epochs, "per_grade": per_grade, "variants": {}}
    names = ["full"] + _items(variants)
    seeds = [int(x) for x in _items(seeds)]
    mask_sets = {s: _phantom_set(grades, s) for s in seeds}
    for name in names:
        if name == "full":
            net.load_state_dict(torch.load(full_checkpoint, map_location="cpu", weights_only=True)["generator"])
            over = {}
        else:
            over = ABLATIONS[name]
            path = ROOT / "runs" / f"drgan_ablation_{name}" / "generator.pt"
            if not path.is_file():
                path = _train_variant(name, epochs, over)
            load_weights(net, path)
        rows = {}
        for s in seeds:
            x = _global_samples(net, grader, mask_sets[s], grades, s, over.get("use_lesions", True),
                                over.get("grading_code") == "onehot")
            q = quality_by_grade(real_imgs, real_grades, x, grades, feat, seed=s)["all"]
            acc = grading_scores(grades, predict_grades(grader, x))
            rows[s] = {"fd": q["fd"], "swd": q["swd"], "grade_accuracy": acc["accuracy"], "kappa": acc["kappa"]}
            print(name, s, rows[s], flush=True)
        result["variants"][name] = rows
        _write(result, output_file)
    print("variant | FD | SWD x1e3 | grade accuracy | kappa")
    for name, rows in result["variants"].items():
        cells = []
        for k in ("fd", "swd", "grade_accuracy", "kappa"):
            v = [r[k] for r in rows.values()]
            cells.append(f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.3f}")
        print(f"{name} | " + " | ".join(cells))
    return result


def figure(samples, out="docs/figures/drgan_grades.png", per_grade=6, real=None, size=160):
    """One row per grade of SAMPLES/grade<g>/ (the first PER_GRADE images), above a row of REAL images
    (a datalist's test split, first per grade) when given."""
    from bundle.preview import image_grid

    rows = []
    for _, folder in _grade_folders(samples):
        rows.append(load_images(list_images(folder / "datalist.json", "training")[:per_grade], size))
    if real:
        files, _, grades = load_pairs(real, "test")
        pick = [files[grades.index(g)] for g in range(NUM_GRADES) if g in grades][:per_grade]
        rows.append(load_images(pick, size))
    save_png(image_grid(torch.cat(rows), nrow=per_grade), out)
    print(f"wrote {out}")


def pairs_figure(samples, out="docs/figures/drgan_pairs.png", n=6, size=192):
    """DR-GAN images made from a real set's masks (SAMPLES: inference output with ``--mask_dir DATALIST``),
    first N, above the real images those masks belong to."""
    from bundle.data.datalist import load_checked_datalist
    from bundle.preview import image_grid

    items = load_checked_datalist(Path(samples) / "datalist.json", "training")[: int(n)]
    real = []
    for it in items:
        stem = Path(it["masks_from"])
        real.append(str(stem.parent.parent / "images" / f"{stem.name}.png"))
    x = torch.cat([load_images([it["image"] for it in items], size), load_images(real, size)])
    save_png(image_grid(x, nrow=int(n)), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    os.environ.setdefault("RETINA_NO_PROGRESS", "1")
    fire.Fire({"generate": generate, "confusion": confusion, "quality": quality, "fidelity": fidelity,
               "augmentation": augmentation, "figure": figure, "pairs_figure": pairs_figure,
               "ablation": ablation})
