"""Multi-layer perceptron over flattened images."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .classifier import Classifier


def build_mlp(
    *,
    width: int = 512,
    depth: int = 3,
    n_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    n_heads: int = 1,
) -> Classifier:
    """``depth`` hidden layers of ``width`` ReLU units: trunk.fc0 ... trunk.fc{depth-1}."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    d_in = in_channels * image_size * image_size
    for i in range(depth):
        layers[f"fc{i}"] = nn.Linear(d_in, width)
        layers[f"relu{i}"] = nn.ReLU()
        d_in = width
    return Classifier(nn.Sequential(layers), width, n_classes, n_heads)
