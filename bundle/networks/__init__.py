"""Networks the bundle's configs name (MONAI core is used wherever it fits)."""

from .nhae import MultiSliceDecoder, NonHolisticAutoencoder, SliceAdaptor3D, ThumbnailEncoder, UniaxialSuperResolution

__all__ = ["MultiSliceDecoder", "NonHolisticAutoencoder", "SliceAdaptor3D", "ThumbnailEncoder", "UniaxialSuperResolution"]
from .io import load_weights, save_weights  # noqa: E402

__all__ += ["load_weights", "save_weights"]
