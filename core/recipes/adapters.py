"""Benchmark page recipe: Orthogonal Adaptation (Po et al., CVPR 2024) on a suite zoo."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.figures.adapters import orthogonal_adaptation_figure

from . import register_recipe
from ._args import choice, need_names, need_number, optional
from .scale import suite_fingerprint


def check_orthogonal_args(args: Mapping[str, Any]) -> None:
    from core.papers.orthogonal_adaptation import VARIANTS

    choice(args, "suite", ("vision", "text"), None)
    if "variants" in args:
        for v in need_names(args, "variants"):
            if v not in VARIANTS:
                raise ValueError(
                    f"recipe args['variants'] must name variants among {list(VARIANTS)}, got {v!r}"
                )
    optional(args, rank=1, steps=1, test_per_task=1, seed=0)
    for name in ("lr", "scale"):
        if args.get(name) is not None and need_number(args, name) <= 0:
            raise ValueError(f"recipe args[{name!r}] must be > 0, got {args[name]!r}")


def orthogonal_adaptation(
    zoo: Any,
    *,
    suite: str,
    variants: list[str] | None = None,
    rank: int = 4,
    steps: int | None = None,
    lr: float = 1e-3,
    scale: float = 1.0,
    test_per_task: int | None = None,
    seed: int = 0,
) -> Any:
    """One rank-``rank`` adapter per task and variant on ``suite``'s pretrained backbone, then
    all of a variant's adapters summed; test accuracy alone and summed."""
    from core.papers.orthogonal_adaptation import VARIANTS, orthogonal_adaptation_study

    return orthogonal_adaptation_study(
        zoo,
        suite,
        variants=list(variants or VARIANTS),
        rank=rank,
        steps=steps,
        lr=lr,
        scale=scale,
        test_per_task=test_per_task,
        seed=seed,
    )


register_recipe(
    "orthogonal_adaptation",
    compute=orthogonal_adaptation,
    figure=orthogonal_adaptation_figure,
    description="Orthogonal adaptation: summing per-task low-rank adapters without tuning",
    figure_args=("title",),
    check=check_orthogonal_args,
    fingerprint=suite_fingerprint,
)
