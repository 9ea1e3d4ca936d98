"""Loading and saving plain state dicts with errors that say what is wrong and what to do."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..io import atomic_path


def load_weights(network: torch.nn.Module, path: str | os.PathLike, hint: str = "") -> torch.nn.Module:
    """Load a state dict saved by this bundle into ``network`` (``weights_only=True``).

    Raises FileNotFoundError (with ``hint``, e.g. the command that makes the file) when missing and
    ValueError naming the file and the first mismatched keys / shapes when it does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found" + (f"; {hint}" if hint else ""))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read weights file {path}: {e}") from e
    if not isinstance(state, dict):
        raise ValueError(f"weights file {path} does not hold a state dict")
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs network {tuple(v.shape)}" for k, v in own.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. {wrong[:3]}")
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
        raise ValueError(f"weights file {path} does not match {type(network).__name__} as configured: " + "; ".join(parts))
    network.load_state_dict(state)
    return network


def save_weights(network: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Atomically write ``network.state_dict()`` to ``path``."""
    with atomic_path(path) as tmp:
        torch.save(network.state_dict(), tmp)
    return Path(path)
