"""Phantom generators, dataset readers and file helpers."""

from .oct_phantom import CATEGORIES, LAYER_NAMES, SURFACE_NAMES, OCTPhantom, generate_oct_phantom

__all__ = ["CATEGORIES", "LAYER_NAMES", "SURFACE_NAMES", "OCTPhantom", "generate_oct_phantom"]
from .datalist import datalist_split, load_checked_datalist, require_items  # noqa: E402
from .fundus_phantom import GRADES, LESIONS, FundusPhantom, generate_fundus_phantom  # noqa: E402

__all__ += ["GRADES", "LESIONS", "FundusPhantom", "generate_fundus_phantom", "load_checked_datalist",
            "datalist_split", "require_items"]
from .requests import shard_requests, synthesis_requests  # noqa: E402

__all__ += ["shard_requests", "synthesis_requests"]
from . import label_latents, labels  # noqa: E402

__all__ += ["label_latents", "labels"]
from .decathlon import find_label_sets, label_first_requests, label_requests, write_decathlon_index  # noqa: E402

__all__ += ["find_label_sets", "label_first_requests", "label_requests", "write_decathlon_index"]
