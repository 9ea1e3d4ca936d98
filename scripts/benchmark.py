"""Benchmarks that print one JSON line each.

    python scripts/benchmark.py phantom --size 128,128,128 [--repeats 5]
"""

import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fire  # noqa: E402

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
    print(json.dumps(result))


if __name__ == "__main__":
    fire.Fire({"phantom": phantom})
