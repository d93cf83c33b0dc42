"""Calibration: ECE bin by bin (no sorting), checked against hand-worked numbers."""

from __future__ import annotations

import math

import pytest
import torch

from core.calibration import expected_calibration_error, reliability, reliability_from_logits


def test_ece_hand_worked_example() -> None:
    # 5 bins of width 0.2: (0,.2] conf .15 acc 0 | (.2,.4] .35 acc 1 | (.4,.6] .45 acc 0 |
    # (.6,.8] empty | (.8,1] confs .85 .95 (mean .9) acc 1
    # ECE = (.15 + .65 + .45) / 5 + 2/5 * .1 = .29 ; sorting the per-bin arrays would give .25
    conf = torch.tensor([0.15, 0.35, 0.45, 0.85, 0.95], dtype=torch.float64)
    correct = torch.tensor([0, 1, 0, 1, 1])
    rel = reliability(conf, correct, n_bins=5)
    assert rel.count == [1, 1, 1, 0, 2]
    assert rel.ece == pytest.approx(0.29, abs=1e-12)
    assert rel.mce == pytest.approx(0.65, abs=1e-12)
    assert math.isnan(rel.accuracy[3]) and math.isnan(rel.confidence[3])
    assert rel.confidence[4] == pytest.approx(0.9)


def test_bin_edges_are_right_closed() -> None:
    conf = torch.tensor([0.0, 0.2, 0.2000001, 1.0], dtype=torch.float64)
    rel = reliability(conf, torch.tensor([1, 1, 1, 1]), n_bins=5)
    assert rel.count == [2, 1, 0, 0, 1]


def test_perfectly_calibrated_predictor_has_small_ece() -> None:
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(200_000, generator=g, dtype=torch.float64)
    correct = torch.rand(200_000, generator=g, dtype=torch.float64) < conf
    assert expected_calibration_error(conf, correct, n_bins=10) < 0.01
    overconfident = expected_calibration_error(conf.sqrt(), correct, n_bins=10)
    assert overconfident > 0.1


def test_from_logits_uses_max_softmax() -> None:
    logits = torch.tensor([[3.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    rel = reliability_from_logits(logits, torch.tensor([0, 0, 1]), n_bins=2)
    assert rel.n == 3 and sum(rel.count) == 3
    assert rel.count == [1, 2]  # conf .5 -> first bin; .95 and .73 -> second


def test_calibration_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="confidence"):
        reliability(torch.tensor([1.5]), torch.tensor([1]))
    with pytest.raises(ValueError, match="correct"):
        reliability(torch.tensor([0.5, 0.6]), torch.tensor([1]))
    with pytest.raises(ValueError, match="n_bins"):
        reliability(torch.tensor([0.5]), torch.tensor([1]), n_bins=0)
