"""Export a figure for a paper: vector PDF/SVG, 300-dpi PNG, offline HTML, the data as CSV and
a provenance JSON.

Static formats go through kaleido 1.x with the system Chromium. One kaleido server (one headless
Chromium) is started on the first static export and kept alive until the process exits, so
later exports take a fraction of a second instead of a browser start each. LaTeX labels
(``"$\\lambda$"``) render through the MathJax copy vendored in ``vendor/mathjax`` (the CDN is
unreachable offline). Without Chromium, HTML/CSV/JSON still export and :class:`ExportError`
says how to install it.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import platform
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from .theme import DPI, PX_PER_INCH, apply_paper, size_px

STATIC = ("png", "svg", "pdf")
FORMATS = (*STATIC, "html", "csv", "json")
MIME = {
    "png": "image/png",
    "svg": "image/svg+xml",
    "pdf": "application/pdf",
    "html": "text/html",
    "csv": "text/csv",
    "json": "application/json",
    "zip": "application/zip",
}
MATHJAX = Path(__file__).resolve().parent / "vendor" / "mathjax" / "tex-svg.js"
BROWSER_ENV = "BROWSER_PATH"  # the variable choreographer (kaleido's browser driver) reads
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
RENDER_TIMEOUT_S = 120.0
INSTALL_HINT = (
    "Install Chromium and the figure font: `sudo apt-get install chromium fonts-open-sans`"
)
_PACKAGES = (
    "torch",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "plotly",
    "kaleido",
    "streamlit",
    "safetensors",
    "mixmerge-workbench",
)
_LATEX = re.compile(r"^\s*\$.+\$\s*$", re.S)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class ExportError(RuntimeError):
    """A static export failed (typically: no Chromium); the message says how to fix it."""


# ---------------------------------------------------------------------------- names and paths
def safe_name(text: str, *, default: str = "figure") -> str:
    """A file-name stem from user text: letters, digits, '_', '.', '-' only, no leading dot,
    at most 80 characters (so a typed name can never reach outside its folder)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    s = _UNSAFE.sub("-", text).strip("-.")
    return s[:80].rstrip("-.") or default


def resolve_stem(stem: str | Path, root: str | Path | None = None) -> Path:
    """``stem`` as an absolute path; with ``root``, relative stems are taken inside ``root``
    and any stem that resolves outside it (``..``, absolute paths elsewhere, links) is refused.

    Raises:
        TypeError: ``stem`` is not a str or Path.
        ValueError: empty stem, or a stem outside ``root``.
    """
    if not isinstance(stem, str | Path):
        raise TypeError(f"stem must be a str or Path, got {type(stem).__name__}")
    if not str(stem).strip() or Path(stem).name in ("", ".", ".."):
        raise ValueError(f"stem must name a file, got {str(stem)!r}")
    if root is None:
        return Path(stem).expanduser().resolve()
    base = Path(root).expanduser().resolve()
    path = (base / stem).resolve()
    if not path.is_relative_to(base):
        raise ValueError(f"stem must stay inside {base}, got {str(stem)!r} (resolves to {path})")
    return path


# ---------------------------------------------------------------------------- provenance and data
def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _model_records(ids: Any, workspace: str | Path) -> dict[str, Any]:
    """The zoo's record (architecture, task, seed, training config, recipe, checksum) per id."""
    from core.zoo import Zoo

    zoo = Zoo(workspace)
    out: dict[str, Any] = {}
    for mid in [ids] if isinstance(ids, str) else list(ids):
        try:
            rec = zoo.get(str(mid)).to_dict()
        except KeyError:
            out[str(mid)] = None
            continue
        rec["metrics"] = {k: v for k, v in rec["metrics"].items() if k != "history"}
        out[str(mid)] = rec
    return out


def provenance(
    extra: Mapping[str, Any] | None = None, *, workspace: str | Path | None = None
) -> dict[str, Any]:
    """Package versions, git commit, platform and time, plus ``extra`` (model ids, method,
    hyperparameters, seed...). With ``workspace``, the ids under ``extra["models"]`` are
    expanded into their zoo records (how each model was made) under ``"model_records"``."""
    import importlib.metadata as md

    if extra is not None and not isinstance(extra, Mapping):
        raise TypeError(f"extra must be a mapping or None, got {type(extra).__name__}")
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    out: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        **dict(extra or {}),
    }
    if workspace is not None and extra and extra.get("models"):
        out["model_records"] = _model_records(extra["models"], workspace)
    return out


