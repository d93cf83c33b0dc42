"""Export a figure for a paper: vector PDF/SVG, 300-dpi PNG, offline HTML, the data as CSV and
a provenance JSON.

Static formats go through kaleido with the system Chromium. Without Chromium, HTML/CSV/JSON
still export and the error says how to install it.
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from .theme import DPI, PX_PER_INCH, apply_paper, size_px

STATIC = ("png", "svg", "pdf")
FORMATS = (*STATIC, "html", "csv", "json")


class ExportError(RuntimeError):
    """A static export failed (typically: no Chromium); the message says how to fix it."""


def provenance(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Package versions, git commit, platform and time, plus ``extra`` (model ids, method,
    hyperparameters, seed...)."""
    import importlib.metadata as md

    versions = {}
    for pkg in (
        "torch",
        "numpy",
        "plotly",
        "kaleido",
        "scikit-learn",
        "streamlit",
        "mixmerge-workbench",
    ):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        **dict(extra or {}),
    }


def figure_data(fig: go.Figure) -> Any:
    """The data behind a figure as a long pandas DataFrame (one row per point per trace)."""
    import numpy as np
    import pandas as pd

    frames = []
    for i, tr in enumerate(fig.data):
        cols: dict[str, Any] = {}
        for attr in ("x", "y", "z", "r", "theta", "text"):
            val = getattr(tr, attr, None)
            if val is not None and not isinstance(val, str):
                arr = np.asarray(val, dtype=object)
                if arr.ndim == 1:
                    cols[attr] = arr
                elif arr.ndim == 2 and attr == "z":
                    yy, xx = np.meshgrid(range(arr.shape[0]), range(arr.shape[1]), indexing="ij")
                    xs = np.asarray(tr.x) if tr.x is not None else None
                    ys = np.asarray(tr.y) if tr.y is not None else None
                    cols = {"x": xs[xx.ravel()] if xs is not None else xx.ravel(),
                            "y": ys[yy.ravel()] if ys is not None else yy.ravel(), "z": arr.ravel()}  # fmt: skip
        if not cols:
            continue
        n = max(len(v) for v in cols.values())
        df = pd.DataFrame({k: list(v) + [None] * (n - len(v)) for k, v in cols.items()})
        df.insert(0, "trace", tr.name if tr.name is not None else f"trace {i}")
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def export(
    fig: go.Figure,
    stem: str | Path,
    *,
    formats: Sequence[str] = ("png", "svg", "pdf", "html"),
    size: str = "column",
    data: Any = None,
    meta: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write ``fig`` as ``<stem>.<fmt>`` for each format; return the paths written.

    Args:
        fig: the figure (not modified: a copy is styled for print).
        stem: output path without suffix; parent folders are created.
        formats: any of "png", "svg", "pdf", "html", "csv", "json".
        size: named size ("column" ~3.5 in, "double" ~7 in, ...); PNG is scaled to 300 dpi.
        data: DataFrame written as CSV (default: the figure's own traces).
        meta: provenance fields merged into the JSON.

    Raises:
        ValueError: unknown format or size.
        ExportError: static export impossible (no Chromium); the other formats are written first.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {list(formats)}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    w, h = size_px(size)
    styled = apply_paper(go.Figure(fig), size=size)
    written: list[Path] = []
    for fmt in formats:
        p = stem.with_suffix(f".{fmt}")
        if fmt == "html":
            styled.write_html(p, include_plotlyjs=True, full_html=True)
        elif fmt == "csv":
            (data if data is not None else figure_data(fig)).to_csv(p, index=False)
        elif fmt == "json":
            p.write_text(
                json.dumps(
                    provenance({"figure": stem.name, "size": size, **dict(meta or {})}),
                    indent=2,
                    default=str,
                )
            )
        else:
            continue
        written.append(p)
    static = [f for f in formats if f in STATIC]
    if static:
        try:
            for fmt in static:
                p = stem.with_suffix(f".{fmt}")
                scale = DPI / PX_PER_INCH if fmt == "png" else 1
                styled.write_image(p, format=fmt, width=w, height=h, scale=scale)
                written.append(p)
        except Exception as err:  # kaleido raises several types when no browser is found
            raise ExportError(
                f"static export ({', '.join(static)}) failed: {err}. Install Chromium "
                "(`sudo apt-get install chromium fonts-open-sans`); HTML, CSV and JSON were written."
            ) from err
    return written
