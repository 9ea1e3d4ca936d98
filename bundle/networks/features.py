"""The bundle's own feature extractors for set-level Fréchet distances (fundus images, OCT slices).

Inception-v3 weights cannot be downloaded at run time, so the default features come from small
CNNs trained in this bundle on its training data to predict labels the data carry
(``configs/train_fundus_features.json``: DR grade + lesion presence; ``configs/stages/oct_features.json``:
pathology category + plane type + slice position + layer profile). Their pooled penultimate activations are the
"domain features"; distances computed with them are labelled as such, never as Inception FID.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn


class DomainFeatureNet(nn.Module):
    """(B, C, H, W) images in [-1, 1] -> logits (B, num_classes + num_binary); ``features(x)`` -> (B, channels[-1]).

    Two 3 x 3 convolutions per level (the first strided), batch norm + ReLU, global average pooling,
    one linear head: ``num_classes`` logits of a categorical label and ``num_binary`` logits of
    labels in [0, 1] (presence flags or relative positions).
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (16, 32, 64, 128), num_classes: int = 5,
                 num_binary: int = 6):
        super().__init__()
        layers, c_in = [], in_channels
        for c in channels:
            layers += [Convolution(2, c_in, c, strides=2, kernel_size=3, act="RELU", norm="BATCH"),
                       Convolution(2, c, c, strides=1, kernel_size=3, act="RELU", norm="BATCH")]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.in_channels, self.num_classes, self.num_binary, self.feature_size = (in_channels, num_classes, num_binary,
                                                                                  c_in)
        self.head = nn.Linear(c_in, num_classes + num_binary)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, H, W) images, got {tuple(x.shape)}")
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FundusFeatureNet(DomainFeatureNet):
    """:class:`DomainFeatureNet` for RGB fundus images: 5 DR grades + presence of 6 lesion types."""

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 128)):
        super().__init__(3, channels, num_classes=5, num_binary=6)


class ClassAndBinaryLoss(nn.Module):
    """Cross-entropy on the first ``num_classes`` logits + binary cross-entropy on the rest.

    ``target`` (B, 1 + num_binary): the class index, then targets in [0, 1] (the datalist's
    ``label``); negative targets mean unknown and are left out of the mean. With only a class
    (e.g. APTOS grades), the binary term is skipped."""

    def __init__(self, num_classes: int = 5, binary_weight: float = 1.0):
        super().__init__()
        self.num_classes, self.binary_weight = num_classes, float(binary_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.reshape(len(logits), -1).float()
        loss = F.cross_entropy(logits[:, : self.num_classes], target[:, 0].long())
        if target.shape[1] > 1:
            soft = target[:, 1:]
            known = (soft >= 0).float()  # negative targets are unknown (e.g. no layer map) and ignored
            bce = F.binary_cross_entropy_with_logits(logits[:, self.num_classes :], soft.clamp(min=0), weight=known,
                                                     reduction="sum")
            loss = loss + self.binary_weight * bce / known.sum().clamp(min=1)
        return loss


class InceptionFeatures(nn.Module):
    """torchvision Inception-v3 pool features (2048) from a local weights file, for users who have
    one; grayscale inputs are replicated to RGB and every image is resized to 299 x 299."""

    def __init__(self, weights: str):
        super().__init__()
        try:
            from torchvision.models import inception_v3
        except ImportError as e:
            raise ImportError("--features inception needs torchvision "
                              "(pip install torchvision matching your torch)") from e
        from .io import load_weights

        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        load_weights(net, weights, "pass the path of torchvision's inception_v3 ImageNet state dict")
        net.fc = nn.Identity()
        self.net = net.eval()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = F.interpolate((x + 1) / 2, size=(299, 299), mode="bilinear", align_corners=False)
        mean = torch.tensor([0.485, 0.456, 0.406], device=x.device).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], device=x.device).view(1, 3, 1, 1)
        return self.net((x - mean) / std)


def oct_feature_extractor(features: str, weights: str, inception_weights: str | None = None) -> nn.Module:
    """The feature net of ``scripts/evaluate.py oct``: "domain" (the bundle's OCT slice net from
    ``weights``) or "inception" (torchvision Inception-v3 from ``inception_weights``)."""
    from .io import load_weights

    if features == "domain":
        from ..data.slices import NUM_BINARY

        net = DomainFeatureNet(in_channels=1, channels=(16, 32, 64, 128), num_classes=4, num_binary=NUM_BINARY)
        return load_weights(net, weights, "train it with configs/stages/oct_features.json (docs/README.md)").eval()
    if features == "inception":
        if not inception_weights:
            raise ValueError("--features inception needs --inception_weights FILE "
                             "(a local torchvision inception_v3 state dict)")
        return InceptionFeatures(inception_weights)
    raise ValueError(f"features must be 'domain' or 'inception', got {features!r}")
