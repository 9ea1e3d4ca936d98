"""OCT / fundus transforms MONAI lacks. The standard chains (load, scale, resize, flip, crop) are
declared in ``configs/train.json`` from MONAI core transforms."""

from .checks import CheckVolumed

__all__ = ["CheckVolumed"]
from .fundus import CheckSquared, to_rgb  # noqa: E402

__all__ += ["CheckSquared", "to_rgb"]
from .synthesis import SaveSyntheticd, SynthesisRequestd, save_volume, to_uint8, write_volume  # noqa: E402

__all__ += ["SaveSyntheticd", "SynthesisRequestd", "save_volume", "to_uint8", "write_volume"]
from .labels import LabelGuidedRequestd, PhantomLabelsd, SaveSyntheticPaird  # noqa: E402

__all__ += ["LabelGuidedRequestd", "PhantomLabelsd", "SaveSyntheticPaird"]
from .drgan import DRGANRequestd, MaskMapd, SaveDRGANPaird, check_mask_map, read_mask_map  # noqa: E402
__all__ += ["DRGANRequestd", "MaskMapd", "SaveDRGANPaird", "check_mask_map", "read_mask_map"]
