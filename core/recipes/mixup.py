"""Mixup Training page recipes: figures drawn from a stored ``mixup_run`` record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.figures.mixup import (
    accuracy_figure,
    curves_figure,
    early_stopping_figure,
    run_reliability_figure,
)

from . import register_recipe
from ._args import need_str


def check_run_args(args: Mapping[str, Any]) -> None:
    need_str(args, "run")


def mixup_run(zoo: Any, *, run: str) -> dict[str, Any]:
    """The stored mixup run ``run`` (per method: history, test accuracy with its bootstrap CI,
    calibration), as the Mixup Training page trained and stored it."""
    from core.mixup.training import load_runs

    check_run_args({"run": run})
    runs = load_runs(zoo)
    if run not in runs:
        raise KeyError(
            f"run must be a stored mixup run of {zoo.root}, got {run!r}; stored: {list(runs)}"
        )
    return runs[run]


for _kind, _figure, _description in (
    ("mixup_accuracy", accuracy_figure, "Test accuracy with bootstrap CI, and ECE"),
    ("mixup_curves", curves_figure, "Per-epoch training loss, test loss and accuracy"),
    ("mixup_early_stopping", early_stopping_figure, "Early-stopped mixup"),
    ("mixup_reliability", run_reliability_figure, "Reliability diagram of each method"),
):
    register_recipe(
        _kind, compute=mixup_run, figure=_figure, description=_description, check=check_run_args
    )