def figure_data(fig: go.Figure) -> Any:
    """The data behind a figure as a long pandas DataFrame (one row per point per trace;
    heatmaps and surfaces one row per cell)."""
    import numpy as np
    import pandas as pd

    if not isinstance(fig, go.Figure):
        raise TypeError(f"fig must be a plotly.graph_objects.Figure, got {type(fig).__name__}")
    frames = []
    for i, tr in enumerate(fig.data):
        cols: dict[str, Any] = {}
        for attr in ("x", "y", "z", "r", "theta", "text"):
            val = getattr(tr, attr, None)
            if val is None or isinstance(val, str):
                continue
            arr = np.asarray(val, dtype=object)
            if arr.ndim == 1:
                cols[attr] = arr
            elif arr.ndim == 2 and attr == "z":
                yy, xx = np.meshgrid(range(arr.shape[0]), range(arr.shape[1]), indexing="ij")
                xs = np.asarray(tr.x) if tr.x is not None else None
                ys = np.asarray(tr.y) if tr.y is not None else None
                cols = {
                    "x": xs[xx.ravel()] if xs is not None else xx.ravel(),
                    "y": ys[yy.ravel()] if ys is not None else yy.ravel(),
                    "z": arr.ravel(),
                }
        if not cols or all(v is None for col in cols.values() for v in col):
            continue  # no data (e.g. a legend-only key entry)
        n = max(len(v) for v in cols.values())
        df = pd.DataFrame({k: list(v) + [None] * (n - len(v)) for k, v in cols.items()})
        df.insert(0, "trace", tr.name if tr.name is not None else f"trace {i}")
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def data_csv(fig: go.Figure, data: Any = None) -> str:
    """CSV text of ``data`` (a DataFrame or a mapping of equal-length columns), or of the
    figure's own traces when ``data`` is None."""
    import pandas as pd

    if data is None:
        data = figure_data(fig)
    elif isinstance(data, Mapping):
        data = pd.DataFrame(dict(data))
    if not isinstance(data, pd.DataFrame):
        raise TypeError(
            f"data must be a pandas DataFrame, a mapping or None, got {type(data).__name__}"
        )
    return str(data.to_csv(index=False))


# ---------------------------------------------------------------------------- the kaleido server
def browser_path() -> str | None:
    """The Chromium that static export uses: ``$BROWSER_PATH`` if set (and only then), else the
    first of ``chromium``, ``chromium-browser``, ``google-chrome`` on PATH; None if none."""
    env = os.environ.get(BROWSER_ENV)
    if env:
        p = Path(env)
        return str(p) if p.is_file() and os.access(p, os.X_OK) else None
    for name in BROWSER_NAMES:
        if found := shutil.which(name):
            return found
    return None


def static_available() -> bool:
    """Whether PNG/SVG/PDF export can work here (a Chromium was found)."""
    return browser_path() is not None


