"""Precomputed NHAE latents for the diffusion stages (computed once, not per training step).

For each training volume x (and its flips along D and W) the file stores
- ``z``: scaled 3D latent, scale_factor * E_3D(x).mu, (N, c, D/8, H/8, W/8) -> Diff_3D data;
- ``cond``: slice_scale_factor * f_sr(E_3D(x).mu), (N, c, D, H/8, W/8) -> refiner condition;
- ``target``: slice_scale_factor * Enc2D(x_i).mu, (N, c, D, H/8, W/8) -> refiner data (z_hr).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch

from ..io import as_bool, atomic_path


@torch.no_grad()
def precompute_latents(network, datalist: Sequence[dict], transform: Callable, path: str | os.PathLike,
                       flips: bool = True, image_key: str = "image", volume_only: bool = False) -> dict:
    """Encode every volume of ``datalist`` (loaded with ``transform``) and save the latents to ``path``.

    ``volume_only`` stores ``z`` alone (Diff_3D data, about 5x faster: no Enc2D pass over every B-scan).
    """
    flips, volume_only = as_bool(flips, "use_flips"), as_bool(volume_only, "volume_only")
    device = prepare_encoder(network, datalist)
    out: dict[str, list] = {"z": []} if volume_only else {"z": [], "cond": [], "target": []}
    for xv in _training_volumes(datalist, transform, device, flips, image_key):
        for k, v in encode_latents(network, xv, volume_only).items():
            out[k].append(v)
    return save_latents(out, network, path)


def prepare_encoder(network, datalist: Sequence[dict]) -> torch.device:
    """Check that there is data and that the NHAE carries its latent scale factors; eval mode; its device."""
    if not datalist:
        raise ValueError("cannot precompute latents: the training datalist is empty")
    if network.scale_factor.item() == 1.0 and network.slice_scale_factor.item() == 1.0:
        raise ValueError("the NHAE weights carry no latent scale factors; "
                         "train NHAE stage 2 (configs/stages/nhae.json) first")
    network.eval()
    return next(network.parameters()).device


def encode_latents(network, xv: torch.Tensor, volume_only: bool = False) -> dict[str, torch.Tensor]:
    """The scaled latents of one volume (1, 1, D, H, W): ``z``, and unless ``volume_only`` ``cond`` and ``target``."""
    s3, s2 = network.scale_factor.item(), network.slice_scale_factor.item()
    mu, _ = network.encode_volume(xv)
    out = {"z": (mu * s3).cpu()}
    if not volume_only:
        out["cond"] = (network.f_sr(mu) * s2).cpu()
        out["target"] = (network.encode_slices(xv) * s2).cpu()
    return out


def save_latents(out: dict[str, list], network, path: str | os.PathLike) -> dict:
    """Concatenate the per-volume lists of ``out`` and save them with the NHAE's scale factors."""
    result = {k: torch.cat(v) for k, v in out.items()}
    result["scale_factor"] = torch.tensor(network.scale_factor.item())
    result["slice_scale_factor"] = torch.tensor(network.slice_scale_factor.item())
    return _save(result, path)


def _training_volumes(datalist: Sequence[dict], transform: Callable, device, flips: bool, image_key: str):
    """Each volume of ``datalist`` as (1, 1, D, H, W) on ``device``, followed by its flips along D, W and both."""
    from tqdm import tqdm

    variants = [(), (2,), (4,), (2, 4)] if flips else [()]
    for item in tqdm(datalist, desc="latents", unit="vol", disable=os.environ.get("RETINA_NO_PROGRESS") == "1"):
        x = transform(dict(item))[image_key]
        x = (x.as_tensor() if hasattr(x, "as_tensor") else x)[None].to(device)
        for dims in variants:
            yield torch.flip(x, dims) if dims else x


def _save(result: dict, path: str | os.PathLike) -> dict:
    with atomic_path(path) as tmp:
        torch.save(result, tmp)
    return result


BASELINES = ("ldm3d", "medical_diffusion")


