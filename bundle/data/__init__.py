"""Phantom generators, dataset readers and file helpers."""

from .oct_phantom import CATEGORIES, LAYER_NAMES, SURFACE_NAMES, OCTPhantom, generate_oct_phantom

__all__ = ["CATEGORIES", "LAYER_NAMES", "SURFACE_NAMES", "OCTPhantom", "generate_oct_phantom"]
