"""Repair of a damaged workspace: the index rebuilt from the checkpoints' own metadata."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..io import load_into
from ..models import create_model
from .store import (
    ROLES,
    WorkspaceError,
    Zoo,
    _check_root,
    _check_subfolder,
    _now,
    _sha256,
    _writable,
    default_workspace,
    slugify,
)


@dataclass
class RepairReport:
    """What :func:`repair` did: ids listed again, files skipped (name -> reason), index rows
    dropped because their file is gone, and where a damaged index was kept."""

    recovered: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    kept_aside: Path | None = None

    def summary(self) -> str:
        lines = [f"recovered {len(self.recovered)} model(s): {', '.join(self.recovered) or '-'}"]
        if self.kept_aside is not None:
            lines.append(f"the damaged index was kept as {self.kept_aside}")
        if self.dropped:
            lines.append(f"dropped {len(self.dropped)} row(s) whose file is gone: {self.dropped}")
        for name, why in self.skipped.items():
            lines.append(f"skipped models/{name}: {why}")
        return "\n".join(lines)


def repair(root: str | Path | None = None) -> RepairReport:
    """Rebuild a workspace's index from its checkpoints and their metadata.

    A damaged index (not SQLite, truncated, a folder, another program's database, unreadable
    rows) is moved aside to ``index.sqlite.damaged-<time>`` (with its ``-wal``/``-shm``), never
    deleted. Then every checkpoint in ``models/`` that the index does not list is checked (a
    safetensors file with the zoo's metadata that loads into its architecture) and listed
    again under its file name, with the record stored in its metadata; anything else is
    skipped with the reason. Rows whose checkpoint file is gone are dropped.

    Raises:
        WorkspaceError: the workspace is read-only, a file, or its ``models`` is a file.
    """
    root = Path(root).expanduser().resolve() if root is not None else default_workspace()
    _check_root(root)
    if not root.is_dir():
        raise WorkspaceError(f"the workspace {root} does not exist: nothing to repair")
    _check_subfolder(root / "models")
    if not _writable(root):
        raise WorkspaceError(
            f"the workspace {root} is read-only: the index cannot be rebuilt there; copy the "
            "workspace to a writable folder and repair the copy"
        )
    report = RepairReport()
    db = root / "index.sqlite"
    try:
        zoo = Zoo(root)
    except WorkspaceError as err:
        if not err.repairable:
            raise
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        aside = db.with_name(f"{db.name}.damaged-{stamp}")
        k = 2
        while os.path.lexists(aside):
            aside = db.with_name(f"{db.name}.damaged-{stamp}-{k}")
            k += 1
        for suffix in ("", "-wal", "-shm"):
            if os.path.lexists(f"{db}{suffix}"):
                os.replace(f"{db}{suffix}", f"{aside}{suffix}")
        report.kept_aside = aside
        zoo = Zoo(root)
    with zoo.transaction() as con:
        for r in con.execute("SELECT id, file FROM models").fetchall():
            if not (zoo._inside(r[1]) and (root / r[1]).is_file()):
                con.execute("DELETE FROM models WHERE id=?", (r[0],))
                report.dropped.append(r[0])
    rows = []
    for path in zoo.orphans():
        try:
            rows.append(_record_from_file(path))
        except (ValueError, TypeError, KeyError, OSError) as err:
            report.skipped[path.name] = str(err)
    with zoo.transaction() as con:
        for d in rows:
            if con.execute("SELECT 1 FROM models WHERE id=?", (d["id"],)).fetchone():
                report.skipped[f"{d['id']}.safetensors"] = f"id {d['id']!r} is already listed"
                continue
            con.execute(
                f"INSERT INTO models ({', '.join(d)}) VALUES ({', '.join('?' * len(d))})",
                list(d.values()),
            )
            report.recovered.append(d["id"])
    return report


def _record_from_file(path: Path) -> dict[str, Any]:
    """The index row of a checkpoint, from its safetensors metadata; raises with the reason."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    model_id = path.stem
    if slugify(model_id) != model_id:
        raise ValueError(f"{path.name} is not named like a zoo model (letters, digits, _ . -)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"not a readable safetensors file ({err})") from None
    missing = [k for k in ("arch", "arch_kwargs", "task") if k not in meta]
    if missing:
        raise ValueError(f"no zoo metadata ({', '.join(missing)} missing): not written by the zoo")
    try:
        kwargs = json.loads(meta["arch_kwargs"])
        extra = json.loads(meta.get("mixmerge_record", "{}"))
    except json.JSONDecodeError as err:
        raise ValueError(f"its metadata is not valid JSON ({err})") from None
    if not isinstance(kwargs, dict) or not isinstance(extra, dict):
        raise ValueError("its metadata arch_kwargs / mixmerge_record are not JSON objects")
    sd = dict(load_file(str(path)))
    load_into(create_model(meta["arch"], seed=None, **kwargs), sd)
    role = extra.get("role") if extra.get("role") in ROLES else "custom"
    note = extra.get("note") if "role" in extra else "recovered by zoo repair (no record kept)"
    seed = extra.get("seed")
    d: dict[str, Any] = {
        "id": model_id,
        "arch": meta["arch"],
        "arch_kwargs": json.dumps(kwargs),
        "task": meta["task"],
        "seed": seed if isinstance(seed, int) else None,
        "role": role,
        "parent_id": extra.get("parent_id") if isinstance(extra.get("parent_id"), str) else None,
        "base_id": extra.get("base_id") if isinstance(extra.get("base_id"), str) else None,
        "train_config": json.dumps(extra.get("train_config") or {}, default=str),
        "metrics": json.dumps(extra.get("metrics") or {}, default=str),
        "recipe": json.dumps(extra.get("recipe") or {}, default=str),
        "file": f"models/{path.name}",
        "sha256": _sha256(path),
        "n_params": sum(v.numel() for v in sd.values() if v.is_floating_point()),
        "created": str(extra.get("created") or _now()),
        "note": str(note or ""),
    }
    return d
