"""The workspace's figure collection: every figure a user added from any page.

Layout::

    workspace/figures/<id>/figure.json   the figure (``fig.to_json()``), as shown on the page
                           data.csv      the data behind it
                           meta.json     caption, recipe and provenance
                           export/       files written by :meth:`FigureStore.rerender`

Each figure folder is assembled under ``workspace/tmp`` and renamed into place in one step, then
indexed as a zoo record of kind ``"figure"``; a crash leaves at most an unlisted folder.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from .export import FORMATS, data_csv, provenance, render, safe_name, zip_bytes
from .theme import size_px

KIND = "figure"


@dataclass(frozen=True)
class StoredFigure:
    """One figure of the collection (a record; load the figure itself with :meth:`figure`)."""

    id: str
    caption: str
    stem: str
    page: str
    size: str
    created: str
    recipe: dict[str, Any] | None
    meta: dict[str, Any]
    folder: Path

    def figure(self) -> go.Figure:
        """The stored figure, exactly as it was added."""
        return pio.from_json((self.folder / "figure.json").read_text(encoding="utf-8"))

    def data_csv(self) -> str:
        return (self.folder / "data.csv").read_text(encoding="utf-8")

    def data(self) -> Any:
        import io

        import pandas as pd

        return pd.read_csv(io.StringIO(self.data_csv()))


class FigureStore:
    """Figures added to a workspace.

    Args:
        workspace: the workspace folder (a :class:`core.zoo.Zoo` root).
    """

    def __init__(self, workspace: str | Path):
        from core.zoo import Zoo

        if not isinstance(workspace, str | Path):
            raise TypeError(f"workspace must be a str or Path, got {type(workspace).__name__}")
        self.zoo = Zoo(workspace)
        self.root = self.zoo.figures_dir

    # ------------------------------------------------------------------ queries
    def _folder(self, fig_id: str) -> Path:
        if not isinstance(fig_id, str) or safe_name(fig_id, default="") != fig_id:
            raise ValueError(f"fig_id must be a figure id (letters, digits, _ . -), got {fig_id!r}")
        return self.root / fig_id

    def _entry(self, fig_id: str, rec: Mapping[str, Any]) -> StoredFigure:
        return StoredFigure(
            id=fig_id,
            caption=rec.get("caption", ""),
            stem=rec.get("stem", fig_id),
            page=rec.get("page", ""),
            size=rec.get("size", "column"),
            created=rec.get("created", ""),
            recipe=rec.get("recipe"),
            meta=dict(rec.get("meta") or {}),
            folder=self._folder(fig_id),
        )

    def list(self) -> list[StoredFigure]:
        """All figures, oldest first (only complete folders are listed)."""
        out = []
        for fig_id, rec in self.zoo.get_records(KIND).items():
            with contextlib.suppress(ValueError):
                entry = self._entry(fig_id, rec)
                if (entry.folder / "figure.json").is_file():
                    out.append(entry)
        return sorted(out, key=lambda e: e.created)  # stable: editing keeps the order

    def __len__(self) -> int:
        return len(self.list())

    def get(self, fig_id: str) -> StoredFigure:
        """Raises KeyError (listing some ids) when ``fig_id`` is not in the collection."""
        folder = self._folder(fig_id)  # validates the id first
        rec = self.zoo.get_records(KIND).get(fig_id)
        if rec is None or not (folder / "figure.json").is_file():
            ids = [f.id for f in self.list()][:8]
            raise KeyError(f"fig_id {fig_id!r} is not in the figure collection; some ids: {ids}")
        return self._entry(fig_id, rec)

    # ------------------------------------------------------------------ writes
    def add(
        self,
        fig: go.Figure,
        *,
        caption: str = "",
        stem: str = "figure",
        data: Any = None,
        meta: Mapping[str, Any] | None = None,
        recipe: Mapping[str, Any] | None = None,
        page: str = "",
        size: str = "column",
    ) -> StoredFigure:
        """Store ``fig`` with its caption, data, provenance and recipe; return its entry.

        Args:
            fig: the figure as shown on the page.
            caption: free text (editable later).
            stem: file-name stem for its exports (made safe).
            data: the DataFrame behind the figure (default: extracted from the traces).
            meta: provenance fields (models, method, hyperparameters, seed...).
            recipe: ``{"kind": ..., "args": {...}}`` that recomputes it (see core.notebook_export).
            page: the page it came from.
            size: its default export size.
        """
        if not isinstance(fig, go.Figure):
            raise TypeError(f"fig must be a plotly.graph_objects.Figure, got {type(fig).__name__}")
        if not isinstance(caption, str):
            raise TypeError(f"caption must be a str, got {type(caption).__name__}")
        if recipe is not None and (not isinstance(recipe, Mapping) or "kind" not in recipe):
            raise ValueError(f"recipe must be a mapping with a 'kind', got {recipe!r}")
        size_px(size)
        stem = safe_name(stem)
        fig_id = f"{stem[:50]}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        created = datetime.now(UTC).isoformat(timespec="microseconds")
        rec = {
            "caption": caption,
            "stem": stem,
            "page": page,
            "size": size,
            "created": created,
            "recipe": dict(recipe) if recipe is not None else None,
            "meta": dict(meta or {}),
        }
        prov = provenance(
            {**dict(meta or {}), "caption": caption, "recipe": rec["recipe"]},
            workspace=self.zoo.root,
        )
        tmp = self.zoo.tmp_dir / f".tmp-fig-{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        try:
            (tmp / "figure.json").write_text(fig.to_json() or "{}", encoding="utf-8")
            (tmp / "data.csv").write_text(data_csv(fig, data), encoding="utf-8")
            (tmp / "meta.json").write_text(
                json.dumps(prov, indent=2, default=str), encoding="utf-8"
            )
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, self._folder(fig_id))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.zoo.put_record(KIND, fig_id, rec)
        return self._entry(fig_id, rec)

    def set_caption(self, fig_id: str, caption: str) -> StoredFigure:
        """Change a figure's caption (index and meta.json)."""
        if not isinstance(caption, str):
            raise TypeError(f"caption must be a str, got {type(caption).__name__}")
        entry = self.get(fig_id)
        rec = {**self.zoo.get_records(KIND)[fig_id], "caption": caption}
        meta_path = entry.folder / "meta.json"
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["caption"] = caption
        from core.zoo import atomic_write_bytes

        atomic_write_bytes(meta_path, json.dumps(meta, indent=2, default=str).encode())
        self.zoo.put_record(KIND, fig_id, rec)
        return self._entry(fig_id, rec)

    def delete(self, fig_id: str) -> None:
        """Remove a figure: unlisted first, then its folder."""
        folder = self.get(fig_id).folder
        self.zoo.delete_record(KIND, fig_id)
        shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------------ exports
    def files(
        self, fig_id: str, *, size: str | None = None, formats: Sequence[str] = FORMATS
    ) -> dict[str, bytes]:
        """File name -> bytes of one figure in every requested format (its stored data as
        CSV, its stored provenance as JSON, and its recipe as a notebook when it has one)."""
        entry = self.get(fig_id)
        size = size or entry.size
        bad = [f for f in formats if f not in (*FORMATS, "ipynb")]
        if bad or not formats:
            raise ValueError(
                f"formats must be a non-empty subset of {(*FORMATS, 'ipynb')}, got {list(formats)}"
            )
        fig = entry.figure()
        out: dict[str, bytes] = {}
        for fmt in formats:
            name = f"{entry.stem}.{fmt}"
            if fmt == "csv":
                out[name] = entry.data_csv().encode()
            elif fmt == "json":
                out[name] = (entry.folder / "meta.json").read_bytes()
            elif fmt == "ipynb":
                if entry.recipe:
                    from core.notebook_export import notebook_bytes

                    out[name] = notebook_bytes(
                        entry.recipe, workspace=self.zoo.root, title=entry.caption
                    )
            else:
                out[name] = render(fig, fmt, size=size)
        return out

    def zip(
        self,
        ids: Sequence[str] | None = None,
        *,
        size: str | None = None,
        formats: Sequence[str] = FORMATS,
        progress: Callable[[int, int, str], None] | None = None,
    ) -> bytes:
        """A zip with one folder per figure (``<id>/<stem>.<fmt>``) plus ``captions.md``."""
        entries = [self.get(i) for i in ids] if ids is not None else self.list()
        files: dict[str, bytes] = {}
        lines = ["# Figures", ""]
        for k, e in enumerate(entries):
            if progress:
                progress(k, len(entries), e.id)
            for name, payload in self.files(e.id, size=size, formats=formats).items():
                files[f"{e.id}/{name}"] = payload
            lines.append(f"- **{e.id}/{e.stem}**: {e.caption or '(no caption)'}")
        files["captions.md"] = ("\n".join(lines) + "\n").encode()
        return zip_bytes(files)

    def rerender(
        self,
        size: str,
        *,
        ids: Sequence[str] | None = None,
        formats: Sequence[str] = ("png", "svg", "pdf"),
        progress: Callable[[int, int, str], None] | None = None,
    ) -> builtins.list[Path]:
        """Write every figure again at ``size`` into ``<id>/export/`` and make ``size`` its
        default; returns the files written."""
        size_px(size)
        entries = [self.get(i) for i in ids] if ids is not None else self.list()
        from core.zoo import atomic_write_bytes

        written: builtins.list[Path] = []
        for k, e in enumerate(entries):
            if progress:
                progress(k, len(entries), e.id)
            out = e.folder / "export"
            out.mkdir(exist_ok=True)
            for name, payload in self.files(e.id, size=size, formats=formats).items():
                atomic_write_bytes(out / name, payload)
                written.append(out / name)
            self.zoo.put_record(KIND, e.id, {**self.zoo.get_records(KIND)[e.id], "size": size})
        if progress:
            progress(len(entries), len(entries), "")
        return written
