"""Inferers MONAI lacks: sliding-slice decoding, the CA-LDM cascade and its sampling stages."""

from .cascade import CascadedLatentDiffusionInferer, LabelConditioner
from .ddim import CorrelatedNoise, WhiteNoise, correlated_noise, ddim_sample, ddim_step, refiner_noise
from .reconstruction import NHAEReconstructionInferer
from .sliding_slice import SlidingSliceDecoder
from .stages import (DecodeSlices, DecodeVolume, DrawSpeckle, GlobalLatentSampler, Quantize, SamplingContext,
                     SliceRefiner, UniaxialSuperResolution, check_output_size, output_size)
from .training import ConcatDiffusionInferer

__all__ = ["CascadedLatentDiffusionInferer", "ConcatDiffusionInferer", "CorrelatedNoise", "DecodeSlices",
           "DecodeVolume", "DrawSpeckle", "GlobalLatentSampler", "LabelConditioner", "NHAEReconstructionInferer",
           "Quantize", "SamplingContext",
           "SliceRefiner", "SlidingSliceDecoder", "UniaxialSuperResolution", "WhiteNoise", "check_output_size",
           "correlated_noise", "ddim_sample", "ddim_step", "output_size", "refiner_noise"]

from ..drgan_synthesis import DRGANInferer  # noqa: E402

__all__ += ["DRGANInferer"]
