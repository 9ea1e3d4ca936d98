"""Sample fundus photographs with a trained DCGAN or VAE (``configs/inference_dcgan.json``, ``inference_vae.json``)."""

from __future__ import annotations

import os

import torch

from .io import check_num_samples, check_output_dir, save_json, save_png
from .preview import image_grid
from .transforms.synthesis import to_uint8


@torch.no_grad()
def sample_fundus(generator: torch.nn.Module, num_samples: int, seed: int, output_dir: str | os.PathLike, prefix: str,
                  latent_size: int, discriminator: torch.nn.Module | None = None, min_score: float | None = None,
                  batch_size: int = 64, max_draws: int | None = None, nrow: int = 8, prior=None) -> dict:
    """Write ``num_samples`` PNGs ``{prefix}_{i:04d}.png`` and ``{prefix}_grid.png`` into ``output_dir``.

    Latents come from a CPU generator seeded with ``seed``, so a seed gives the same images on any
    device. With ``discriminator`` and ``min_score`` (the DCGAN paper keeps D(G(z)) >= 0.76),
    samples are drawn in batches until ``num_samples`` pass the filter or ``max_draws`` (default
    50 x num_samples) is reached; the summary (``{prefix}_summary.json``, also returned) says how
    many were drawn and kept, and the run fails clearly if too few pass. ``prior`` (e.g. a fitted
    ``GaussianMixturePrior``) draws the latents instead of N(0, I).
    """
    num_samples = check_num_samples(num_samples)
    if min_score is not None and discriminator is None:
        raise ValueError("min_score needs the discriminator's weights (discriminator_weights)")
    if min_score is not None and not 0.0 <= float(min_score) < 1.0:
        raise ValueError(f"min_score must be in [0, 1), got {min_score}")
    out = check_output_dir(output_dir)
    max_draws = int(max_draws or 50 * num_samples)
    device = next(generator.parameters()).device
    generator.eval()
    gen = torch.Generator().manual_seed(int(seed))
    kept, drawn = [], 0
    while sum(len(k) for k in kept) < num_samples and drawn < max_draws:
        z = prior.sample(batch_size, gen) if prior is not None else torch.randn(batch_size, latent_size, generator=gen)
        x = generator.generate(z.to(device))
        drawn += len(x)
        if min_score is not None:
            s = torch.sigmoid(discriminator.eval()(x)).cpu()
            x = x[(s >= float(min_score)).to(x.device)]
        kept.append(x.cpu())
    accepted = sum(len(k) for k in kept)
    images = torch.cat(kept)[:num_samples]
    if len(images) < num_samples:
        raise RuntimeError(f"only {len(images)} of {drawn} samples reached D(G(z)) >= {min_score}; "
                           "lower min_score or raise max_draws")
    u8 = to_uint8(images).transpose(0, 2, 3, 1)
    files = []
    for i, img in enumerate(u8):
        name = f"{prefix}_{i:04d}.png"
        save_png(img, out / name)
        files.append(name)
    save_png(image_grid(images, nrow=nrow), out / f"{prefix}_grid.png")
    summary = {"files": files, "grid": f"{prefix}_grid.png", "seed": int(seed), "drawn": drawn, "kept": len(images),
               "min_score": min_score}
    if min_score is not None:
        summary["acceptance_rate"] = round(accepted / drawn, 4)
    save_json(summary, out / f"{prefix}_summary.json")
    print(f"wrote {len(files)} images to {out} (drew {drawn}"
          + (f", kept those with D(G(z)) >= {min_score})" if min_score is not None else ")"))
    return summary


def latent_prior(kind: str, num_components: int, latent_size: int, path: str | os.PathLike):
    """The VAE's sampling prior: None for "normal" (N(0, I)), or for "mixture" the fitted
    ``GaussianMixturePrior`` stored at ``path``."""
    from .networks import GaussianMixturePrior, load_weights

    if kind == "normal":
        return None
    if kind != "mixture":
        raise ValueError(f"prior must be 'normal' or 'mixture', got {kind!r}")
    hint = "fit it with configs/fit_vae_prior.json (docs/README.md) or pass --prior normal"
    return load_weights(GaussianMixturePrior(num_components, latent_size), path, hint)
