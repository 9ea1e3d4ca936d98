"""Table 2 in miniature (CA-LDM paper, "Benefits for downstream tasks"): segmentation trained on real, synthetic
and mixed (image, label) pairs, over several training seeds, plus the label fidelity of the synthetic pairs.

Every run is the bundle's own workflow (``configs/segmentation/train.json`` then ``evaluate.json``) in a fresh
process with one thread; finished runs (their metrics file exists) are skipped, so an interrupted experiment
resumes. ``scripts/segmentation_table2.py`` is the command line.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..io import save_json

ROWS = {
    "Real": {},
    "200 % Syn": {"synthetic_ratio": 2, "real_fraction": 0},
    "Real + 100 % Syn": {"synthetic_ratio": 1},
    "Real + 200 % Syn": {"synthetic_ratio": 2},
    "Real, low resolution (x2 down / up)": {"low_resolution": True},
}
TASK_METRICS = {"layers": [("Dice", "mean_dice", None), ("surface MAD (voxels)", "surface_mad", None)],
                "av": [("IoU artery", "mean_iou", "artery"), ("IoU vein", "mean_iou", "vein")]}


def _slug(row: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in row.lower()).strip("_").replace("__", "_")


def _command(root: Path, task: str, extra: list[str], evaluate: bool, overrides: dict) -> list[str]:
    s = root / "configs" / "segmentation"
    files = [str(s / "train.json")] + ([str(s / "av.json")] if task == "av" else []) + \
        ([str(s / "evaluate.json")] if evaluate else [])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(files).replace('"', "'"),
           "--meta_file", str(root / "configs" / "metadata.json"),
           "--logging_file", str(root / "configs" / "logging.conf"), "--bundle_root", str(root)]
    for k, v in overrides.items():
        cmd += [f"--{k}", str(v).lower() if isinstance(v, bool) else str(v)]
    return cmd + extra


def _run(cmd: list[str], log: Path) -> None:
    root = cmd[cmd.index("--bundle_root") + 1]
    env = dict(os.environ, OMP_NUM_THREADS="1", RETINA_NO_PROGRESS="1",
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        raise RuntimeError(f"segmentation run failed (exit {proc.returncode}); log: {log}")


def run_one(root: Path, task: str, row: str, seed: int, data_dir: str, pairs: str, out: Path, iterations: dict,
            fidelity: bool) -> Path:
    """Train and evaluate one (task, row, seed); returns its run folder."""
    run_dir = out / task / _slug(row) / f"seed{seed}"
    base = {"dataset_dir": data_dir, "run_dir": str(run_dir), "seed": seed, "synthetic_seed": seed,
            "epoch_length": iterations[task][0], "max_epochs": iterations[task][1], "val_interval": 100000}
    overrides = dict(base, **ROWS[row])
    if "synthetic_ratio" in ROWS[row]:
        overrides["synthetic_dir"] = pairs
    if not (run_dir / "metrics_test.json").is_file():
        _run(_command(root, task, [], False, overrides), run_dir / "train.log")
        _run(_command(root, task, [], True, base), run_dir / "evaluate.log")
    if fidelity and not (run_dir / "metrics_synthetic.json").is_file():
        extra = {"eval_datalist": str(Path(pairs) / "dataset.json"), "eval_split": "training",
                 "metrics_file": str(run_dir / "metrics_synthetic.json")}
        _run(_command(root, task, [], True, dict(base, **extra)), run_dir / "evaluate.log")
    return run_dir


def _value(report: dict, key: str, cls: str | None) -> float:
    return report["per_class"][key][cls] if cls else report["metrics"][key]


def summarise(out: Path, tasks, seeds) -> dict:
    """Mean, sample standard deviation and per-seed values of every metric, per task and row, plus the label
    fidelity (the Real models on the synthetic pairs, against their conditioning labels) beside the same models
    on the real test set."""
    table: dict = {}
    for task in tasks:
        for row in list(ROWS) + ["label fidelity: Real models on the synthetic pairs"]:
            fid = row.startswith("label fidelity")
            files = [out / task / _slug("Real" if fid else row) / f"seed{s}" /
                     ("metrics_synthetic.json" if fid else "metrics_test.json") for s in seeds]
            reports = [json.loads(f.read_text()) for f in files if f.is_file()]
            if not reports:
                continue
            cells = {}
            for name, key, cls in TASK_METRICS[task]:
                vals = [_value(r, key, cls) for r in reports]
                vals = [v for v in vals if v is not None]
                cells[name] = {"mean": statistics.mean(vals) if vals else None,
                               "std": statistics.stdev(vals) if len(vals) > 1 else None, "values": vals}
            table.setdefault(task, {})[row] = {"seeds": len(reports), "cases": reports[0]["num_cases"], **cells}
    return table


def markdown(table: dict) -> str:
    lines = []
    for task, rows in table.items():
        names = [n for n, _, _ in TASK_METRICS[task]]
        lines += [f"| {task} | " + " | ".join(names) + " | seeds |", "|---|" + "---|" * (len(names) + 1)]
        for row, cells in rows.items():
            vals = [f"{c['mean']:.3f} +- {c['std']:.3f}" if c["std"] is not None else
                    (f"{c['mean']:.3f}" if c["mean"] is not None else "-") for c in (cells[n] for n in names)]
            lines.append(f"| {row} | " + " | ".join(vals) + f" | {cells['seeds']} |")
        lines.append("")
    return "\n".join(lines)


def run_table2(root, data_dir: str, pairs: str, out: str, seeds=(0, 1, 2), tasks=("layers", "av"), jobs: int = 2,
               layer_iterations: tuple[int, int] = (20, 10), av_iterations: tuple[int, int] = (50, 20),
               output_file: str | None = None, rows=tuple(ROWS)) -> dict:
    """Every (task, row, seed) run, ``jobs`` at a time, then the summary (written to ``output_file`` if given).
    ``*_iterations`` = (epoch_length, max_epochs): the same number of training iterations for every row.
    ``rows`` limits the runs to some of ``ROWS`` (the summary reads every finished run)."""
    root, out_path = Path(root), Path(out)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown row(s) {unknown}; rows are {list(ROWS)}")
    if not (Path(pairs) / "dataset.json").is_file():
        raise ValueError(f"{pairs} has no dataset.json: write the synthetic pairs first "
                         "(configs/inference_conditional.json)")
    iterations = {"layers": tuple(layer_iterations), "av": tuple(av_iterations)}
    work = [(t, r, int(s)) for s in seeds for t in tasks for r in rows]
    with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
        for f in [pool.submit(run_one, root, t, r, s, data_dir, pairs, out_path, iterations, r == "Real")
                  for t, r, s in work]:
            f.result()
    table = summarise(out_path, tasks, [int(s) for s in seeds])
    if output_file:
        save_json({"protocol": {"data_dir": data_dir, "pairs": pairs, "seeds": list(seeds), "iterations": iterations},
                   "table": table}, output_file)
    return table
