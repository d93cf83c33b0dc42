"""A trunk (inputs -> penultimate features) and one or more linear heads."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class Classifier(nn.Module):
    """``trunk`` produces (N, feature_dim) features; ``head`` (or ``heads[i]``) maps them to logits.

    Args:
        trunk: module mapping inputs to (N, feature_dim).
        feature_dim: width of the penultimate layer.
        n_classes: outputs per head.
        n_heads: 1 for a single ``head``; more gives ``heads.0``, ``heads.1``, ... over one trunk.
    """

    spec: Any = None  # set by create_model

    def __init__(self, trunk: nn.Module, feature_dim: int, n_classes: int, n_heads: int = 1):
        super().__init__()
        self.trunk = trunk
        self.feature_dim = feature_dim
        self.n_classes = n_classes
        self.n_heads = n_heads
        if n_heads == 1:
            self.head = nn.Linear(feature_dim, n_classes)
        else:
            self.heads = nn.ModuleList(nn.Linear(feature_dim, n_classes) for _ in range(n_heads))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (N, feature_dim)."""
        return self.trunk(x)

    def classify(self, feats: Tensor, head: int = 0) -> Tensor:
        """Logits from features with head ``head``."""
        if self.n_heads == 1:
            if head != 0:
                raise ValueError(f"head must be 0 for a single-head model, got {head}")
            return self.head(feats)
        if not 0 <= head < self.n_heads:
            raise ValueError(f"head must be in [0, {self.n_heads}), got {head}")
        return self.heads[head](feats)

    def classifier_layer(self, head: int = 0) -> nn.Linear:
        """The linear layer of head ``head`` (for neural-collapse metrics)."""
        layer = self.head if self.n_heads == 1 else self.heads[head]
        assert isinstance(layer, nn.Linear)
        return layer

    def forward(self, x: Tensor, head: int = 0) -> Tensor:
        return self.classify(self.trunk(x), head)
