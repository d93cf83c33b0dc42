"""Persistent model zoo: safetensors checkpoints plus an SQLite index in a workspace folder.

Layout of a workspace (default ``./workspace``; ``MIXMERGE_WORKSPACE`` overrides)::

    workspace/
      index.sqlite        models + generic records (WAL mode, every write in a transaction)
      models/<id>.safetensors
      figures/            exported figures
      tmp/                half-written files (never listed; cleaned on open)

Writes are atomic: a checkpoint is written to a temporary name, flushed, fsynced and renamed,
and its index row is committed in the same SQLite transaction only after the rename. A crash
at any point leaves either a complete, listed model or nothing listed.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .io import conform_dtypes, load_into
from .models import Classifier, create_model
from .params import StateDict, check_state_dict

WORKSPACE_ENV = "MIXMERGE_WORKSPACE"
ROLES = ("base", "finetune", "independent", "custom", "imported", "merged", "mixup")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    arch TEXT NOT NULL,
    arch_kwargs TEXT NOT NULL,
    task TEXT NOT NULL,
    seed INTEGER,
    role TEXT NOT NULL,
    parent_id TEXT,
    base_id TEXT,
    train_config TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    recipe TEXT NOT NULL DEFAULT '{}',
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    n_params INTEGER NOT NULL,
    created TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    data TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
"""


def default_workspace() -> Path:
    """``$MIXMERGE_WORKSPACE`` or ``./workspace``."""
    return Path(os.environ.get(WORKSPACE_ENV, "workspace")).expanduser().resolve()


@dataclass(frozen=True)
class ModelRecord:
    """One row of the zoo index."""

    id: str
    arch: str
    arch_kwargs: dict[str, Any]
    task: str
    seed: int | None
    role: str
    parent_id: str | None
    base_id: str | None
    train_config: dict[str, Any]
    metrics: dict[str, Any]
    recipe: dict[str, Any]
    file: str
    sha256: str
    n_params: int
    created: str
    note: str = ""

    @property
    def test_accuracy(self) -> float | None:
        v = self.metrics.get("test_accuracy")
        return float(v) if v is not None else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_JSON_FIELDS = ("arch_kwargs", "train_config", "metrics", "recipe")
_MODEL_COLUMNS = tuple(ModelRecord.__dataclass_fields__)
_SLUG = re.compile(r"[^a-zA-Z0-9_.-]+")


def slugify(text: str) -> str:
    """A safe id fragment: letters, digits, '_', '.', '-'."""
    s = _SLUG.sub("-", text).strip("-.")
    return s[:80] or "model"


