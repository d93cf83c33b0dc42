"""Benchmark page recipe: the merging-at-scale sweep (Yadav et al., 2024) on a suite zoo."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.figures.scale import merging_at_scale_figure

from . import register_recipe
from ._args import choice, need_names, optional


def check_scale_args(args: Mapping[str, Any]) -> None:
    choice(args, "suite", ("vision", "text"), None)
    if "methods" in args:
        need_names(args, "methods")
    optional(args, n_orders=1, val_per_task=1, test_per_task=1, seed=0)


def merging_at_scale(
    zoo: Any,
    *,
    suite: str,
    methods: list[str] | None = None,
    n_orders: int = 3,
    val_per_task: int | None = 128,
    test_per_task: int | None = None,
    seed: int = 0,
) -> Any:
    """Held-in / held-out performance of each method as 1..N experts of ``suite`` are merged
    (hyperparameters chosen per subset on validation, scored on test)."""
    from core.papers.merging_at_scale import DEFAULT_METHODS, merging_at_scale_study

    return merging_at_scale_study(
        zoo,
        suite,
        methods=list(methods or DEFAULT_METHODS),
        n_orders=n_orders,
        val_per_task=val_per_task,
        test_per_task=test_per_task,
        seed=seed,
    )


def suite_fingerprint(zoo: Any, args: Mapping[str, Any]) -> tuple[str, ...]:
    """The ids, checksums and dates of the suite's base and fine-tunes (a rebuilt suite
    recomputes)."""
    from core.suite_lab import fingerprint

    return tuple("/".join(item) for item in fingerprint(zoo, args["suite"]))


register_recipe(
    "merging_at_scale",
    compute=merging_at_scale,
    figure=merging_at_scale_figure,
    description="Merging at scale: held-in and held-out performance vs merged experts",
    figure_args=("title",),
    check=check_scale_args,
    fingerprint=suite_fingerprint,
)
