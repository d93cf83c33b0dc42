"""The one seeded, stratified subset helper, and the places that take subsets with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import get_task, stratified_subset


def test_subset_keeps_every_class_share() -> None:
    y = torch.repeat_interleave(torch.arange(10), torch.tensor([500] * 8 + [300, 200]))  # sorted
    idx = stratified_subset(y, 1000, random_state=0, key="t")
    assert len(idx) == 1000 and len(set(idx.tolist())) == 1000
    assert torch.equal(idx, idx.sort().values)
    counts = np.bincount(y[idx].numpy(), minlength=10)
    expect = 1000 * np.bincount(y.numpy()) / len(y)
    assert np.all(np.abs(counts - expect) < 1), counts
    assert sorted(y[:1000].unique().tolist()) == [0, 1]  # what x[:n] would have given


def test_subset_is_seeded_keyed_and_total() -> None:
    y = get_task("mnist").y_train
    a = stratified_subset(y, 250, random_state=3, key="mnist")
    assert torch.equal(a, stratified_subset(y, 250, random_state=3, key="mnist"))
    assert not torch.equal(a, stratified_subset(y, 250, random_state=4, key="mnist"))
    assert not torch.equal(a, stratified_subset(y, 250, random_state=3, key="other"))
    assert torch.equal(stratified_subset(y, None), torch.arange(len(y)))
    assert torch.equal(stratified_subset(y, 10**9), torch.arange(len(y)))
    counts = np.bincount(y[stratified_subset(y, 7, random_state=1)].numpy(), minlength=10)
    assert counts.sum() == 7 and counts.max() == 1  # 7 of 10 balanced classes, one each


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.zeros(5, dtype=torch.long), 0), "n must"),
        ((torch.zeros(5, dtype=torch.long), 2.5), "n must"),
        ((torch.zeros((2, 2), dtype=torch.long), 1), "1-d"),
        ((torch.zeros(5), 1), "integer"),
    ],
)
def test_subset_validates(args: tuple, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        stratified_subset(*args)


def test_mixup_training_default_subset_trains_on_every_class(tmp_path: Path) -> None:
    """The Mixup Training page's default ("Training samples 1000") on class-sorted MNIST."""
    from core.mixup.training import MixMethod, train_mixers
    from core.train import TrainConfig
    from core.zoo import Zoo

    rec = train_mixers(
        Zoo(tmp_path),
        task="mnist",
        methods=[MixMethod()],
        arch="mlp",
        arch_kwargs={"width": 16, "depth": 1},
        config=TrainConfig(epochs=1, max_steps=1),
        n_train=1000,
        device="cpu",
    )
    counts = rec["train_class_counts"]
    assert rec["n_train"] == 1000 and len(counts) == 10
    assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_eval_and_training_subsets_are_stratified() -> None:
    from core.merge_eval import make_eval_set

    es = make_eval_set(["mnist"], n_per_task=100, random_state=0)
    assert np.bincount(es.y.numpy(), minlength=10).tolist() == [10] * 10
