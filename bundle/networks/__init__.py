"""Networks the bundle's configs name (MONAI core is used wherever it fits)."""

from .nhae import MultiSliceDecoder, NonHolisticAutoencoder, SliceAdaptor3D, ThumbnailEncoder, UniaxialSuperResolution

__all__ = ["MultiSliceDecoder", "NonHolisticAutoencoder", "SliceAdaptor3D", "ThumbnailEncoder",
           "UniaxialSuperResolution"]
from .io import load_parts, load_weights, save_weights  # noqa: E402

__all__ += ["load_parts", "load_weights", "save_weights"]
from .features import ClassAndBinaryLoss, DomainFeatureNet, FundusFeatureNet, oct_feature_extractor  # noqa: E402
from .fundus import DCGANDiscriminator, DCGANGenerator, FundusVAE  # noqa: E402

__all__ += ["ClassAndBinaryLoss", "DCGANDiscriminator", "DCGANGenerator", "DomainFeatureNet", "FundusFeatureNet",
            "FundusVAE", "oct_feature_extractor"]
from .baselines import ScaledDiffusionUNet  # noqa: E402

__all__ += ["ScaledDiffusionUNet"]
from .speckle import SpeckleModel, fit_speckle  # noqa: E402

__all__ += ["SpeckleModel", "fit_speckle"]
from .cascade import CascadedLDM, LatentDiffusionModel  # noqa: E402

__all__ += ["CascadedLDM", "LatentDiffusionModel"]
from .latent_prior import GaussianMixturePrior, fit_vae_prior  # noqa: E402

__all__ += ["GaussianMixturePrior", "fit_vae_prior"]
from .conditioning import LabelConditionedUNet, LabelEncoder, init_label_conditioned  # noqa: E402

__all__ += ["LabelConditionedUNet", "LabelEncoder", "init_label_conditioned"]
from .drgan import DRGANGenerator, FundusGrader, MultiScaleDiscriminator  # noqa: E402
__all__ += ["DRGANGenerator", "FundusGrader", "MultiScaleDiscriminator"]
