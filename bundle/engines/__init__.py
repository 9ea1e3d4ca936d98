"""Ignite iteration functions MONAI lacks; they plug into MONAI's ``SupervisedTrainer``."""

from .nhae import NHAEIteration, STAGES

__all__ = ["NHAEIteration", "STAGES"]
