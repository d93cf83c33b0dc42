"""Checks every mixing-paper study record passes: stored in a workspace, retrained from the
store to the same per-sample results, drawn by its figure, and cancellable."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pytest

from core.figures.mix_papers import FIGURES
from core.mixup.papers import Cancelled, load_paper_runs, rerun, store_run
from core.zoo import Zoo


def check_study_round_trip(
    tmp_path: Path, paper: str, record: Mapping[str, Any], run: Callable[..., Any], config: Any
) -> None:
    """``record`` (from ``run(config, seeds=...)``) stores, reruns to the same ``correct``,
    draws, and ``run`` raises :class:`Cancelled` when asked to stop."""
    zoo = Zoo(tmp_path / "ws")
    rid = store_run(zoo, paper, record)
    assert rerun(load_paper_runs(zoo)[rid])["correct"] == record["correct"]
    assert isinstance(FIGURES[record["study"]](record), go.Figure)
    with pytest.raises(Cancelled):
        run(config, seeds=tuple(record["seeds"]), should_stop=lambda: True)
