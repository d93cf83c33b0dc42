"""Merge Search page recipe: the best-so-far curve of a stored CMA-ES search (core.search)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.figures.search import search_figure

from . import register_recipe
from ._args import need_str


def check_search_args(args: Mapping[str, Any]) -> None:
    need_str(args, "search")


def stored_search(zoo: Any, *, search: str) -> dict[str, Any]:
    """The stored search ``search`` of the workspace: its summary and every evaluation (as
    ``core.search.load_search``); the figure redraws what the run stored."""
    from core.search import load_search

    check_search_args({"search": search})
    result = load_search(zoo, search)
    if result["summary"] is None and result["evals"].empty:
        raise ValueError(f"search must name a search stored in this workspace, got {search!r}")
    return result


def search_fingerprint(zoo: Any, args: Mapping[str, Any]) -> tuple[str, ...]:
    """The search's evaluation count and status (a resumed search redraws)."""
    from core.search import EVAL_KIND, RECORD_KIND

    summary = zoo.get_records(RECORD_KIND).get(args["search"]) or {}
    n = sum(1 for r in zoo.get_records(EVAL_KIND).values() if r.get("search") == args["search"])
    return (str(n), str(summary.get("status")), str(summary.get("n_evals")))


register_recipe(
    "search_progress",
    compute=stored_search,
    figure=search_figure,
    description="CMA-ES merge search: every evaluation and the best so far",
    figure_args=("title",),
    check=check_search_args,
    fingerprint=search_fingerprint,
)