def _check_id(model_id: object) -> None:
    if not isinstance(model_id, str):
        raise TypeError(f"model_id must be a str, got {type(model_id).__name__} {model_id!r}")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same filesystem, fsync, rename)."""
    tmp_dir = tmp_dir or path.parent
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f".tmp-{uuid.uuid4().hex}-{path.name}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class WorkspaceError(ValueError):
    """A workspace that cannot be opened, read or written; the message names the path, what is
    wrong and the way out. ``repairable``: ``python -m core zoo repair`` (:func:`repair`) fixes it.
    """

    def __init__(self, message: str, *, repairable: bool = False):
        super().__init__(message)
        self.repairable = repairable


def _repair_hint(root: Path) -> str:
    return (
        f"run `python -m core zoo repair --workspace {root}` (or Repair on the Home page) to "
        "rebuild the index from the checkpoints in models/; the damaged index is kept beside it"
    )


def _damaged(db: Path, why: object) -> WorkspaceError:
    return WorkspaceError(
        f"the zoo index {db} is damaged ({why}): {_repair_hint(db.parent)}", repairable=True
    )


def _check_root(root: Path) -> None:
    """Refuse a workspace path that is a file or lies under a file."""
    if root.exists() and not root.is_dir():
        raise WorkspaceError(
            f"the workspace root must be a folder, got a file: {root}; choose another folder "
            "(Settings in the sidebar, --workspace or MIXMERGE_WORKSPACE)"
        )
    for parent in root.parents:
        if parent.exists():
            if not parent.is_dir():
                raise WorkspaceError(
                    f"the workspace {root} cannot be created: {parent} is a file, not a folder; "
                    "choose another folder (Settings in the sidebar, --workspace or "
                    "MIXMERGE_WORKSPACE)"
                )
            break


def _check_subfolder(d: Path) -> None:
    if (d.exists() or d.is_symlink()) and not d.is_dir():
        raise WorkspaceError(
            f"{d} must be a folder (the workspace keeps its {d.name} there), but it is a file; "
            "move it away or choose another workspace folder"
        )


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


class Zoo:
    """A workspace's model store.

    Args:
        root: workspace folder (created if missing); default :func:`default_workspace`.

    Thread- and process-safe: each call opens its own SQLite connection; writers serialise on
    SQLite's lock (``BEGIN IMMEDIATE``, 30 s busy timeout).

    A read-only workspace (``read_only``) is opened for reading: its models are listed, loaded
    and merged from; every write raises :class:`WorkspaceError`. A damaged index raises
    :class:`WorkspaceError` (``repairable``) naming the way out, :func:`repair`.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser().resolve() if root is not None else default_workspace()
        _check_root(self.root)
        self.models_dir = self.root / "models"
        self.figures_dir = self.root / "figures"
        self.tmp_dir = self.root / "tmp"
        self.db_path = self.root / "index.sqlite"
        if not self.root.exists():
            try:
                self.root.mkdir(parents=True)
            except OSError as err:
                raise WorkspaceError(
                    f"the workspace {self.root} cannot be created: {err.strerror or err}; "
                    "choose another folder (Settings in the sidebar, --workspace or "
                    "MIXMERGE_WORKSPACE)"
                ) from None
        for d in (self.models_dir, self.figures_dir, self.tmp_dir):
            _check_subfolder(d)
        if self.db_path.exists() and not self.db_path.is_file():
            raise _damaged(self.db_path, "it is a folder, not a file")
        self.read_only = not _writable(self.root) or (
            self.db_path.exists() and not _writable(self.db_path)
        )
        if self.read_only:
            if not self.db_path.exists():
                raise WorkspaceError(
                    f"the workspace {self.root} is read-only and holds no zoo index "
                    "(index.sqlite); choose a writable folder (Settings in the sidebar, "
                    "--workspace or MIXMERGE_WORKSPACE)"
                )
        else:
            for d in (self.models_dir, self.figures_dir, self.tmp_dir):
                d.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            if not self.read_only:
                con.execute("PRAGMA journal_mode=WAL")
                con.executescript(_SCHEMA)
            self._validate(con)
        if not self.read_only:
            self._clean_tmp()

    def _validate(self, con: sqlite3.Connection) -> None:
        """Refuse an index that is not this program's or is damaged (checked once on open)."""
        check = con.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise _damaged(self.db_path, f"integrity check: {check[0] if check else 'no answer'}")
        for table, need in (("models", _MODEL_COLUMNS), ("records", ("kind", "key", "data"))):
            cols = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
            if not set(need) <= cols:
                raise _damaged(
                    self.db_path,
                    f"its {table!r} table has columns {sorted(cols)}, not the zoo's "
                    "(another program's database?)",
                )
        for row in con.execute("SELECT * FROM models"):
            self._row(row)

    def _check_writable(self) -> None:
        if self.read_only:
            raise WorkspaceError(
                f"the workspace {self.root} is read-only: its models can be listed, loaded and "
                "merged from, but nothing can be added, changed or deleted; choose a writable "
                "workspace folder (Settings in the sidebar, --workspace or MIXMERGE_WORKSPACE)"
            )

    def __repr__(self) -> str:
        return f"Zoo({str(self.root)!r}, {len(self)} models)"

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = self._open()
        except sqlite3.DatabaseError as err:
            raise self._db_error(err) from None
        try:
            yield con
        except sqlite3.DatabaseError as err:
            raise self._db_error(err) from None
        finally:
            con.close()

    def _open(self) -> sqlite3.Connection:
        if not self.read_only:
            con = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        else:  # no -shm/-wal can be created: read the file as it is
            uri = self.db_path.as_uri()
            con = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None)
            try:
                con.execute("SELECT 1 FROM sqlite_master LIMIT 1")
            except sqlite3.OperationalError:
                con.close()
                con = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA busy_timeout=30000")
        if not self.read_only:
            con.execute("PRAGMA synchronous=NORMAL")
        return con

    def _db_error(self, err: sqlite3.DatabaseError) -> WorkspaceError:
        text = str(err)
        if "readonly" in text or "read-only" in text:
            self.read_only = True
            try:
                self._check_writable()
            except WorkspaceError as ro:
                return ro
        if "locked" in text or "busy" in text:
            return WorkspaceError(
                f"the zoo index {self.db_path} stayed locked by another program for 30 s "
                f"({text}); close the other program or try again"
            )
        if isinstance(err, sqlite3.OperationalError) and "unable to open" in text:
            return WorkspaceError(
                f"the zoo index {self.db_path} cannot be opened ({text}); check that the "
                "workspace folder is readable, or choose another one"
            )
        return _damaged(self.db_path, text)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locked) transaction, committed on success, rolled back on error."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def _clean_tmp(self, older_than_s: float = 3600.0) -> None:
        if self.read_only:
            return
        now = time.time()
        for d in (self.tmp_dir, self.models_dir):
            for f in d.glob(".tmp-*"):
                with contextlib.suppress(OSError):
                    if now - f.stat().st_mtime > older_than_s:
                        f.unlink()

    def _inside(self, rel: str) -> bool:
        """True when ``rel`` (an index ``file`` entry) names a file inside ``models/``."""
        return (self.root / rel).resolve().parent == self.models_dir.resolve()

    def _file_path(self, rel: str) -> Path:
        if not self._inside(rel):
            raise ValueError(
                f"index entry file must lie inside {self.models_dir}, got {rel!r} (outside the "
                "workspace: the index was edited by hand or comes from an untrusted source)"
            )
        return self.root / rel

    def _row(self, row: sqlite3.Row) -> ModelRecord:
        d = dict(row)
        try:
            for k in _JSON_FIELDS:
                d[k] = json.loads(d[k])
            return ModelRecord(**{k: d[k] for k in _MODEL_COLUMNS})
        except (json.JSONDecodeError, TypeError, KeyError) as err:
            raise _damaged(
                self.db_path, f"the row of model {d.get('id')!r} cannot be read: {err}"
            ) from None

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        with self._connect() as con:
            return int(con.execute("SELECT COUNT(*) FROM models").fetchone()[0])

    def __contains__(self, model_id: object) -> bool:
        if not isinstance(model_id, str):
            return False
        with self._connect() as con:
            return (
                con.execute("SELECT 1 FROM models WHERE id=?", (model_id,)).fetchone() is not None
            )

    def list(
        self, *, role: str | None = None, arch: str | None = None, task: str | None = None
    ) -> list[ModelRecord]:
        """All models (optionally filtered), oldest first; only complete checkpoints are listed."""
        where, args = [], []
        for col, val in (("role", role), ("arch", arch), ("task", task)):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        sql = (
            "SELECT * FROM models"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY created, rowid"
        )
        with self._connect() as con:
            rows = [self._row(r) for r in con.execute(sql, args)]
        return [r for r in rows if self._inside(r.file) and (self.root / r.file).exists()]

    def table(self) -> Any:
        """The index as a pandas DataFrame (one row per model) for display."""
        import pandas as pd

        rows = [
            {
                "id": r.id,
                "architecture": r.arch,
                "task": r.task,
                "role": r.role,
                "seed": r.seed,
                "parent": r.parent_id or "",
                "base": r.base_id or "",
                "test_accuracy": r.test_accuracy,
                "params": r.n_params,
                "created": r.created,
            }
            for r in self.list()
        ]
        cols = [
            "id",
            "architecture",
            "task",
            "role",
            "seed",
            "parent",
            "base",
            "test_accuracy",
            "params",
            "created",
        ]
        return pd.DataFrame(rows, columns=cols)

    def get(self, model_id: str) -> ModelRecord:
        """The record of ``model_id``.

        Raises:
            KeyError: no such model (message lists a few ids that exist).
            TypeError: ``model_id`` is not a str.
        """
        _check_id(model_id)
        with self._connect() as con:
            row = con.execute("SELECT * FROM models WHERE id=?", (model_id,)).fetchone()
        if row is None:
            ids = [r.id for r in self.list()][:8]
            raise KeyError(
                f"model_id {model_id!r} is not in the zoo at {self.root}; some ids: {ids}"
            )
        return self._row(row)

    def state_dict(self, model_id: str, *, verify: bool = False) -> StateDict:
        """Load the checkpoint of ``model_id`` (CPU tensors). ``verify`` checks the sha256."""
        from safetensors.torch import load_file

        rec = self.get(model_id)
        path = self._file_path(rec.file)
        try:
            if verify and _sha256(path) != rec.sha256:
                raise ValueError(
                    f"checkpoint of {model_id!r} is corrupt: sha256 differs from the index"
                )
            return dict(load_file(str(path)))
        except FileNotFoundError:
            raise KeyError(
                f"model_id {model_id!r} was deleted (its checkpoint file is gone)"
            ) from None

    def load_model(self, model_id: str, *, device: str | torch.device = "cpu") -> Classifier:
        """Rebuild the architecture from the index and load the checkpoint (eval mode)."""
        rec = self.get(model_id)
        model = create_model(rec.arch, seed=None, **rec.arch_kwargs)
        load_into(model, self.state_dict(model_id))
        return model.to(device).eval()

    # ------------------------------------------------------------------ writes
    def add(
        self,
        model: nn.Module | Mapping[str, Tensor],
        *,
        arch: str,
        arch_kwargs: Mapping[str, Any],
        task: str,
        role: str = "custom",
        name: str | None = None,
        seed: int | None = None,
        parent_id: str | None = None,
        base_id: str | None = None,
        train_config: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        recipe: Mapping[str, Any] | None = None,
        note: str = "",
        replace: bool = False,
    ) -> ModelRecord:
        """Store a model (or state dict) and index it atomically.

        Args:
            model: the module or its state dict; it must load into ``create_model(arch, **arch_kwargs)``.
            name: preferred id (made unique with a suffix unless ``replace``).
            role: one of ``ROLES``.
            recipe: how it was made (merge method, hyperparameters, source ids), for provenance.

        Returns:
            The stored record.
        """
        from safetensors.torch import save

        self._check_writable()
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        sd = model.state_dict() if isinstance(model, nn.Module) else dict(model)
        sd = check_state_dict("model", sd)
        probe = create_model(arch, seed=None, **dict(arch_kwargs))
        load_into(probe, sd)  # validates keys, shapes, dense tensors, finiteness, dtypes
        # stored in the architecture's dtypes; a copy each, so tied tensors are saved apart
        sd = {
            k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format)
            for k, v in conform_dtypes(probe, sd).items()
        }
        for pid, label in ((parent_id, "parent_id"), (base_id, "base_id")):
            if pid is not None and pid not in self:
                raise ValueError(f"{label} {pid!r} is not in the zoo")
        base_name = slugify(
            name or f"{arch}-{task}-{role}" + (f"-s{seed}" if seed is not None else "")
        )
        created = _now()
        provenance = {
            "role": role,
            "seed": seed,
            "parent_id": parent_id,
            "base_id": base_id,
            "train_config": dict(train_config or {}),
            "metrics": dict(metrics or {}),
            "recipe": dict(recipe or {}),
            "created": created,
            "note": note,
        }
        meta = {
            "arch": arch,
            "arch_kwargs": json.dumps(dict(arch_kwargs)),
            "task": task,
            "format": "pt",
            # the rest of the record, so `zoo repair` can rebuild the index from the files
            "mixmerge_record": json.dumps(provenance, default=str),
        }
        blob = save(sd, metadata=meta)
        n_params = sum(v.numel() for v in sd.values() if v.is_floating_point())
        with self.transaction() as con:
            model_id = base_name
            if replace:
                old = con.execute("SELECT file FROM models WHERE id=?", (model_id,)).fetchone()
                if old is not None:
                    con.execute("DELETE FROM models WHERE id=?", (model_id,))
                else:  # a checkpoint the index does not own is kept, never overwritten
                    self._keep_orphan(self.root / f"models/{model_id}.safetensors")
            else:
                k = 2
                while self._taken(con, model_id):
                    model_id = f"{base_name}-{k}"
                    k += 1
            rel = f"models/{model_id}.safetensors"
            atomic_write_bytes(self.root / rel, blob, self.tmp_dir)
            rec = ModelRecord(
                id=model_id,
                arch=arch,
                arch_kwargs=dict(arch_kwargs),
                task=task,
                seed=seed,
                role=role,
                parent_id=parent_id,
                base_id=base_id,
                train_config=dict(train_config or {}),
                metrics=dict(metrics or {}),
                recipe=dict(recipe or {}),
                file=rel,
                sha256=hashlib.sha256(blob).hexdigest(),
                n_params=n_params,
                created=created,
                note=note,
            )
            d = rec.to_dict()
            for f in _JSON_FIELDS:
                d[f] = json.dumps(d[f], default=str)
            cols = ", ".join(d)
            con.execute(
                f"INSERT INTO models ({cols}) VALUES ({', '.join('?' * len(d))})", list(d.values())
            )
        return rec

    def _taken(self, con: sqlite3.Connection, model_id: str) -> bool:
        """An id is taken when the index lists it or a checkpoint file of that name exists."""
        if con.execute("SELECT 1 FROM models WHERE id=?", (model_id,)).fetchone():
            return True
        return os.path.lexists(self.models_dir / f"{model_id}.safetensors")

    def _keep_orphan(self, path: Path) -> None:
        """Move an unindexed checkpoint at ``path`` to a free ``<id>-orphan-<time>`` name."""
        if not os.path.lexists(path):
            return
        stem = f"{path.stem}-orphan-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
        target = path.with_name(f"{stem}.safetensors")
        k = 2
        while os.path.lexists(target):
            target = path.with_name(f"{stem}-{k}.safetensors")
            k += 1
        os.replace(path, target)

    def orphans(self) -> builtins.list[Path]:
        """Checkpoint files in ``models/`` that the index does not list (after a damaged or
        replaced index, or a crash between writing a file and committing its row)."""
        if not self.models_dir.is_dir():
            return []
        with self._connect() as con:
            owned = {r[0] for r in con.execute("SELECT file FROM models")}
        return sorted(
            p
            for p in self.models_dir.glob("*.safetensors")
            if not p.name.startswith(".tmp-") and f"models/{p.name}" not in owned
        )

    def repair(self) -> RepairReport:
        """Rebuild the index from the checkpoints in ``models/``; see :func:`repair`."""
        return repair(self.root)

    def update_metrics(self, model_id: str, metrics: Mapping[str, Any]) -> ModelRecord:
        """Merge ``metrics`` into the stored metrics of ``model_id``."""
        _check_id(model_id)
        self._check_writable()
        with self.transaction() as con:
            row = con.execute("SELECT metrics FROM models WHERE id=?", (model_id,)).fetchone()
            if row is None:
                raise KeyError(f"model_id {model_id!r} is not in the zoo")
            merged = {**json.loads(row[0]), **dict(metrics)}
            con.execute(
                "UPDATE models SET metrics=? WHERE id=?",
                (json.dumps(merged, default=str), model_id),
            )
        return self.get(model_id)

    def delete(self, model_id: str) -> None:
        """Remove a model from the index and its file. Children keep their (dangling) parent id.

        The file is moved out of ``models/`` while the index is write-locked, so an ``add`` of
        the same name in another process (which also writes under that lock) can never have
        its new file removed: a listed model always has its checkpoint. If the index commit
        fails the file is moved back.
        """
        _check_id(model_id)
        self._check_writable()
        trash: Path | None = None
        path = self.root
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute("SELECT file FROM models WHERE id=?", (model_id,)).fetchone()
                if row is None:
                    raise KeyError(f"model_id {model_id!r} is not in the zoo")
                con.execute("DELETE FROM models WHERE id=?", (model_id,))
                if self._inside(row[0]):  # a tampered index never deletes outside the workspace
                    path = self.root / row[0]
                    trash = self.tmp_dir / f".tmp-deleted-{uuid.uuid4().hex}-{path.name}"
                    try:
                        os.replace(path, trash)
                    except FileNotFoundError:
                        trash = None
                con.execute("COMMIT")
            except BaseException:
                if trash is not None:
                    os.replace(trash, path)
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
                raise
        if trash is not None:
            with contextlib.suppress(FileNotFoundError):
                trash.unlink()

    # ------------------------------------------------------------------ generic records
    def put_record(self, kind: str, key: str, data: Mapping[str, Any]) -> None:
        """Store a JSON-serialisable result (training runs, sweeps, figures) under (kind, key)."""
        if not kind or not key:
            raise ValueError(f"kind and key must be non-empty, got {kind!r}, {key!r}")
        self._check_writable()
        with self.transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO records (kind, key, data, created) VALUES (?, ?, ?, ?)",
                (kind, key, json.dumps(dict(data), default=str), _now()),
            )

    def get_records(self, kind: str) -> dict[str, dict[str, Any]]:
        """All records of ``kind``, key -> data, oldest first."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT key, data FROM records WHERE kind=? ORDER BY created, rowid", (kind,)
            ).fetchall()
        return {r[0]: json.loads(r[1]) for r in rows}

    def delete_record(self, kind: str, key: str) -> None:
        self._check_writable()
        with self.transaction() as con:
            con.execute("DELETE FROM records WHERE kind=? AND key=?", (kind, key))


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


ProgressFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ZooPlan:
    """What the default zoo holds and how it is trained.

    The task-vector setting: a base MLP pre-trained on another task than the fine-tunes'
    (``pretrain_classes``: only digits 0-4 of every domain, a 5-way task), then one fine-tune
    per digit domain on all ten digits (the domains share the digit label space, so task
    vectors can be added). The base is thus clearly weaker than every fine-tune on its task
    (it never predicts 5-9), as a pretrained backbone is before fine-tuning: the regime the
    merging papers study. A base pre-trained on the ten-way target tasks themselves was nearly
    as good as the fine-tunes and every merge fell below it; one pre-trained on Fashion-MNIST
    alone was at chance and its task vectors did not combine (docs/BENCHMARKS.md). The
    mode-connectivity setting: ``independent_seeds`` models per architecture trained from
    different initialisations on the same data.
    """

    base_arch: str = "mlp"
    base_kwargs: dict[str, Any] = field(default_factory=lambda: {"width": 512, "depth": 3})
    domains: tuple[str, ...] = ("mnist", "mnist_inverted", "mnist_rotated", "digits")
    pretrain_tasks: tuple[str, ...] | None = None  # the base's domains (None: ``domains``)
    pretrain_classes: tuple[int, ...] | None = (0, 1, 2, 3, 4)  # the base's task: these only
    base_per_task: int | None = None  # training examples per domain before the class filter
    base_epochs: int = 2
    finetune_epochs: int = 8
    finetune_lr: float = 5e-4
    independent: tuple[tuple[str, dict[str, Any], int, float], ...] = (
        ("mlp", {"width": 512, "depth": 3}, 6, 1e-3),  # arch, kwargs, epochs, lr
        ("cnn", {"width": 16}, 4, 1e-2),
        ("resnet20", {"width": 8}, 3, 1e-2),
    )
    independent_task: str = "mnist"
    independent_seeds: tuple[int, ...] = (1, 2)
    max_steps: int | None = None  # caps every run (tests use tiny plans)

    def n_models(self) -> int:
        return 1 + len(self.domains) + len(self.independent) * len(self.independent_seeds)


DEFAULT_PLAN = ZooPlan()


def pretrain_data(plan: ZooPlan) -> tuple[Tensor, Tensor, str]:
    """The base's training data: the pooled ``pretrain_tasks`` (default: the domains), kept
    to ``pretrain_classes``; with a one-line description for the zoo's note."""
    from .data import mixture

    tasks = list(plan.pretrain_tasks or plan.domains)
    x, y = mixture(tasks, n_per_task=plan.base_per_task, generator=torch.Generator().manual_seed(0))
    what = "+".join(tasks)
    if plan.pretrain_classes is not None:
        keep = torch.isin(y, torch.tensor(plan.pretrain_classes))
        if not bool(keep.any()):
            raise ValueError(
                f"pretrain_classes {plan.pretrain_classes} selects no example of {tasks}"
            )
        x, y = x[keep], y[keep]
        what += f", classes {','.join(map(str, plan.pretrain_classes))} only"
    return x, y, what


