"""Benchmarks that print one JSON line each.

    python scripts/benchmark.py phantom --size 128,128,128 [--repeats 5]
    python scripts/benchmark.py decode --size 256,256,256 --mode stack|window [--model dec_m|slice2d|autoencoderkl3d]
    python scripts/benchmark.py memory --sizes 64,128,256,512 --models caldm,ldm3d,medical_diffusion [--steps 2] \
[--json]
"""

import json as jsonlib
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fire  # noqa: E402

from bundle.benchmarks import DECODE_MODELS, SYNTHESIS_MODELS, run_in_fresh_process  # noqa: E402
from bundle.data.oct_phantom import generate_oct_phantom  # noqa: E402


def _size(size) -> tuple[int, int, int]:
    dims = tuple(int(s) for s in (size.split(",") if isinstance(size, str) else size))
    if len(dims) != 3:
        raise ValueError(f"size must be D,H,W, got {size!r}")
    return dims


def phantom(size="128,128,128", repeats=3, seed=0):
    """Median wall time of generating one OCT phantom (all labels included) over REPEATS runs."""
    dims = _size(size)
    times = []
    for r in range(int(repeats)):
        t0 = time.perf_counter()
        generate_oct_phantom(dims, seed=int(seed) + r)
        times.append(time.perf_counter() - t0)
    result = {
        "benchmark": "phantom", "size": list(dims), "repeats": int(repeats),
        "seconds": round(statistics.median(times), 3), "all_seconds": [round(t, 3) for t in times],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_threads": os.cpu_count(),
    }
    print(jsonlib.dumps(result))


def decode(size="128,128,128", mode="stack", model="dec_m", chunk_size=16, memory_limit_gb=20.0, json=True):
    """Decode random latents of a D,H,W volume in a fresh process; print seconds and peak RSS.

    model: dec_m (Dec2D + 3D adaptors, sliding-slice MODE window|stack), slice2d (plain Dec2D, no
    adaptors) or autoencoderkl3d (MONAI AutoencoderKL 3D decoder of the same widths, whole latent at
    once). The process is capped at MEMORY_LIMIT_GB of address space, so a model that does not fit
    is reported as out_of_memory instead of exhausting the machine. Output is always one JSON
    line; ``--json`` is accepted for symmetry with the other tools.
    """
    dims = _size(size)
    if model not in DECODE_MODELS:
        raise ValueError(f"model must be one of {DECODE_MODELS}, got {model!r}")
    if mode not in ("window", "stack"):
        raise ValueError(f"mode must be window or stack, got {mode!r}")
    if any(d % 8 for d in dims):
        raise ValueError(f"size {dims}: every dimension must be a multiple of 8")
    result = run_in_fresh_process(["decode", ",".join(map(str, dims)), model, mode, str(int(chunk_size))],
                                  memory_limit_gb)
    result.setdefault("size", list(dims))
    result.setdefault("model", model)
    print(jsonlib.dumps(result))


def _list(value, cast=str) -> list:
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    return [cast(v) for v in items if str(v).strip()]


