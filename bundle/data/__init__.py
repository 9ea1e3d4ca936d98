"""Phantom generators, dataset readers and file helpers."""

from .oct_phantom import CATEGORIES, LAYER_NAMES, SURFACE_NAMES, OCTPhantom, generate_oct_phantom

__all__ = ["CATEGORIES", "LAYER_NAMES", "SURFACE_NAMES", "OCTPhantom", "generate_oct_phantom"]
from .datalist import load_checked_datalist  # noqa: E402
from .fundus_phantom import GRADES, LESIONS, FundusPhantom, generate_fundus_phantom  # noqa: E402

__all__ += ["GRADES", "LESIONS", "FundusPhantom", "generate_fundus_phantom", "load_checked_datalist"]
