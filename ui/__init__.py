"""Streamlit-only helpers: the shared page frame, caches, session-state keys and widgets.

Pages call these; the science lives in ``core``.
"""

from .frame import Settings, frame

__all__ = ["Settings", "frame"]