class _Server:
    """One kaleido sync server per process, started lazily; calls serialised by a lock
    (kaleido's server pairs requests and replies through two queues, so concurrent callers
    could receive each other's images)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.browser: str | None = None
        self.starts = 0

    def running(self) -> bool:
        import kaleido

        return bool(kaleido._global_server.is_running())

    def ensure(self) -> None:
        import kaleido

        with self.lock:
            browser = browser_path()
            if self.running() and browser == self.browser:
                return
            if self.running():  # the browser setting changed: restart on the new one
                self.stop()
            if browser is None:
                where = os.environ.get(BROWSER_ENV)
                raise ExportError(
                    "static export (PNG/SVG/PDF) needs Chromium, and "
                    + (
                        f"${BROWSER_ENV}={where!r} is not an executable file"
                        if where
                        else "none was found on PATH"
                    )
                    + f". {INSTALL_HINT}. HTML, CSV and JSON export still work."
                )
            mathjax: str | bool = str(MATHJAX) if MATHJAX.is_file() else False
            kaleido.start_sync_server(
                path=browser, mathjax=mathjax, timeout=RENDER_TIMEOUT_S, silence_warnings=True
            )
            self.browser = browser
            self.starts += 1

    def stop(self) -> None:
        import kaleido

        with self.lock:
            if self.running():
                thread = getattr(kaleido._global_server, "_thread", None)
                if thread is not None and not thread.is_alive():
                    kaleido._global_server._initialized = False  # died at start: nothing to close
                else:
                    kaleido.stop_sync_server(silence_warnings=True)
            self.browser = None

    def render(self, fig_dict: dict[str, Any], opts: dict[str, Any]) -> bytes:
        """Bytes of one image; a server whose browser died is reported, not waited on forever."""
        import kaleido

        with self.lock:
            self.ensure()
            result: list[Any] = []

            def call() -> None:
                try:
                    result.append(kaleido.calc_fig_sync(fig_dict, opts=opts))
                except BaseException as err:  # noqa: BLE001 - handed to the caller below
                    result.append(err)

            worker = threading.Thread(target=call, daemon=True, name="figure-export")
            worker.start()
            server_thread = kaleido._global_server._thread
            deadline = time.monotonic() + RENDER_TIMEOUT_S
            while worker.is_alive():
                worker.join(0.05)
                if not server_thread.is_alive() and worker.is_alive():
                    self.stop()
                    raise ExportError(
                        f"the Chromium used for export ({self.browser or browser_path()}) "
                        f"stopped or could not start. {INSTALL_HINT}."
                    )
                if time.monotonic() > deadline:
                    raise ExportError(f"static export took longer than {RENDER_TIMEOUT_S:.0f} s")
            if isinstance(result[0], BaseException):
                raise ExportError(f"static export failed: {result[0]}") from result[0]
            return bytes(result[0])


_SERVER = _Server()
atexit.register(_SERVER.stop)


def stop_server() -> None:
    """Stop the kaleido server (it restarts on the next static export)."""
    _SERVER.stop()


# ---------------------------------------------------------------------------- rendering
def has_latex(fig: go.Figure) -> bool:
    """Whether any text in the figure is a LaTeX string (``"$...$"``, as Plotly requires)."""

    def walk(v: Any) -> bool:
        if isinstance(v, str):
            return bool(_LATEX.match(v))
        if isinstance(v, dict):
            return any(walk(x) for k, x in v.items() if k not in ("x", "y", "z", "customdata"))
        if isinstance(v, list | tuple):
            return any(walk(x) for x in v[:200])
        return False

    return walk(fig.to_plotly_json())


def styled(fig: go.Figure, size: str, *, title: str | None = None) -> go.Figure:
    """A copy of ``fig`` in the paper template, laid out for a named size (the input is not
    changed). ``title``: None keeps the figure's title, "" drops it, any other text replaces it.
    """
    if not isinstance(fig, go.Figure):
        raise TypeError(f"fig must be a plotly.graph_objects.Figure, got {type(fig).__name__}")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")
    out = go.Figure(fig)
    if title is not None:
        out.update_layout(title_text=title)
    return apply_paper(out, size=size)


def to_html(fig: go.Figure, *, size: str = "column", styled_fig: go.Figure | None = None) -> str:
    """A self-contained HTML page: plotly.js embedded, and MathJax too when labels use LaTeX;
    no network access needed to view it."""
    sf = styled_fig if styled_fig is not None else styled(fig, size)
    html = str(sf.to_html(include_plotlyjs=True, include_mathjax=False, full_html=True))
    if has_latex(sf) and MATHJAX.is_file():
        script = MATHJAX.read_text(encoding="utf-8").replace("</script", "<\\/script")
        html = html.replace("<head>", f"<head><script>{script}</script>", 1)
    return html


def render(
    fig: go.Figure,
    fmt: str,
    *,
    size: str = "column",
    data: Any = None,
    meta: Mapping[str, Any] | None = None,
    workspace: str | Path | None = None,
    title: str | None = None,
) -> bytes:
    """One export format as bytes (for download buttons): see :func:`export` for the formats;
    ``title`` as in :func:`styled`.

    Raises:
        ValueError: unknown format or size.
        ExportError: a static format and no working Chromium.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    sf = styled(fig, size, title=title)
    if fmt in STATIC:
        return _render_static(sf, fmt, size)
    return _render_text(
        fig, fmt, size, data=data, meta=meta, workspace=workspace, styled_fig=sf
    ).encode()


def _render_text(
    fig: go.Figure,
    fmt: str,
    size: str,
    *,
    data: Any,
    meta: Mapping[str, Any] | None,
    workspace: str | Path | None,
    styled_fig: go.Figure | None = None,
) -> str:
    if fmt == "html":
        return to_html(fig, size=size, styled_fig=styled_fig)
    if fmt == "csv":
        return data_csv(fig, data)
    size_px(size)  # validates
    extra = {"size": size, "size_inches": list(_inches(size)), **dict(meta or {})}
    return json.dumps(provenance(extra, workspace=workspace), indent=2, default=str)