def memory(sizes="64,128,256,512", models="caldm,ldm3d,medical_diffusion", steps=2, memory_limit_gb=20.0, timeout=3600,
           out_png="docs/figures/memory_vs_resolution.png", out_jsonl="docs/benchmarks/memory.jsonl", json=False):
    """Peak memory and time of one full inference per model and cubic size (Fig. 3a in miniature).

    Every point runs in a fresh process capped at MEMORY_LIMIT_GB of address space, with random
    weights and the widths of the shipped inference configs at every size, STEPS DDIM steps per
    diffusion stage (memory does not depend on the step count; time does). A model that does not fit
    is recorded as out_of_memory, one that runs past TIMEOUT seconds as timeout. Writes one JSON line
    per point to OUT_JSONL (appended), the figure OUT_PNG and prints a Markdown table (or JSON lines).
    """
    sizes, models = _list(sizes, int), _list(models)
    bad = [m for m in models if m not in SYNTHESIS_MODELS]
    if bad:
        raise ValueError(f"unknown model(s) {bad}; choose from {SYNTHESIS_MODELS}")
    if not sizes or any(s < 8 or s % 8 for s in sizes):
        raise ValueError(f"sizes must be positive multiples of 8, got {sizes}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    from bundle.io import save_png
    from bundle.preview import line_plot

    rows = []
    for s in sizes:
        for m in models:
            r = run_in_fresh_process(["synthesis", f"{s},{s},{s}", m, str(int(steps))], memory_limit_gb, timeout)
            r.update(size=[s, s, s], model=m, ddim_steps=int(steps))
            rows.append(r)
            if json:
                print(jsonlib.dumps(r), flush=True)
            if out_jsonl:
                os.makedirs(os.path.dirname(os.path.abspath(out_jsonl)), exist_ok=True)
                with open(out_jsonl, "a") as f:
                    f.write(jsonlib.dumps(r) + "\n")
    cell = {(r["model"], r["size"][0]): r for r in rows}

    def fmt(r):
        return (f"{r['peak_rss_mb'] / 1024:.2f} GB, {r['seconds']:.0f} s" if r["status"] == "ok"
                else r["status"].replace("_", " "))

    if not json:
        print(f"peak RSS and time of one inference ({int(steps)} DDIM steps per stage; limit {memory_limit_gb} GB)")
        print("| model | " + " | ".join(f"{s}^3" for s in sizes) + " |\n|---|" + "---|" * len(sizes))
        for m in models:
            print(f"| {m} | " + " | ".join(fmt(cell[(m, s)]) for s in sizes) + " |")
        for m in models:
            if m == "caldm" or "caldm" not in models:
                continue
            both = [s for s in sizes if cell[("caldm", s)]["status"] == "ok" and cell[(m, s)]["status"] == "ok"]
            if both:
                s = both[-1]
                print(f"{m} / caldm peak RSS at {s}^3: "
                      f"{cell[(m, s)]['peak_rss_mb'] / cell[('caldm', s)]['peak_rss_mb']:.2f}x")
    if out_png:
        import numpy as np

        series = {m: [cell[(m, s)]["peak_rss_mb"] / 1024 if cell[(m, s)]["status"] == "ok" else float("nan")
                      for s in sizes]
                  for m in models}
        img = line_plot(series, title=f"peak RSS (GB) of one inference, {int(steps)} DDIM steps; gap = did not fit in "
                        f"{memory_limit_gb:g} GB", x_labels=[f"{s}^3" for s in sizes], x_title="volume size")
        save_png(np.asarray(img), out_png)


def drgan(sizes="256,640", modes="infer,train", batch_size=1, overlay=None, memory_limit_gb=20.0,
          out_jsonl="docs/benchmarks/drgan_speed.jsonl"):
    """DR-GAN seconds per image and peak RSS for inference and one training iteration per size (fresh process
    each, random weights, the shipped widths or OVERLAY's); appends JSON lines to OUT_JSONL, prints a table."""
    rows = []
    for s in _list(sizes, int):
        for m in _list(modes):
            args = ["drgan", str(s), m, str(int(batch_size))] + ([overlay] if overlay else [])
            r = run_in_fresh_process(args, memory_limit_gb)
            r.update(size=s, mode=m)
            rows.append(r)
            if out_jsonl:
                with open(out_jsonl, "a") as f:
                    f.write(jsonlib.dumps(r) + "\n")
    print("| size | mode | s / image | peak RSS |\n|---|---|---|---|")
    for r in rows:
        cell = (f"{r['seconds_per_image']:.2f} | {r['peak_rss_mb'] / 1024:.2f} GB" if r["status"] == "ok"
                else f"{r['status']} | -")
        print(f"| {r['size']} | {r['mode']} | {cell} |")


def depth(depths="64,128,256,512", height=256, width=256, steps=2, overlays="", low_memory=False, memory_limit_gb=20.0,
          timeout=3600, out_jsonl="docs/benchmarks/memory_depth.jsonl"):
    """Peak RSS and time of the whole inference workflow (sampling, decoding, speckle, writing the file and its
    preview) for (D, HEIGHT, WIDTH) volumes, one fresh process per D, the shipped weights, STEPS DDIM steps per
    stage (LOW_MEMORY: the workflow's --low_memory true): how the memory of one inference grows with the number
    of B-scans. Appends JSON lines to OUT_JSONL."""
    import tempfile

    rows = []
    for d in _list(depths, int):
        with tempfile.TemporaryDirectory() as out:
            args = ["workflow", f"{d},{int(height)},{int(width)}", str(int(steps)), out, str(overlays),
                    jsonlib.dumps({"low_memory": bool(low_memory)})]
            r = run_in_fresh_process(args, memory_limit_gb, timeout)
        r.update(size=[d, int(height), int(width)], ddim_steps=int(steps), low_memory=bool(low_memory))
        rows.append(r)
        if out_jsonl:
            with open(out_jsonl, "a") as f:
                f.write(jsonlib.dumps(r) + "\n")
    ok = [r for r in rows if r["status"] == "ok"]
    print(f"| D | peak RSS | vs D = {rows[0]['size'][0]} | seconds |\n|---|---|---|---|")
    for r in rows:
        if r["status"] != "ok":
            print(f"| {r['size'][0]} | {r['status']} | - | - |")
            continue
        print(f"| {r['size'][0]} | {r['peak_rss_mb'] / 1024:.2f} GB | {r['peak_rss_mb'] / ok[0]['peak_rss_mb']:.2f}x "
              f"| {r['seconds']:.0f} |")


if __name__ == "__main__":
    fire.Fire({"phantom": phantom, "decode": decode, "memory": memory, "drgan": drgan, "depth": depth})