@torch.no_grad()
def precompute_baseline_latents(baseline: str, autoencoder, datalist: Sequence[dict], transform: Callable,
                                path: str | os.PathLike, flips: bool = True, image_key: str = "image") -> dict:
    """Training latents of a Table-1 baseline, scaled to unit std; saves {"z", "scale_factor"} to ``path``.

    ``baseline`` "ldm3d": ``autoencoder`` is the NHAE and z = Enc2D of every B-scan stacked along D,
    (N, c, D, H/8, W/8); "medical_diffusion": ``autoencoder`` is a MONAI 3D ``AutoencoderKL`` and
    z = its encoder mean, (N, c, D/8, H/8, W/8).
    """
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if not datalist:
        raise ValueError("cannot precompute latents: the training datalist is empty")
    autoencoder.eval()
    device = next(autoencoder.parameters()).device
    encode = autoencoder.encode_slices if baseline == "ldm3d" else (lambda xv: autoencoder.encode(xv)[0])
    z = torch.cat([encode(xv).cpu() for xv in _training_volumes(datalist, transform, device, flips, image_key)])
    scale = 1.0 / z.std().item()
    return _save({"z": z * scale, "scale_factor": torch.tensor(scale)}, path)


def ensure_baseline_latents(baseline: str, autoencoder, datalist: Sequence[dict], transform: Callable,
                            path: str | os.PathLike, flips: bool = True) -> str:
    """Precompute the baseline's latents unless ``path`` exists (delete it after retraining the autoencoder)."""
    if not os.path.isfile(path):
        precompute_baseline_latents(baseline, autoencoder, datalist, transform, path, flips)
    return str(path)


def load_latents(path: str | os.PathLike) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"latent file {path} not found; run configs/stages/latents.json first (docs/README.md)")
    return torch.load(path, map_location="cpu", weights_only=True)


def volume_items(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[dict]:
    """Diff_3D (and baseline diffusion) training items: [{"image": z (c, D', H', W')}, ...] from one latent file
    or several (saved with the same scale factor, e.g. a full file plus ``volume_only`` files of more volumes)."""
    return [{"image": z} for lat in load_latent_files(path) for z in lat["z"]]


def load_latent_files(path: str | os.PathLike | Sequence[str | os.PathLike],
                      load: Callable | None = None) -> list[dict]:
    """Several latent files (``load``: ``load_latents`` or a stricter reader) that must share one ``scale_factor``,
    i.e. were encoded with the same NHAE weights; a ValueError names the file that differs."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        raise ValueError("no latent files given")
    lats = [(load or load_latents)(p) for p in paths]
    for p, lat in zip(paths[1:], lats[1:]):
        if not torch.isclose(lat["scale_factor"], lats[0]["scale_factor"]):
            raise ValueError(f"latent file {p} has scale_factor {float(lat['scale_factor']):.4f}, {paths[0]} has "
                             f"{float(lats[0]['scale_factor']):.4f}: recompute both with the same NHAE weights")
    return lats


def latent_scale_factor(path: str | os.PathLike) -> float:
    """The ``scale_factor`` a latent file was saved with."""
    return float(load_latents(path)["scale_factor"])


def slice_items(path: str | os.PathLike, neighbours: int = 0) -> list[dict]:
    """Refiner training items, one per B-scan: {"image": z_hr,i (c, h, w), \
"cond": f_sr(z)_{i-n..i+n} (c(2n+1), h, w)}."""
    lat = load_latents(path)
    cond, target = lat["cond"], lat["target"]
    items = []
    for v in range(cond.shape[0]):
        c = neighbour_condition(cond[v], neighbours)
        items += [{"image": target[v, :, i], "cond": c[i]} for i in range(cond.shape[2])]
    return items


def neighbour_condition(cond: torch.Tensor, neighbours: int) -> torch.Tensor:
    """(c, D, h, w) -> (D, c(2n+1), h, w): slice i with its n neighbours on each side (replicated at the ends)."""
    c, d = cond.shape[:2]
    idx = (torch.arange(d)[:, None] + torch.arange(-neighbours, neighbours + 1)[None]).clamp(0, d - 1)
    return cond[:, idx].permute(1, 2, 0, 3, 4).reshape(d, c * (2 * neighbours + 1), *cond.shape[2:])