def _inches(size: str) -> tuple[float, float]:
    w, h = size_px(size)
    return w / PX_PER_INCH, h / PX_PER_INCH


def _render_static(sf: go.Figure, fmt: str, size: str) -> bytes:
    w, h = size_px(size)
    scale = DPI / PX_PER_INCH if fmt == "png" else 1
    opts = {"format": fmt, "width": w, "height": h, "scale": scale}
    out = _SERVER.render(sf.to_dict(), opts)
    return with_png_dpi(out, DPI) if fmt == "png" else out


def with_png_dpi(png: bytes, dpi: int) -> bytes:
    """``png`` with a pHYs chunk saying ``dpi`` (Chromium writes none, so word processors and
    LaTeX would assume 72 or 96 dpi and print the figure three times too large)."""
    import struct
    import zlib

    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("png must be PNG bytes starting with an IHDR chunk")
    ppm = round(dpi / 0.0254)
    body = b"pHYs" + struct.pack(">IIB", ppm, ppm, 1)
    chunk = struct.pack(">I", 9) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    end_ihdr = 8 + 4 + 4 + 13 + 4
    rest = png[end_ihdr:]
    if b"pHYs" in rest[:64]:
        return png
    return png[:end_ihdr] + chunk + rest


def _write(path: Path, payload: bytes) -> None:
    from core.zoo import atomic_write_bytes

    atomic_write_bytes(path, payload)


def export(
    fig: go.Figure,
    stem: str | Path,
    *,
    formats: Sequence[str] = ("png", "svg", "pdf", "html"),
    size: str = "column",
    data: Any = None,
    meta: Mapping[str, Any] | None = None,
    root: str | Path | None = None,
    workspace: str | Path | None = None,
) -> list[Path]:
    """Write ``fig`` as ``<stem>.<fmt>`` for each format; return the paths written.

    Args:
        fig: the figure (not modified: a copy is styled for print).
        stem: output path without suffix; parent folders are created.
        formats: any of "png" (300 dpi), "svg", "pdf" (both vector), "html" (plotly.js
            embedded, works offline), "csv" (the data), "json" (provenance).
        size: named size from :data:`core.figures.SIZES` ("column" 3.5 in, "double" 7 in...).
        data: DataFrame (or mapping of columns) written as CSV; default: the figure's traces.
        meta: provenance fields merged into the JSON (models, method, hyperparameters, seed...).
        root: when given, ``stem`` is taken relative to it and must not resolve outside it.
        workspace: zoo workspace used to expand ``meta["models"]`` into their records.

    Raises:
        TypeError: ``fig`` is not a Figure.
        ValueError: unknown format or size, or a stem outside ``root``.
        ExportError: static export impossible (no Chromium); the other formats are written first.
    """
    if isinstance(formats, str) or not isinstance(formats, Sequence):
        raise TypeError(f"formats must be a sequence of format names, got {formats!r}")
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {list(formats)}")
    sf = styled(fig, size)  # validates fig and size before anything is written
    path_stem = resolve_stem(stem, root)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for fmt in dict.fromkeys(f for f in formats if f not in STATIC):
        p = path_stem.with_name(f"{path_stem.name}.{fmt}")
        text = _render_text(
            fig, fmt, size, data=data, meta=meta, workspace=workspace, styled_fig=sf
        )
        _write(p, text.encode())
        written.append(p)
    for fmt in dict.fromkeys(f for f in formats if f in STATIC):
        p = path_stem.with_name(f"{path_stem.name}.{fmt}")
        try:
            _write(p, _render_static(sf, fmt, size))
        except ExportError as err:
            done = ", ".join(q.suffix[1:] for q in written) or "nothing else"
            raise ExportError(f"{err} (written: {done})") from err
        written.append(p)
    return written


def zip_bytes(files: Mapping[str, bytes]) -> bytes:
    """A zip archive (deflated) of ``name -> content``; names must be relative and clean."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, payload in files.items():
            if name.startswith(("/", "\\")) or ".." in Path(name).parts:
                raise ValueError(f"zip member names must be relative, got {name!r}")
            zf.writestr(name, payload)
    return buf.getvalue()
