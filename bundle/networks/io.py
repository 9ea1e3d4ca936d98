"""Loading and saving plain state dicts with errors that say what is wrong and what to do."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..io import atomic_path


def load_weights(network: torch.nn.Module, path: str | os.PathLike, hint: str = "",
                 prefix: str | None = None) -> torch.nn.Module:
    """Load a state dict saved by this bundle into ``network`` (``weights_only=True``), strictly.

    With ``prefix`` (e.g. ``"nhae"``), only the ``prefix.*`` entries of the file are loaded, with the
    prefix stripped: one part of a composed model such as ``models/model.pt`` (``CascadedLDM``).

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
    if prefix:
        state = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
        if not state:
            raise ValueError(f"weights file {path} has no {prefix!r} part" + (f"; {hint}" if hint else ""))
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
        part = f" ({prefix!r} part)" if prefix else ""
        raise ValueError(f"weights file {path}{part} does not match {type(network).__name__} as configured: "
                         + "; ".join(parts))
    network.load_state_dict(state)
    return network


def save_weights(network: torch.nn.Module, path: str | os.PathLike, prefix: str | None = None) -> Path:
    """Atomically write ``network.state_dict()`` to ``path``.

    With ``prefix`` (e.g. ``"refiner"``), ``network`` is one part of a composed model (``CascadedLDM``):
    its tensors replace the ``prefix.*`` entries of the state dict already in ``path`` (created if
    missing) and every other entry is kept, so each training stage updates its part of ``models/model.pt``.
    """
    state = network.state_dict()
    if prefix:
        path = Path(path)
        old = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else {}
        if not isinstance(old, dict):
            raise ValueError(f"weights file {path} does not hold a state dict; cannot update its {prefix!r} part")
        state = {**{k: v for k, v in old.items() if not k.startswith(prefix + ".")},
                 **{f"{prefix}.{k}": v for k, v in state.items()}}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_parts(network: torch.nn.Module, files: dict, hint: str = "") -> torch.nn.Module:
    """Load each part of a composed model from its own file: ``files`` maps a part name (an attribute of
    ``network``, e.g. "nhae") to the weights file whose ``name.*`` entries it takes (``load_weights`` with
    ``prefix``). Label-guided CA-LDM takes its NHAE and speckle model from ``models/model.pt`` and its
    diffusion models from ``models/conditional/label_guided.pt``."""
    for part, path in files.items():
        if not hasattr(network, part):
            raise ValueError(f"{type(network).__name__} has no part {part!r}")
        load_weights(getattr(network, part), path, hint, prefix=part)
    return network
