"""Network definitions shared between standalone configs.

``configs/inference.json`` holds every CA-LDM ``*_def``. MONAI Label's ``BundleTrainTask`` reads
``configs/train.json`` alone, and MONAI's ``%file#id`` macros resolve file paths against the working
directory (not the bundle), so ``train.json`` takes its ``network_def`` from ``inference.json``
through this function instead of a second copy of the definitions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from monai.bundle import ConfigParser


def load_definition(bundle_root: str | os.PathLike, id: str = "network_def", config: str = "inference.json",
                    overrides: Mapping | None = None):
    """Instantiate config item ``id`` of ``bundle_root/configs/config`` (with ``overrides`` applied)."""
    path = os.path.join(os.fspath(bundle_root), "configs", config)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: bundle_root must be the bundle's folder, got {bundle_root}")
    parser = ConfigParser()
    parser.read_config(path)
    parser["bundle_root"] = os.fspath(bundle_root)
    for k, v in (overrides or {}).items():
        parser[k] = v
    if id not in parser:
        raise KeyError(f"{path} has no config item {id!r}")
    return parser.get_parsed_content(id)
