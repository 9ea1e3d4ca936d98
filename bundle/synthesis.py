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


def output_size(inferer) -> tuple[int, int, int]:
    """(D, H, W) an inferer produces: its ``output_size`` if it has one, else 8x its latent shape (CA-LDM)."""
    if hasattr(inferer, "output_size"):
        return tuple(inferer.output_size)
    return tuple(int(s) * 8 for s in inferer.latent_shape[1:])


def _check_request(inferer, num_samples, image_size) -> int:
    """Validate ``num_samples`` and that ``image_size`` is what the inferer produces; returns num_samples."""
    num_samples = check_num_samples(num_samples)
    size, expected = check_image_size(image_size), output_size(inferer)
    if size != expected:
        raise ValueError(f"image_size {size} does not match the latent shape {inferer.latent_shape} (-> {expected})")
    return num_samples


def synthesize(inferer, nhae, diffusion3d, refiner, num_samples: int, seed: int, output_dir: str | os.PathLike,
               spacing: Sequence[float], image_size: Sequence[int], prefix: str = "synthetic_oct") -> list[dict]:
    """Write ``num_samples`` volumes (seeds seed, seed+1, ...) as uint8 NIfTI plus a preview PNG each.

    Everything is validated before the first sample; files are written atomically.
    Returns one record per sample: file names, seed and seconds per volume.
    """
    num_samples = _check_request(inferer, num_samples, image_size)
    out = check_output_dir(output_dir)
    for m in (nhae, diffusion3d, refiner):
        if m is not None:
            m.eval()
    records = []
    for i in range(int(num_samples)):
        s = int(seed) + i
        t0 = time.perf_counter()
        vol = inferer.sample(nhae, diffusion3d, refiner, seed=s)
        seconds = time.perf_counter() - t0
        records.append(dict(write_volume(vol, out, f"{prefix}_seed{s}", spacing), seed=s, seconds=round(seconds, 2)))
        print(f"wrote {out / records[-1]['image']} ({seconds:.1f} s)")
    return records


def write_volume(vol, out: Path, name: str, spacing: Sequence[float]) -> dict:
    """(1, D, H, W) tensor in [-1, 1] -> ``out/name.nii.gz`` (uint8, spacing) and ``out/name_preview.png``, atomically."""
    u8 = np.round((vol[0].float().cpu().numpy() + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    save_nifti(u8, out / f"{name}.nii.gz", spacing)
    save_png(volume_preview(u8), out / f"{name}_preview.png")
    return {"image": f"{name}.nii.gz", "preview": f"{name}_preview.png"}


def synthesize_ablations(inferer, nhae, diffusion3d, refiner, num_samples: int, seed: int, output_dir: str | os.PathLike,
                         spacing: Sequence[float], image_size: Sequence[int], prefix: str = "synthetic_oct") -> list[dict]:
    """The paper's ablation rows from one pass per seed (``CascadedLatentDiffusionInferer.sample_ablations``):
    writes ``output_dir/{nhae_diff3d,diff_slice,caldm}/PREFIX_seedS.nii.gz`` (+ previews)."""
    num_samples = _check_request(inferer, num_samples, image_size)
    if refiner is None:
        raise ValueError("the ablations need the refiner (use_refiner must be true)")
    out = check_output_dir(output_dir)
    dirs = {k: check_output_dir(out / k) for k in ("nhae_diff3d", "diff_slice", "caldm")}
    for m in (nhae, diffusion3d, refiner):
        m.eval()
    records = []
    for i in range(num_samples):
        s = int(seed) + i
        t0 = time.perf_counter()
        vols = inferer.sample_ablations(nhae, diffusion3d, refiner, seed=s)
        seconds = time.perf_counter() - t0
        for k, v in vols.items():
            records.append(dict(write_volume(v, dirs[k], f"{prefix}_seed{s}", spacing), variant=k, seed=s))
        print(f"wrote seed {s} for {list(vols)} ({seconds:.1f} s)")
    return records

