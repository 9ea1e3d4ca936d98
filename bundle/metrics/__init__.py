"""Metrics MONAI lacks: slice jitter, SWD, set-level Fréchet distance on domain features, diversity."""

from .reconstruction import evaluate_reconstruction, slice_jitter

__all__ = ["evaluate_reconstruction", "slice_jitter"]
from .generative import frechet_distance, laplacian_pyramid, mean_pairwise_distance, sliced_wasserstein_distance, swd  # noqa: E402

__all__ += ["frechet_distance", "laplacian_pyramid", "mean_pairwise_distance", "sliced_wasserstein_distance", "swd"]
from .volumes import inter_slices, intra_slices, kernel_distance, total_variation, vessel_shadow_correlation  # noqa: E402,E501

__all__ += ["inter_slices", "intra_slices", "kernel_distance", "total_variation", "vessel_shadow_correlation"]
