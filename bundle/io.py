"""Atomic file writing and NIfTI / PNG / JSON helpers shared by scripts, configs and handlers.

Every writer goes through :func:`atomic_path`: data land in a hidden temporary file in the target
folder and are renamed into place only when complete, so an interrupted run never leaves a file
that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np


def as_bool(value, name: str) -> bool:
    """A config switch as a bool. The bundle CLI (python-fire) passes ``--flag false`` as the string
    "false", which Python would treat as true; accept true/false/yes/no/1/0 in any case, refuse the rest."""
    if isinstance(value, (bool, int)) and not isinstance(value, float):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _split_ext(name: str) -> tuple[str, str]:
    for ext in (".nii.gz", ".tar.gz"):
        if name.endswith(ext):
            return name[: -len(ext)], ext
    stem, ext = os.path.splitext(name)
    return stem, ext


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same extension); rename it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, ext = _split_ext(path.name)
    tmp = path.with_name(f".{stem}.tmp{os.getpid()}{ext}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


OUTPUT_EXTS = (".nii.gz", ".nii", ".nrrd", ".mha")


def check_output_ext(ext: str) -> str:
    """A volume file extension the bundle writes (leading dot added when missing)."""
    ext = str(ext) if str(ext).startswith(".") else f".{ext}"
    if ext not in OUTPUT_EXTS:
        raise ValueError(f"output_ext must be one of {OUTPUT_EXTS}, got {ext!r}")
    return ext


def spacing_affine(spacing: Sequence[float]) -> np.ndarray:
    """4 x 4 affine with ``spacing`` (mm, one value per stored axis, up to three) on the diagonal."""
    affine = np.eye(4)
    affine[: len(spacing), : len(spacing)] = np.diag([float(s) for s in spacing])
    return affine


def save_nifti(array: np.ndarray, path: str | os.PathLike, spacing: Sequence[float] | None = None,
               affine: np.ndarray | None = None) -> Path:
    """Write ``array`` as NIfTI (axes stored as given) with ``affine``, or a diagonal affine from ``spacing``
    (mm); the units are mm whenever either is given."""
    import nibabel as nib

    if affine is None:
        affine = np.eye(4) if spacing is None else spacing_affine(spacing)
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    if spacing is not None or affine is not None:
        img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def load_nifti(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read a NIfTI file: (array as stored, voxel spacing). Raises ValueError naming the file if unreadable."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        return np.asarray(img.dataobj), tuple(float(z) for z in img.header.get_zooms())
    except FileNotFoundError:
        raise
    except Exception as e:  # nibabel raises several types for corrupt files
        raise ValueError(f"cannot read NIfTI file {path}: {e}") from e


def save_json(obj, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    return Path(path)


def save_png(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
    return Path(path)


def check_output_dir(output_dir: str | os.PathLike) -> Path:
    """Create ``output_dir`` if needed and prove it is writable, before any work starts."""
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"output_dir {out} is not writable: {e}") from e
    return out


def check_seed(seed) -> int:
    """``seed`` as an int; booleans and non-integers raise ValueError."""
    if isinstance(seed, bool) or int(seed) != seed:
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return int(seed)


def check_num_samples(num_samples) -> int:
    """A positive integer number of samples (the CLI may pass it as a string)."""
    try:
        n = (int(num_samples) if not isinstance(num_samples, bool) and float(num_samples) == int(float(num_samples))
             else None)
    except (TypeError, ValueError):
        n = None
    if n is None or n < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    return n


def return_freed_memory(threshold_mb: float = 1.0) -> bool:
    """Serve every allocation above ``threshold_mb`` with its own memory map (glibc ``mallopt``), so that a
    large tensor's memory goes back to the system when it is freed. glibc otherwise raises that threshold as
    large blocks are freed and keeps them in a heap that fragments: the peak memory of one CA-LDM inference
    then grows with the number of B-scans (1.18 GB at D = 64 to 1.40 GB at D = 256, 256 x 256 B-scans) although
    no stage holds more than a chunk; with it, 0.96 and 0.98 GB, but every large allocation costs a fresh map
    (a 128^3 volume takes 2.3x as long), hence ``--low_memory true`` only (docs/benchmarks/scaling.md).
    Returns False (and does nothing) where the C library is not glibc."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_mmap_threshold = -3
        return bool(libc.mallopt(m_mmap_threshold, int(float(threshold_mb) * (1 << 20))))
    except (OSError, AttributeError):
        return False
