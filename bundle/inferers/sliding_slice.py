"""Sliding-slice decoding of CA-LDM (Eq. 1 of the paper): latent stack -> volume, chunk by chunk.

MONAI's ``LatentDiffusionInferer`` decodes the whole latent at once, so its peak memory grows with
D*H*W. This inferer decodes a stack of 2D latents (c, D, h, w) with a
:class:`bundle.networks.MultiSliceDecoder` in chunks and writes each finished chunk into a
preallocated output, so peak memory is the output plus one chunk's activations.

Modes:

- ``window`` (the paper): every B-scan i is the centre slice of Dec_M applied to the k latents
  i-k//2 .. i+k//2 (replicate-padded at the volume ends); equals a naive loop over slices.
- ``stack``: Dec_M runs across the whole stack with replicate padding only at the volume ends.
  Chunks of ``chunk_size`` slices get a halo of ``receptive_radius`` slices on interior sides;
  the adaptors consume the halo (valid convolutions), so the result equals one-shot decoding while
  the full-resolution layers see only about chunk_size + 2 slices.
- ``slice2d``: plain Dec2D slice by slice (no adaptors), the "w/o Dec_M" ablation.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer

from ..networks.nhae import MultiSliceDecoder

MODES = ("window", "stack", "slice2d")


class SlidingSliceDecoder(Inferer):
    """Decode (c, D, h, w) or (1, c, D, h, w) latents into a (1, D, H, W) volume on ``output_device``.

    Args:
        mode: "stack" (default), "window" or "slice2d".
        chunk_size: output B-scans per chunk ("stack", "slice2d") or windows per batch ("window").
        window: k of the "window" mode (odd).
        output_dtype: dtype of the preallocated output.
        output_device: where the output lives (default CPU, so GPU memory holds only one chunk).
        progress: show a tqdm bar over chunks.
    """

    def __init__(self, mode: str = "stack", chunk_size: int = 16, window: int = 5,
                 output_dtype: torch.dtype = torch.float32, output_device: str | torch.device = "cpu",
                 progress: bool = False):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window must be a positive odd number, got {window}")
        self.mode, self.chunk_size, self.window = mode, int(chunk_size), int(window)
        self.output_dtype, self.output_device, self.progress = output_dtype, torch.device(output_device), progress

    def _check(self, latents: torch.Tensor, network: MultiSliceDecoder) -> torch.Tensor:
        if not isinstance(network, MultiSliceDecoder):
            raise TypeError(f"network must be a MultiSliceDecoder, got {type(network).__name__}")
        if latents.ndim == 5:
            if latents.shape[0] != 1:
                raise ValueError(f"decode one volume at a time, got a batch of {latents.shape[0]}")
            latents = latents[0]
        if latents.ndim != 4:
            raise ValueError(f"latents must be (c, D, h, w), got shape {tuple(latents.shape)}")
        if latents.shape[0] != network.latent_channels:
            raise ValueError(f"latents have {latents.shape[0]} channels but the decoder expects "
                             f"{network.latent_channels}")
        if not torch.isfinite(latents).all():
            raise ValueError("latents contain NaN or infinite values")
        return latents

    def _chunks(self, n: int):
        rng = range(0, n, self.chunk_size)
        if self.progress:
            from tqdm import tqdm

            rng = tqdm(rng, desc=f"decode ({self.mode})", unit="chunk")
        return rng

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, post: Any = None, **kwargs: Any) -> torch.Tensor:
        """``post``: optional callable applied to every decoded chunk (C, n, H, W), in order along D, before
        it is stored; the output takes the dtype it returns (e.g. speckle and uint8 quantisation per chunk,
        so that no float copy of the whole volume is ever held)."""
        z = self._check(inputs, network)
        device = next(network.parameters()).device
        z = z.to(device)
        D = z.shape[1]
        out = None
        for a in self._chunks(D):
            b = min(a + self.chunk_size, D)
            piece = self._decode_chunk(z, a, b, network)[0]  # (C, b - a, H, W)
            piece = piece.to(self.output_device, self.output_dtype) if post is None else post(piece)
            if out is None:
                out = torch.empty((piece.shape[0], D, *piece.shape[2:]), dtype=piece.dtype, device=piece.device)
            out[:, a:b] = piece
        return out

    def _decode_chunk(self, z: torch.Tensor, a: int, b: int, net: MultiSliceDecoder) -> torch.Tensor:
        D = z.shape[1]
        if self.mode == "slice2d":
            return net(z[None, :, a:b], use_adaptors=False)
        if self.mode == "stack":
            r = net.receptive_radius
            lo, hi = max(a - r, 0), min(b + r, D)
            dec = net(z[None, :, lo:hi], pad_front=lo == 0, pad_back=hi == D)
            start = lo if lo == 0 else lo + r  # first slice the decoder returned
            return dec[:, :, a - start : b - start]
        half = self.window // 2
        idx = torch.arange(a, b, device=z.device)[:, None] + torch.arange(-half, half + 1, device=z.device)[None]
        windows = z[:, idx.clamp(0, D - 1)]  # (c, n, k, h, w): replicate padding at the volume ends
        dec = net(windows.permute(1, 0, 2, 3, 4))  # (n, C, k, H, W)
        return dec[:, :, half].transpose(0, 1)[None]