def ensure_default(
    zoo: Zoo,
    plan: ZooPlan = DEFAULT_PLAN,
    *,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[ModelRecord]:
    """Train whatever part of the default zoo is missing; return the default zoo's records.

    Models already present (by id) are kept, so an interrupted build resumes where it stopped.
    ``progress`` receives dicts with ``model`` (k), ``models`` (n), ``id``, ``epoch``,
    ``epochs``, ``test_accuracy`` and ``message``.
    """
    from .data import get_task
    from .train import TrainConfig, evaluate, train

    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a Zoo, got {type(zoo).__name__}")
    ids = list(_default_specs(plan))
    listed = {r.id for r in zoo.list()}
    if all(i in listed for i in ids):  # nothing to train: the zoo is used as it is
        return [zoo.get(i) for i in ids]
    zoo._check_writable()
    check_default_ids(zoo, plan)  # before any training
    n_total = plan.n_models()
    k = 0
    records: list[ModelRecord] = []

    def report(model_id: str) -> ProgressFn:
        def cb(info: dict[str, Any]) -> None:
            if progress is not None:
                progress(
                    {
                        **info,
                        "model": k,
                        "models": n_total,
                        "id": model_id,
                        "message": f"model {k}/{n_total} {model_id}: epoch {info.get('epoch')}/{info.get('epochs')}",
                    }
                )

        return cb

    def task_metrics(model: nn.Module, tasks: tuple[str, ...]) -> dict[str, Any]:
        per = {
            t: evaluate(model, get_task(t).x_test, get_task(t).y_test, device=device).accuracy
            for t in tasks
        }
        return {"task_accuracy": per}

    # 1. base model on a mixture of domains
    base_id = f"{plan.base_arch}-base"
    k += 1
    if _built(zoo, base_id):
        records.append(zoo.get(base_id))
    else:
        cfg = TrainConfig(epochs=plan.base_epochs, lr=1e-3, seed=0, max_steps=plan.max_steps)
        x, y, pre_what = pretrain_data(plan)
        model = create_model(plan.base_arch, seed=0, **plan.base_kwargs)
        hist = train(
            model, x, y, cfg, device=device, progress=report(base_id), should_stop=should_stop
        )
        metrics = task_metrics(model, plan.domains)
        metrics["test_accuracy"] = sum(metrics["task_accuracy"].values()) / len(plan.domains)
        metrics["history"] = hist.to_dict()
        records.append(
            zoo.add(
                model,
                arch=plan.base_arch,
                arch_kwargs=plan.base_kwargs,
                task="+".join(plan.domains),
                role="base",
                note=f"pre-trained on {pre_what}",
                name=base_id,
                seed=0,
                train_config=cfg.to_dict(),
                metrics=metrics,
                replace=True,
            )
        )
        if progress:
            progress(
                {
                    "model": k,
                    "models": n_total,
                    "id": base_id,
                    "test_accuracy": metrics["test_accuracy"],
                    "message": f"model {k}/{n_total} {base_id} done",
                }
            )
    # 2. one fine-tune per domain, from the base
    for i, task in enumerate(plan.domains):
        k += 1
        ft_id = f"{plan.base_arch}-ft-{task}"
        if _built(zoo, ft_id):
            records.append(zoo.get(ft_id))
            continue
        ds = get_task(task)
        cfg = TrainConfig(
            epochs=plan.finetune_epochs, lr=plan.finetune_lr, seed=100 + i, max_steps=plan.max_steps
        )
        model = zoo.load_model(base_id)
        hist = train(
            model,
            ds.x_train,
            ds.y_train,
            cfg,
            eval_data=(ds.x_test, ds.y_test),
            device=device,
            progress=report(ft_id),
            should_stop=should_stop,
        )
        metrics = task_metrics(model, plan.domains)
        metrics["test_accuracy"] = metrics["task_accuracy"][task]
        metrics["history"] = hist.to_dict()
        records.append(
            zoo.add(
                model,
                arch=plan.base_arch,
                arch_kwargs=plan.base_kwargs,
                task=task,
                role="finetune",
                name=ft_id,
                seed=cfg.seed,
                parent_id=base_id,
                base_id=base_id,
                train_config=cfg.to_dict(),
                metrics=metrics,
                replace=True,
            )
        )
        if progress:
            progress(
                {
                    "model": k,
                    "models": n_total,
                    "id": ft_id,
                    "test_accuracy": metrics["test_accuracy"],
                    "message": f"model {k}/{n_total} {ft_id} done",
                }
            )
    # 3. independently initialised models per architecture
    ds = get_task(plan.independent_task)
    for arch, kwargs, epochs, lr in plan.independent:
        for seed in plan.independent_seeds:
            k += 1
            mid = f"{arch}-{plan.independent_task}-s{seed}"
            if _built(zoo, mid):
                records.append(zoo.get(mid))
                continue
            cfg = TrainConfig(epochs=epochs, lr=lr, seed=seed, max_steps=plan.max_steps)
            model = create_model(arch, seed=seed, **kwargs)
            hist = train(
                model,
                ds.x_train,
                ds.y_train,
                cfg,
                eval_data=(ds.x_test, ds.y_test),
                device=device,
                progress=report(mid),
                should_stop=should_stop,
            )
            metrics = {"test_accuracy": hist.test_accuracy[-1], "history": hist.to_dict()}
            records.append(
                zoo.add(
                    model,
                    arch=arch,
                    arch_kwargs=kwargs,
                    task=plan.independent_task,
                    role="independent",
                    name=mid,
                    seed=seed,
                    train_config=cfg.to_dict(),
                    metrics=metrics,
                    replace=True,
                )
            )
            if progress:
                progress(
                    {
                        "model": k,
                        "models": n_total,
                        "id": mid,
                        "test_accuracy": metrics["test_accuracy"],
                        "message": f"model {k}/{n_total} {mid} done",
                    }
                )
    return records


def _built(zoo: Zoo, model_id: str) -> bool:
    """Listed with its checkpoint file (a row whose file was deleted is built again)."""
    return model_id in {r.id for r in zoo.list()}


def _default_specs(plan: ZooPlan) -> dict[str, tuple[str, dict[str, Any], str]]:
    """Default id -> (arch, arch_kwargs, role) the plan builds under that id."""
    specs = {f"{plan.base_arch}-base": (plan.base_arch, dict(plan.base_kwargs), "base")}
    for t in plan.domains:
        specs[f"{plan.base_arch}-ft-{t}"] = (plan.base_arch, dict(plan.base_kwargs), "finetune")
    for arch, kwargs, _, _ in plan.independent:
        for s in plan.independent_seeds:
            specs[f"{arch}-{plan.independent_task}-s{s}"] = (arch, dict(kwargs), "independent")
    return specs


def check_default_ids(zoo: Zoo, plan: ZooPlan = DEFAULT_PLAN) -> None:
    """Refuse to build when a model that is not the plan's holds one of its ids.

    A model imported or trained under a default id (another architecture, width or role)
    would otherwise be fine-tuned from, or kept as, a default model.

    Raises:
        ValueError: naming each such id, what it holds, what the plan needs, and the way out.
    """
    problems = []
    for mid, (arch, kwargs, role) in _default_specs(plan).items():
        if mid not in zoo:
            continue
        rec = zoo.get(mid)
        if (rec.arch, rec.arch_kwargs, rec.role) != (arch, kwargs, role):
            problems.append(
                f"{mid!r} is a {rec.role} {rec.arch} {rec.arch_kwargs}, the default zoo needs a "
                f"{role} {arch} {kwargs}"
            )
    if problems:
        raise ValueError(
            "the default zoo cannot be built: models that are not the default ones hold its "
            f"ids: {'; '.join(problems)}. Delete or re-import them under another name "
            "(Model Zoo page), or use another workspace"
        )


def default_zoo_ids(plan: ZooPlan = DEFAULT_PLAN) -> list[str]:
    """Ids of the default zoo's models, in build order."""
    ids = [f"{plan.base_arch}-base"] + [f"{plan.base_arch}-ft-{t}" for t in plan.domains]
    ids += [
        f"{a}-{plan.independent_task}-s{s}"
        for a, *_ in plan.independent
        for s in plan.independent_seeds
    ]
    return ids


def train_custom(
    zoo: Zoo,
    *,
    arch: str,
    task: str,
    epochs: int = 5,
    width: int | None = None,
    seed: int = 0,
    lr: float | None = None,
    name: str | None = None,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ModelRecord:
    """Train one model on ``task`` and store it (role "custom")."""
    from .data import get_task
    from .models import ARCHITECTURES
    from .train import TrainConfig, train

    ARCHITECTURES[arch]  # raises a clear error for an unknown architecture
    ds = get_task(task)
    kwargs: dict[str, Any] = {}
    if width is not None:
        kwargs["width"] = width
    lr = lr if lr is not None else (1e-3 if arch == "mlp" else 1e-2)
    cfg = TrainConfig(epochs=epochs, lr=lr, seed=seed)
    model = create_model(arch, seed=seed, **kwargs)
    hist = train(
        model,
        ds.x_train,
        ds.y_train,
        cfg,
        eval_data=(ds.x_test, ds.y_test),
        device=device,
        progress=progress,
        should_stop=should_stop,
    )
    metrics = {"test_accuracy": hist.test_accuracy[-1], "history": hist.to_dict()}
    return zoo.add(
        model,
        arch=arch,
        arch_kwargs=kwargs,
        task=task,
        role="custom",
        name=name or f"{arch}-{task}-s{seed}",
        seed=seed,
        train_config=cfg.to_dict(),
        metrics=metrics,
    )


def import_checkpoint(
    zoo: Zoo,
    data: bytes,
    filename: str,
    *,
    arch: str,
    arch_kwargs: Mapping[str, Any],
    task: str,
    name: str | None = None,
) -> ModelRecord:
    """Import the bytes of a checkpoint file (an upload) as a model of ``arch``.

    Everything is checked before anything is stored, and every message names ``filename``
    (the user's file, never a temporary one): the name may not be a default zoo id; the file's
    tensors may take at most three times what ``arch`` needs at float64 (plus 1 MB), checked
    from the file's metadata before inflating anything; then keys, shapes, dense tensors,
    finiteness and dtypes (floating types are converted to the architecture's; integer, bool
    and complex weights are refused) as in :meth:`Zoo.add`.

    Raises:
        CheckpointError: the file is not a checkpoint that fits ``arch``.
        ValueError: a reserved name, or a bad argument.
    """
    from .io import CheckpointError, check_against, check_dense, load_checkpoint_bytes

    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a Zoo, got {type(zoo).__name__}")
    if not isinstance(filename, str) or not filename:
        raise ValueError(f"filename must be a non-empty str, got {filename!r}")
    zoo._check_writable()
    model_id = slugify(name or Path(filename).stem)
    if model_id in default_zoo_ids():
        raise ValueError(
            f"the name {model_id!r} is reserved for the default zoo (the default build would "
            "take this model for its own); choose another name"
        )
    probe = create_model(arch, seed=None, **dict(arch_kwargs))
    need = sum(v.numel() * 8 for v in probe.state_dict().values())
    sd = load_checkpoint_bytes(data, filename, max_bytes=3 * need + 2**20)
    try:
        check_dense(sd)
        report = check_against(probe, sd)
        if not report.ok:
            raise CheckpointError(f"it does not fit {arch} {dict(arch_kwargs)}: {report.message()}")
        return zoo.add(
            sd,
            arch=arch,
            arch_kwargs=arch_kwargs,
            task=task,
            role="imported",
            name=model_id,
            recipe={"source_file": filename},
        )
    except CheckpointError as err:
        raise CheckpointError(f"{filename}: {err}") from None
