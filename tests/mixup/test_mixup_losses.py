"""Mixup losses: soft CE = two-label CE, label smoothing, separate label λ, Decoupled Mixup."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from core.mixup.losses import (
    decoupled_mixup_loss,
    mixed_targets,
    mixup_cross_entropy,
    smooth_targets,
    soft_target_cross_entropy,
)

N, C = 8, 5


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, C, generator=g)
    ya = torch.randint(0, C, (N,), generator=g)
    yb = torch.randint(0, C, (N,), generator=g)
    lam = torch.rand(N, generator=g)
    return logits, ya, yb, lam


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_soft_ce_equals_two_label_ce(seed: int) -> None:
    logits, ya, yb, lam = _data(seed)
    target = mixed_targets(ya, yb, lam, C)
    torch.testing.assert_close(target.sum(1), torch.ones(N))
    torch.testing.assert_close(
        soft_target_cross_entropy(logits, target), mixup_cross_entropy(logits, ya, yb, lam)
    )


def test_soft_ce_matches_torch_label_smoothing() -> None:
    logits, ya, _, _ = _data()
    s = 0.1
    ours = soft_target_cross_entropy(logits, F.one_hot(ya, C).float(), label_smoothing=s)
    torch.testing.assert_close(ours, F.cross_entropy(logits, ya, label_smoothing=s))
    sm = smooth_targets(F.one_hot(ya, C).float(), s)
    torch.testing.assert_close(sm.max(1).values, torch.full((N,), 1 - s + s / C))
    torch.testing.assert_close(sm.sum(1), torch.ones(N))


def test_separate_label_lam_changes_only_targets() -> None:
    _, ya, yb, _ = _data()
    t = mixed_targets(ya, yb, 0.9, C)
    diff = ya != yb
    torch.testing.assert_close(
        t[diff].gather(1, ya[diff].view(-1, 1))[:, 0], torch.full((int(diff.sum()),), 0.9)
    )


def test_decoupled_loss_reduces_to_mixup_ce_and_ce() -> None:
    logits, ya, yb, lam = _data()
    torch.testing.assert_close(
        decoupled_mixup_loss(logits, ya, yb, lam, eta=0.0), mixup_cross_entropy(logits, ya, yb, lam)
    )
    for edge in (0.0, 1.0):
        torch.testing.assert_close(
            decoupled_mixup_loss(logits, ya, yb, edge, eta=0.5),
            mixup_cross_entropy(logits, ya, yb, edge),
        )


def test_decoupled_term_hand_worked() -> None:
    # 4 classes, a=0, b=1, λ=0.5, η=1: extra = 0.5 DCE_a + 0.5 DCE_b, DCE over {i, 2, 3}
    z = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    ya, yb = torch.tensor([0]), torch.tensor([1])
    ce = 0.5 * F.cross_entropy(z, ya) + 0.5 * F.cross_entropy(z, yb)
    e = torch.exp
    dce_a = -torch.log(e(z[0, 0]) / (e(z[0, 0]) + e(z[0, 2]) + e(z[0, 3])))
    dce_b = -torch.log(e(z[0, 1]) / (e(z[0, 1]) + e(z[0, 2]) + e(z[0, 3])))
    expect = ce + 1.0 * (0.5 * dce_a + 0.5 * dce_b)
    torch.testing.assert_close(decoupled_mixup_loss(z, ya, yb, 0.5, eta=1.0), expect)
    # "more": only the dominant class's term
    got = decoupled_mixup_loss(z, ya, yb, 0.75, eta=1.0, mode="more")
    ce75 = 0.75 * F.cross_entropy(z, ya) + 0.25 * F.cross_entropy(z, yb)
    torch.testing.assert_close(got, ce75 + 0.75 * dce_a)


def test_decoupled_uses_per_row_lam_and_skips_same_class_rows() -> None:
    logits, ya, _, lam = _data()
    same = decoupled_mixup_loss(logits, ya, ya, lam, eta=1.0, reduction="none")
    torch.testing.assert_close(same, F.cross_entropy(logits, ya, reduction="none"))


def test_loss_errors_name_the_argument() -> None:
    logits, ya, yb, lam = _data()
    with pytest.raises(ValueError, match="lam"):
        mixup_cross_entropy(logits, ya, yb, 1.5)
    with pytest.raises(ValueError, match="target"):
        soft_target_cross_entropy(logits, torch.ones(N, C + 1) / (C + 1))
    with pytest.raises(TypeError, match="y_a"):
        mixup_cross_entropy(logits, ya.float(), yb, lam)
    with pytest.raises(ValueError, match="mode"):
        decoupled_mixup_loss(logits, ya, yb, lam, mode="all")


def test_decoupled_soft_target_loss_equals_the_index_form() -> None:
    from core.mixup.losses import decoupled_loss_fn, decoupled_soft_target_loss, smooth_targets

    g = torch.Generator().manual_seed(0)
    n, c = 12, 6
    logits = torch.randn(n, c, generator=g, dtype=torch.float64)
    ya = torch.randint(0, c, (n,), generator=g)
    yb = (ya + torch.randint(1, c, (n,), generator=g)) % c  # a different class
    yb[:2] = ya[:2]  # same-class pairs: no extra term
    lam = torch.rand(n, generator=g, dtype=torch.float64)
    lam[2], lam[3] = 1.0, 0.0  # unmixed rows
    target = lam[:, None] * F.one_hot(ya, c) + (1 - lam[:, None]) * F.one_hot(yb, c)
    for mode in ("both", "more", "less"):
        got = decoupled_soft_target_loss(
            logits, target, eta=0.7, mode=mode, power=2.0, reduction="none"
        )
        ref = decoupled_mixup_loss(
            logits, ya, yb, lam.float(), eta=0.7, mode=mode, power=2.0, reduction="none"
        )
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    # a smoothing floor cancels in λ: extra term as without smoothing, base on smoothed targets
    s = smooth_targets(target, 0.1)
    extra = decoupled_mixup_loss(
        logits, ya, yb, lam.float(), eta=1.0, reduction="none"
    ) - mixup_cross_entropy(logits, ya, yb, lam, reduction="none")
    expect = soft_target_cross_entropy(logits, s, reduction="none") + extra
    got = decoupled_soft_target_loss(logits, s, eta=1.0, reduction="none")
    torch.testing.assert_close(got, expect, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        decoupled_loss_fn(eta=0.7)(logits, target),
        decoupled_soft_target_loss(logits, target, eta=0.7),
    )
