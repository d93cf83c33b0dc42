"""A small VGG-like CNN with BatchNorm: three conv blocks and global average pooling."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .classifier import Classifier


def build_cnn(
    *,
    width: int = 16,
    n_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    n_heads: int = 1,
) -> Classifier:
    """conv(w)-BN-ReLU-pool, conv(2w)-BN-ReLU-pool, conv(4w)-BN-ReLU, global mean pool."""
    chans = [in_channels, width, 2 * width, 4 * width]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i in range(3):
        layers[f"conv{i}"] = nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False)
        layers[f"bn{i}"] = nn.BatchNorm2d(chans[i + 1])
        layers[f"relu{i}"] = nn.ReLU()
        if i < 2:
            layers[f"pool{i}"] = nn.MaxPool2d(2)
    layers["gap"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    return Classifier(nn.Sequential(layers), chans[-1], n_classes, n_heads)
