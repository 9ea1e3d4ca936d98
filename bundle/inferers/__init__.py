"""Inferers MONAI lacks: sliding-slice decoding and the CA-LDM cascade."""

from .sliding_slice import SlidingSliceDecoder

__all__ = ["SlidingSliceDecoder"]
from .reconstruction import NHAEReconstructionInferer  # noqa: E402

__all__ += ["NHAEReconstructionInferer"]
from .cascade import CascadedLatentDiffusionInferer, ConcatDiffusionInferer  # noqa: E402

__all__ += ["CascadedLatentDiffusionInferer", "ConcatDiffusionInferer"]
from .baselines import LatentDiffusion3DInferer  # noqa: E402

__all__ += ["LatentDiffusion3DInferer"]
