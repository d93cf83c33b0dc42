"""ResNet-20 for small images (He et al. 2016, the CIFAR variant), narrow by default.

Three stages of three basic blocks with widths (w, 2w, 4w); the first block of stages 2 and 3
downsamples with a 1x1 conv + BatchNorm shortcut (option B).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .classifier import Classifier


class Shortcut(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = (
            Shortcut(c_in, c_out, stride) if (stride != 1 or c_in != c_out) else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetTrunk(nn.Module):
    def __init__(self, width: int, in_channels: int, blocks_per_stage: int = 3):
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(width)
        c_in = width
        stages = []
        for s, mult in enumerate((1, 2, 4)):
            c_out = width * mult
            blocks = [
                BasicBlock(c_in if b == 0 else c_out, c_out, 2 if (b == 0 and s > 0) else 1)
                for b in range(blocks_per_stage)
            ]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.layer1, self.layer2, self.layer3 = stages
        self.out_dim = c_in

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn0(self.conv0(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (N, 4w)


def build_resnet20(
    *,
    width: int = 8,
    n_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    n_heads: int = 1,
) -> Classifier:
    """ResNet-20 with stage widths (width, 2*width, 4*width)."""
    trunk = ResNetTrunk(width, in_channels)
    return Classifier(trunk, trunk.out_dim, n_classes, n_heads)
