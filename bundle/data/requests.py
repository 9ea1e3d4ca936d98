"""The synthesis request dataset of ``configs/inference.json``: one item per volume."""

from __future__ import annotations

from ..io import check_num_samples


def synthesis_requests(num_samples: int, seed: int = 0) -> list[dict]:
    """``num_samples`` requests with seeds ``seed``, ``seed + 1``, ...: ``[{"seed": s}, ...]``.

    Each volume keeps its own seed, so any subset of the requests (a rerun, a shard) gives the same
    volumes as the whole list."""
    n = check_num_samples(num_samples)
    if isinstance(seed, bool) or int(seed) != seed:
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return [{"seed": int(seed) + i} for i in range(n)]
