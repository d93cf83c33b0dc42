"""The zoo's store: workspace paths, the SQLite index, checkpoint hashes, atomic load and save.

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
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..io import conform_dtypes, load_into
from ..models import Classifier, create_model
from ..params import StateDict, check_state_dict

if TYPE_CHECKING:
    from .recovery import RepairReport

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
        from .recovery import repair

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
