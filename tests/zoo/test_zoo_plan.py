"""The default zoo's plan: the base is pre-trained on another task than the fine-tunes'."""

from __future__ import annotations

import dataclasses

import pytest

from core.zoo import DEFAULT_PLAN, Zoo, pretrain_data


def test_pretraining_data_is_another_task() -> None:
    plan = dataclasses.replace(DEFAULT_PLAN, base_per_task=50)
    x, y, what = pretrain_data(plan)
    assert set(y.tolist()) <= {0, 1, 2, 3, 4}  # never the classes 5-9 of the target tasks
    assert len(x) == len(y) and 4 * 15 < len(y) < 4 * 50
    assert "classes 0,1,2,3,4 only" in what
    with pytest.raises(ValueError, match="selects no example"):
        pretrain_data(dataclasses.replace(plan, pretrain_classes=(42,)))


def test_tiny_zoo_base_is_weaker_than_every_finetune(tiny_zoo: Zoo) -> None:
    base = tiny_zoo.get("mlp-base")
    assert "classes 0,1,2,3,4 only" in base.note
    for task in DEFAULT_PLAN.domains:
        ft = tiny_zoo.get(f"mlp-ft-{task}")
        assert ft.metrics["task_accuracy"][task] > base.metrics["task_accuracy"][task], task
