"""Tiny network sizes shared by the tests (random weights, CPU, seconds per run)."""

from pathlib import Path

import torch
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "image_size": [16, 32, 32], "ddim_steps": 2, "slice_batch": 8, "decoder_chunk": 8, "device": "$torch.device('cpu')",
    "nhae_def#channels_2d": [8, 8, 16, 16], "nhae_def#channels_3d": [8, 8, 16], "nhae_def#sr_channels": 8,
    "nhae_def#num_res_blocks": 1, "nhae_def#norm_num_groups": 4,
    "diffusion3d_def#channels": [8, 16], "diffusion3d_def#attention_levels": [False, True],
    "diffusion3d_def#num_head_channels": 8, "diffusion3d_def#norm_num_groups": 4, "diffusion3d_def#num_res_blocks": 1,
    "refiner_def#channels": [8, 16], "refiner_def#attention_levels": [False, True], "refiner_def#num_head_channels": 8,
    "refiner_def#norm_num_groups": 4, "refiner_def#num_res_blocks": 1,
    "autoencoderkl3d_def#channels": [8, 8, 16, 16], "autoencoderkl3d_def#norm_num_groups": 4,
    "use_speckle": False,
}
AE3D_TINY = {"_target_": "AutoencoderKL", "spatial_dims": 3, "in_channels": 1, "out_channels": 1,
             "channels": [8, 8, 16, 16], "latent_channels": 4, "num_res_blocks": 1, "norm_num_groups": 4,
             "attention_levels": [False] * 4, "with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False}


def parser(configs=("inference.json",), **over) -> ConfigParser:
    """The configs (names under configs/) with TINY and ``over`` applied."""
    p = ConfigParser()
    p.read_config([str(ROOT / "configs" / c) for c in configs])
    for k, v in {**TINY, **over}.items():
        p[k] = v
    return p


def perturb(net: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """MONAI zero-initialises a diffusion UNet's output layer; random test weights must predict something."""
    with torch.no_grad():
        for w in net.parameters():
            w.add_(std * torch.randn_like(w))
    return net


def messages(e) -> str:
    """An exception and its causes / contexts, joined (config errors wrap the original one)."""
    out = []
    while e is not None:
        out.append(str(e))
        e = e.__cause__ or e.__context__
    return " | ".join(out)
