"""Merging Papers page recipes for sparse mixture-of-experts models (the zoo's ``moe``
architecture): MC-SMoE (Li et al., ICLR 2024)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from core.figures.papers import mc_smoe_figure

from . import register_recipe
from ._args import need_number, need_str, optional

Progress = Callable[[int, int], None] | None


def check_mc_smoe_args(args: Mapping[str, Any]) -> None:
    """The args of :func:`mc_smoe`, checked without computing."""
    need_str(args, "model")
    need_str(args, "task")
    counts = args.get("group_counts", [6, 4, 2, 1])
    if (
        not isinstance(counts, (list, tuple))
        or not counts
        or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in counts)
    ):
        raise ValueError(
            f"recipe args['group_counts'] must be a non-empty list of ints >= 1, got {counts!r}"
        )
    for name in ("rank_fraction", "sparse_density"):
        if name in args:
            value = need_number(args, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"recipe args[{name!r}] must be in [0, 1], got {value!r}")
    optional(args, n_examples=2, seed=0, random_draws=1)


def mc_smoe(
    zoo: Any,
    *,
    model: str,
    task: str,
    group_counts: list[int] | None = None,
    rank_fraction: float = 0.15,
    sparse_density: float = 0.1,
    n_examples: int = 2000,
    seed: int = 0,
    random_draws: int = 5,
    progress: Progress = None,
) -> Any:
    """MC-SMoE study of zoo ``moe`` model ``model`` on ``task``: test accuracy and stored
    memory of each expert-merging method at each group count, and of MC-SMoE (M-SMoE, then
    low-rank + sparse compression). See :func:`core.papers.mc_smoe.mc_smoe_study`."""
    from core.data import get_task
    from core.papers.mc_smoe import mc_smoe_study

    check_mc_smoe_args(
        dict(
            model=model,
            task=task,
            group_counts=list(group_counts or [6, 4, 2, 1]),
            rank_fraction=rank_fraction,
            sparse_density=sparse_density,
            n_examples=n_examples,
            seed=seed,
            random_draws=random_draws,
        )
    )
    rec = zoo.get(model)
    if rec.arch != "moe":
        raise ValueError(f"model must be a zoo 'moe' model, got {model!r} ({rec.arch})")
    return mc_smoe_study(
        zoo.load_model(model),
        zoo.state_dict(model),
        get_task(task),
        group_counts=tuple(group_counts or (6, 4, 2, 1)),
        rank_fraction=rank_fraction,
        sparse_density=sparse_density,
        n_examples=n_examples,
        seed=seed,
        random_draws=random_draws,
        progress=progress,
    )


register_recipe(
    "mc_smoe_study",
    compute=mc_smoe,
    figure=mc_smoe_figure,
    description="MC-SMoE: memory vs accuracy as a sparse MoE's experts are merged and compressed",
    figure_args=("title",),
    model_args=("model",),
    check=check_mc_smoe_args,
)
