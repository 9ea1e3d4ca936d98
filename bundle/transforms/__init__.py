"""OCT / fundus transforms MONAI lacks. The standard chains (load, scale, resize, flip, crop) are
declared in ``configs/common.json`` from MONAI core transforms."""

from .checks import CheckVolumed

__all__ = ["CheckVolumed"]
from .fundus import LoadFundusd  # noqa: E402

__all__ += ["LoadFundusd"]
