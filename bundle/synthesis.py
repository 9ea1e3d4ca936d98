"""The main job: sample volumes with the cascade and write NIfTI + preview PNGs (``configs/inference.json``)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .io import save_nifti, save_png
from .preview import volume_preview


def check_output_dir(output_dir: str | os.PathLike) -> Path:
    """Create ``output_dir`` if needed and prove it is writable, before any sampling starts."""
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"output_dir {out} is not writable: {e}") from e
    return out


def check_image_size(image_size: Sequence[int], multiple: int = 8) -> tuple[int, int, int]:
    size = tuple(int(s) for s in image_size)
    if len(size) != 3 or any(s <= 0 or s % multiple for s in size):
        raise ValueError(f"image_size {tuple(image_size)} cannot be synthesized: need three positive multiples of {multiple}")
    return size


def check_num_samples(num_samples) -> int:
    if isinstance(num_samples, bool) or int(num_samples) != num_samples or int(num_samples) < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    return int(num_samples)


def synthesize(inferer, nhae, diffusion3d, refiner, num_samples: int, seed: int, output_dir: str | os.PathLike,
               spacing: Sequence[float], image_size: Sequence[int], prefix: str = "synthetic_oct") -> list[dict]:
    """Write ``num_samples`` volumes (seeds seed, seed+1, ...) as uint8 NIfTI plus a preview PNG each.

    Everything is validated before the first sample; files are written atomically.
    Returns one record per sample: file names, seed and seconds per volume.
    """
    num_samples = check_num_samples(num_samples)
    size = check_image_size(image_size)
    expected = (inferer.latent_shape[1] * 8, inferer.latent_shape[2] * 8, inferer.latent_shape[3] * 8)
    if size != expected:
        raise ValueError(f"image_size {size} does not match the latent shape {inferer.latent_shape} (x8 -> {expected})")
    out = check_output_dir(output_dir)
    for m in (nhae, diffusion3d, refiner):
        if m is not None:
            m.eval()
    records = []
    for i in range(int(num_samples)):
        s = int(seed) + i
        t0 = time.perf_counter()
        vol = inferer.sample(nhae, diffusion3d, refiner, seed=s)[0].float().cpu().numpy()
        seconds = time.perf_counter() - t0
        u8 = np.round((vol + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
        name = f"{prefix}_seed{s}"
        save_nifti(u8, out / f"{name}.nii.gz", spacing)
        save_png(volume_preview(u8), out / f"{name}_preview.png")
        records.append({"image": f"{name}.nii.gz", "preview": f"{name}_preview.png", "seed": s, "seconds": round(seconds, 2)})
        print(f"wrote {out / (name + '.nii.gz')} ({seconds:.1f} s)")
    return records

