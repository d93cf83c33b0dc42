"""Figures: pure ``<thing>_figure(result) -> go.Figure`` builders and the paper template.

Only this subpackage imports plotly.
"""

from .theme import PALETTE, PAPER, SIZES, apply_paper, size_px
from .training import history_figure

__all__ = ["PALETTE", "PAPER", "SIZES", "apply_paper", "history_figure", "size_px"]

from .export import FORMATS, ExportError, export, figure_data, provenance  # noqa: E402

__all__ += ["FORMATS", "ExportError", "export", "figure_data", "provenance"]

# Figures and export: rendering for download buttons, names, the figure store
from .export import MIME, render, safe_name, static_available, stop_server, to_html  # noqa: E402
from .theme import SIZE_LABELS, png_px  # noqa: E402

__all__ += [
    "MIME",
    "SIZE_LABELS",
    "png_px",
    "render",
    "safe_name",
    "static_available",
    "stop_server",
    "to_html",
]
