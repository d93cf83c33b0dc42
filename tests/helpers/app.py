"""Shared helpers of the page tests."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest


def record_figures(monkeypatch: pytest.MonkeyPatch, module: ModuleType | None = None) -> dict:
    """Patch ``show_figure`` of ``module`` (default ``ui.figure_panel``) to record every figure a
    page run shows; returns the dict it fills: key -> (figure, recipe as passed)."""
    if module is None:
        import ui.figure_panel as module
    seen: dict[str, tuple[Any, Any]] = {}
    original = module.show_figure

    def record(fig: Any, *, key: str, **kwargs: Any) -> None:
        seen[key] = (fig, kwargs.get("recipe"))
        original(fig, key=key, **kwargs)

    monkeypatch.setattr(module, "show_figure", record)
    return seen
