"""Retinal image synthesis bundle: CA-LDM OCT volumes, DCGAN and VAE fundus photographs.

Importing ``bundle`` loads every subpackage, so config expressions such as
``$bundle.networks.load_weights(...)`` work whatever order the config items resolve in.
"""

__version__ = "0.9.0"

from . import data, distributed, engines, handlers, inferers, metrics, networks, transforms  # noqa: E402,F401
