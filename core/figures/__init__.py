"""Figures: pure ``<thing>_figure(result) -> go.Figure`` builders and the paper template.

Only this subpackage imports plotly.
"""

from .theme import PALETTE, PAPER, SIZES, apply_paper, size_px
from .training import history_figure

__all__ = ["PALETTE", "PAPER", "SIZES", "apply_paper", "history_figure", "size_px"]

from .export import FORMATS, ExportError, export, figure_data, provenance  # noqa: E402

__all__ += ["FORMATS", "ExportError", "export", "figure_data", "provenance"]
