"""Retinal image synthesis bundle: CA-LDM OCT volumes, DCGAN/VAE and DR-GAN fundus photographs."""

__version__ = "0.1.0"
