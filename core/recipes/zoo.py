"""Model Zoo page recipes: the training history stored with each model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.figures.training import history_figure

from . import register_recipe
from ._args import need_names


def check_history_args(args: Mapping[str, Any]) -> None:
    need_names(args, "models")


def training_histories(zoo: Any, *, models: list[str]) -> dict[str, dict[str, Any]]:
    """Model id -> its training history (loss and test accuracy per epoch) as stored in the zoo."""
    check_history_args({"models": models})
    histories = {mid: zoo.get(mid).metrics.get("history") for mid in models}
    missing = [mid for mid, h in histories.items() if not h]
    if missing:
        raise ValueError(f"models must have a stored training history, got none for {missing}")
    return histories


register_recipe(
    "training_history",
    compute=training_histories,
    figure=history_figure,
    description="Training history of zoo models",
    figure_args=("title",),
    check=check_history_args,
)
