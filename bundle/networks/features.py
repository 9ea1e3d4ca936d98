"""The bundle's own feature extractor for set-level Fréchet distances of fundus images.

Inception-v3 weights cannot be downloaded at run time, so the default features come from a small
CNN trained in this bundle on its training images to predict the DR grade and the presence of each
lesion type (``configs/train_fundus_features.json``). Its pooled penultimate activations are the
"domain features"; distances computed with them are labelled as such, never as Inception FID.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution


class FundusFeatureNet(nn.Module):
    """(B, 3, S, S) images in [-1, 1] -> logits (B, num_grades + num_lesions); ``features(x)`` -> (B, channels[-1]).

    Two 3 x 3 convolutions per level (the first strided), batch norm + ReLU, global average pooling.
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (16, 32, 64, 128), num_grades: int = 5, num_lesions: int = 6):
        super().__init__()
        layers, c_in = [], in_channels
        for c in channels:
            layers += [Convolution(2, c_in, c, strides=2, kernel_size=3, act="RELU", norm="BATCH"),
                       Convolution(2, c, c, strides=1, kernel_size=3, act="RELU", norm="BATCH")]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.num_grades, self.num_lesions, self.feature_size = num_grades, num_lesions, c_in
        self.head = nn.Linear(c_in, num_grades + num_lesions)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.body[0].conv.in_channels:
            raise ValueError(f"expected (B, {self.body[0].conv.in_channels}, H, W) images, got {tuple(x.shape)}")
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class GradeLesionLoss(nn.Module):
    """Cross-entropy on the grade logits + binary cross-entropy on the lesion-presence logits.

    ``target`` (B, 1 + num_lesions): grade, then 0/1 presence per lesion type (the datalist's
    ``label``). With only a grade (APTOS), the lesion term is skipped."""

    def __init__(self, num_grades: int = 5, lesion_weight: float = 1.0):
        super().__init__()
        self.num_grades, self.lesion_weight = num_grades, float(lesion_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.reshape(len(logits), -1).float()
        loss = F.cross_entropy(logits[:, : self.num_grades], target[:, 0].long())
        if target.shape[1] > 1:
            loss = loss + self.lesion_weight * F.binary_cross_entropy_with_logits(logits[:, self.num_grades :], target[:, 1:])
        return loss
