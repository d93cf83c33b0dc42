"""Calibration: expected calibration error and reliability-diagram data.

ECE = Σ_b (n_b / N) |acc_b - conf_b| over equal-width confidence bins (Guo et al. 2017,
arXiv:1706.04599). Each sample is assigned to its bin (lo, hi] by comparison; per-bin accuracy and
confidence are averaged **and compared bin by bin**: nothing is sorted (OpenMixup's
``ece_score`` sorts the two per-bin arrays independently, which breaks their pairing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ._checks import check_int, check_tensor


@dataclass(frozen=True)
class ReliabilityData:
    """Per-bin calibration statistics (the data behind a reliability diagram).

    Attributes:
        edges: (B + 1,) bin edges from 0 to 1.
        count: (B,) samples per bin.
        accuracy: (B,) fraction correct per bin (NaN for empty bins).
        confidence: (B,) mean confidence per bin (NaN for empty bins).
        ece: expected calibration error.
        mce: maximum calibration error over non-empty bins.
        n: number of samples.
    """

    edges: list[float]
    count: list[int]
    accuracy: list[float]
    confidence: list[float]
    ece: float
    mce: float
    n: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": self.edges,
            "count": self.count,
            "accuracy": self.accuracy,
            "confidence": self.confidence,
            "ece": self.ece,
            "mce": self.mce,
            "n": self.n,
            **self.extra,
        }


def reliability(confidence: Tensor, correct: Tensor, *, n_bins: int = 15) -> ReliabilityData:
    """Bin samples by confidence and compare accuracy with confidence in each bin.

    Args:
        confidence: (N,) predicted probability of the predicted class, in [0, 1].
        correct: (N,) bool (or 0/1) whether the prediction was right.
        n_bins: equal-width bins over [0, 1]; bin b is (b/B, (b+1)/B], the first also holds 0.
    """
    check_tensor("confidence", confidence, ndim=1, floating=True, finite=True, min_len=1)
    check_tensor("correct", correct, ndim=1)
    check_int("n_bins", n_bins, 1, 1000)
    if correct.shape != confidence.shape:
        raise ValueError(
            f"correct must have shape {tuple(confidence.shape)}, got {tuple(correct.shape)}"
        )
    conf = confidence.double()
    if bool(((conf < 0) | (conf > 1)).any()):
        raise ValueError(
            f"confidence must lie in [0, 1], got range [{float(conf.min())}, {float(conf.max())}]"
        )
    ok = correct.double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    # bin index by comparison: number of inner edges strictly below the confidence
    idx = (conf.unsqueeze(1) > edges[1:-1].unsqueeze(0)).sum(1)  # (N,) in [0, B)
    count = torch.bincount(idx, minlength=n_bins).double()  # (B,)
    acc_sum = torch.bincount(idx, weights=ok, minlength=n_bins)
    conf_sum = torch.bincount(idx, weights=conf, minlength=n_bins)
    nonempty = count > 0
    acc = torch.where(nonempty, acc_sum / count.clamp_min(1), torch.nan)
    mean_conf = torch.where(nonempty, conf_sum / count.clamp_min(1), torch.nan)
    gap = (acc - mean_conf).abs()  # (B,) bin by bin, no sorting
    n = conf.numel()
    ece = float((count[nonempty] / n * gap[nonempty]).sum())
    mce = float(gap[nonempty].max())
    return ReliabilityData(
        edges=edges.tolist(),
        count=count.long().tolist(),
        accuracy=acc.tolist(),
        confidence=mean_conf.tolist(),
        ece=ece,
        mce=mce,
        n=n,
    )


def expected_calibration_error(confidence: Tensor, correct: Tensor, *, n_bins: int = 15) -> float:
    """ECE = Σ_b (n_b / N) |acc_b - conf_b| (see :func:`reliability`)."""
    return reliability(confidence, correct, n_bins=n_bins).ece


def reliability_from_logits(logits: Tensor, labels: Tensor, *, n_bins: int = 15) -> ReliabilityData:
    """Reliability data from (N, C) logits and (N,) labels (max-softmax confidence)."""
    check_tensor("logits", logits, ndim=2, floating=True, min_len=1)
    check_tensor("labels", labels, ndim=1)
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must have {logits.shape[0]} rows, got {labels.shape[0]}")
    conf, pred = torch.softmax(logits.double(), dim=1).max(dim=1)
    return reliability(conf, pred == labels.to(pred.device), n_bins=n_bins)


@torch.no_grad()
def model_reliability(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    n_bins: int = 15,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> ReliabilityData:
    """Reliability data of ``model`` on (x, y), in eval mode (the mode is restored)."""
    check_tensor("x", x, floating=True, min_len=1)
    was = model.training
    model.eval()
    try:
        logits = torch.cat(
            [model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
        )
    finally:
        model.train(was)
    return reliability_from_logits(logits, y.cpu(), n_bins=n_bins)
