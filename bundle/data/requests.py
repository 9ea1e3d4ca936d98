"""The synthesis request dataset of ``configs/inference.json``: one item per volume."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..io import check_num_samples, check_output_ext, check_seed


def synthesis_requests(num_samples: int, seed: int = 0, skip_done: str | os.PathLike | None = None,
                       prefix: str = "synthetic_oct", ext: str = ".nii.gz") -> list[dict]:
    """``num_samples`` requests with seeds ``seed``, ``seed + 1``, ...: ``[{"seed": s}, ...]``.

    Each volume keeps its own seed, so any subset of the requests (a rerun, a shard) gives the same
    volumes as the whole list. With ``skip_done`` (the output folder), requests whose volume
    ``{prefix}_seed{s}{ext}`` is already there are left out: files are written atomically, so an
    existing file is a complete one and a rerun after an interruption does only what is missing."""
    n = check_num_samples(num_samples)
    seed = check_seed(seed)
    requests = [{"seed": int(seed) + i} for i in range(n)]
    if skip_done:
        ext = check_output_ext(ext)
        done = lambda r: os.path.isfile(os.path.join(skip_done, f"{prefix}_seed{r['seed']}{ext}"))  # noqa: E731
        requests = [r for r in requests if not done(r)]
    return requests


def shard_requests(requests: Sequence[dict], rank: int, world_size: int, num_samples: int | None = None) -> list[dict]:
    """This rank's share of ``requests`` (round robin: rank r takes items r, r + W, ...), for generation with
    ``torchrun``; the union over ranks is the whole list. Refuses fewer requested volumes than ranks."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size} processes")
    if num_samples is not None and int(num_samples) < world_size:
        raise ValueError(f"num_samples {num_samples} is smaller than the number of processes ({world_size}): "
                         "every process needs at least one volume; request more volumes or start fewer processes")
    return list(requests[rank::world_size])
