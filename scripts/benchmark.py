"""Benchmarks that print one JSON line each.

    python scripts/benchmark.py phantom --size 128,128,128 [--repeats 5]
    python scripts/benchmark.py decode --size 256,256,256 --mode stack|window [--model dec_m|slice2d|autoencoderkl3d]
"""

import json as jsonlib
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fire  # noqa: E402

from bundle.benchmarks import DECODE_MODELS, run_in_fresh_process  # noqa: E402
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
    result = run_in_fresh_process(["decode", ",".join(map(str, dims)), model, mode, str(int(chunk_size))], memory_limit_gb)
    result.setdefault("size", list(dims))
    result.setdefault("model", model)
    print(jsonlib.dumps(result))


if __name__ == "__main__":
    fire.Fire({"phantom": phantom, "decode": decode})
