"""Tables for display: numbers formatted the way a paper prints them."""

from __future__ import annotations

from typing import Any

import pandas as pd

from core.figures.text import REFERENCE, p_value_text

__all__ = ["comparison_table", "p_value_text"]


def comparison_table(result: Any) -> pd.DataFrame:
    """The method comparison (``core.merge_eval.ComparisonResult``) as a display table:
    p-values as text (see :func:`p_value_text`), accuracies as numbers."""
    if not hasattr(result, "table") or not hasattr(result, "reference_method"):
        raise TypeError(f"result must be a ComparisonResult, got {type(result).__name__}")
    df = pd.DataFrame(result.table())
    col = f"p_vs_{result.reference_method}"
    if col in df:
        df[col] = [
            REFERENCE
            if r.method == result.reference_method and r.error is None
            else "—"
            if r.p_value is None
            else p_value_text(float(r.p_value))
            for r in result.rows
        ]
    return df
